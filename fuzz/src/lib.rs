//! Shared pieces of Tacit's fuzz targets (`fuzz_targets/`): the seed inputs, and an allocation
//! meter that lets a target check a decoder's memory bound.
#![forbid(unsafe_code)]

pub mod frames;
pub mod memory;
pub mod seeds;
