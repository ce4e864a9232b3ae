//! Compiles `proto/tacit.proto` (the one source of truth for the wire format) into Rust types.
//! `protox` is a pure-Rust protobuf compiler, so no `protoc` is needed on the build machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/tacit.proto");
    let descriptors = protox::compile(["proto/tacit.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
