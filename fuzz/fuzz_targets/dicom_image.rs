//! DICOM ingestion, file bytes → metadata and image: see `entries::dicom_image`.
#![no_main]

// Each target uses one of the shared bodies.
#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::dicom_image(data));
