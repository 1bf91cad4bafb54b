//! NIH ChestX-ray8's box list and data entry CSVs: see `entries::cxr8_csv`.
#![no_main]

// Each target uses one of the shared bodies.
#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::cxr8_csv(data));
