//! Writes the seed corpora, `fuzz/corpus/<target>/<seed name>`, from `tacit_fuzz::seeds`. Other
//! files there (inputs kept from earlier findings) are left alone. `scripts/fuzz.sh` runs it
//! before fuzzing, so the committed seeds always match the code; run it by hand after changing
//! the schema and commit what changed:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example write_seed_corpus
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use tacit_fuzz::seeds;
use tacit_proto::encode;

fn main() -> std::io::Result<()> {
    let mut corpora: BTreeMap<&str, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for frame in seeds::client_frames() {
        let name = frame.body.as_ref().map_or("empty", |b| b.kind());
        corpora
            .entry("client_frame")
            .or_default()
            .push((name.to_owned(), encode(&frame)));
    }
    for frame in seeds::server_frames() {
        let name = frame.body.as_ref().map_or("empty", |b| b.kind());
        corpora
            .entry("server_frame")
            .or_default()
            .push((name.to_owned(), encode(&frame)));
    }
    for (name, payload, bytes) in seeds::end_to_end_payloads() {
        let mut input = vec![payload.selector()];
        input.extend_from_slice(&bytes);
        corpora
            .entry("end_to_end_payload")
            .or_default()
            .push((name.to_owned(), input));
    }
    for (name, cert) in seeds::certificates() {
        corpora
            .entry("device_certificate")
            .or_default()
            .push((name.to_owned(), cert.as_bytes().to_vec()));
    }
    for (name, input) in seeds::auth_inputs() {
        corpora
            .entry("auth_signature")
            .or_default()
            .push((name.to_owned(), input));
    }
    for (name, input) in tacit_fuzz::handler::inputs() {
        corpora
            .entry("server_handler")
            .or_default()
            .push((name, input));
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, files) in corpora {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes)?;
        }
        println!("{target}: {} seeds", files.len());
    }
    Ok(())
}
