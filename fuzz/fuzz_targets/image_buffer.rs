//! PNG, JPEG, BMP and DICOM bytes through `dm_image_open_buffer`: see `entries::image_buffer`.
#![no_main]

// Each target uses one of the shared bodies.
#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::image_buffer(data));
