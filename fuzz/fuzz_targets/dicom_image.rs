//! DICOM ingestion, file bytes → image: whatever the bytes, a result or an error, never a crash, a
//! hang or an unbounded allocation.
#![no_main]

use diffmine::dicom::{DicomFile, DicomOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = DicomFile::from_bytes(data, "fuzz input") else { return };
    let _ = file.metadata();
    // Two frames reach the frame-splitting paths without letting one input decode hundreds.
    let frames = file.frame_count().unwrap_or(0).min(2);
    for frame in 0..frames {
        let _ = file.image(&DicomOptions { frame, ..Default::default() });
    }
});
