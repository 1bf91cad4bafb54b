//! A model folder's `config.json` and `scheduler_config.json`: see `entries::model_config`.
#![no_main]

// Each target uses one of the shared bodies.
#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::model_config(data));
