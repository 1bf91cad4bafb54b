//! A safetensors file's header and tensor table: see `entries::safetensors`.
#![no_main]

// Each target uses one of the shared bodies.
#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::safetensors(data));
