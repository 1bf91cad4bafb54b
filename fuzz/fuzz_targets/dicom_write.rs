//! The DICOM writer fed with fuzzed DICOM sources: see `entries::dicom_write`.
#![no_main]

// Each target uses one of the shared bodies.
#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::dicom_write(data));
