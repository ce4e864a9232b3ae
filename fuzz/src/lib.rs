//! Shared pieces of Tacit's fuzz targets (`fuzz_targets/`): the seed inputs, the input format of
//! the server's frame handler target, and an allocation meter that lets a target check a memory
//! bound.
#![forbid(unsafe_code)]

pub mod frames;
pub mod handler;
pub mod memory;
pub mod seeds;
