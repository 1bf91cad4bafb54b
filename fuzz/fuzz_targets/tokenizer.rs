//! A tokenizer folder: `tokenizer.json` or `vocab.json` + `merges.txt`, and its config files: see `entries::tokenizer`.
#![no_main]

// Each target uses one of the shared bodies.
#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::tokenizer(data));
