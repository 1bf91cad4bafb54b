//! DICOM ingestion: metadata, display options, frames, images for the model, and bad input (truncated,
//! corrupt, non-DICOM, no pixel data, unsupported transfer syntax). The pixel values themselves are
//! checked against pydicom in tests/dicom_peer.rs. The files are pydicom's and pydicom-data's test
//! files, which scripts/setup.sh installs.
mod common;

use std::path::PathBuf;

use diffmine::dicom::{image_from_bytes, open_image, DicomFile, DicomOptions, Photometric, VoiFunction, Window};
use diffmine::Error;

/// A test file from pydicom's wheel or from pydicom-data, by name.
fn test_file(name: &str) -> PathBuf {
    let venv = std::env::var_os("DIFFMINE_VENV").map(PathBuf::from).unwrap_or_else(|| common::repo_root().join(".deps/venv"));
    let lib = venv.join("lib");
    let python = std::fs::read_dir(&lib)
        .expect("venv lib")
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("python3"))
        .expect("python3.x");
    let site = python.join("site-packages");
    [site.join("pydicom/data/test_files").join(name), site.join("data_store/data").join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is in neither pydicom nor pydicom-data (run scripts/setup.sh)"))
}

fn open(name: &str) -> DicomFile {
    DicomFile::open(&test_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn metadata_of_a_ct_and_a_chest_radiograph() {
    let ct = open("CT_small.dcm").metadata().unwrap();
    assert_eq!(ct.patient_id.as_deref(), Some("1CT1"));
    assert_eq!(ct.study_instance_uid.as_deref(), Some("1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"));
    assert_eq!(ct.series_instance_uid.as_deref(), Some("1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"));
    assert_eq!(ct.sop_instance_uid.as_deref(), Some("1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"));
    assert_eq!(ct.modality.as_deref(), Some("CT"));
    assert_eq!(ct.view_position, None);
    assert_eq!(ct.pixel_spacing, Some([0.661468, 0.661468]));
    assert_eq!(ct.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    assert_eq!(ct.frames, 1);

    let cr = open("RG1_UNCR.dcm").metadata().unwrap();
    assert_eq!(cr.modality.as_deref(), Some("CR"));
    assert_eq!(cr.view_position.as_deref(), Some("PA"));
    assert_eq!(cr.patient_name.as_deref(), Some("CompressedSamples^RG1"));
}

#[test]
fn monochrome1_is_inverted_so_the_smallest_value_is_white() {
    let file = open("RG1_UNCR.dcm");
    let frame = file.modality_frame(0).unwrap();
    assert_eq!(frame.photometric, Photometric::Monochrome1);
    let options = DicomOptions { window: Window::MinMax, ..Default::default() };
    let image = file.image(&options).unwrap();
    let darkest = (0..frame.values.len()).min_by(|&a, &b| frame.values[a].total_cmp(&frame.values[b])).unwrap();
    let brightest = (0..frame.values.len()).max_by(|&a, &b| frame.values[a].total_cmp(&frame.values[b])).unwrap();
    assert_eq!(image.pixels[darkest], 1.0);
    assert_eq!(image.pixels[brightest], 0.0);
}

#[test]
fn the_file_window_applies_by_default_and_the_callers_on_request() {
    // RG1 carries window 15000/30000; the caller's window here shows only its brightest values.
    let file = open("RG1_UNCR.dcm");
    let default = file.image(&DicomOptions::default()).unwrap();
    let explicit = file
        .image(&DicomOptions { window: Window::Explicit { center: 15000.0, width: 30000.0, function: VoiFunction::Linear }, ..Default::default() })
        .unwrap();
    assert_eq!(default.pixels, explicit.pixels, "the file's window is 15000/30000");
    let narrow =
        file.image(&DicomOptions { window: Window::Explicit { center: 1000.0, width: 10.0, function: VoiFunction::Linear }, ..Default::default() }).unwrap();
    assert!(narrow.pixels.iter().filter(|&&v| v > 0.0 && v < 1.0).count() < default.pixels.len() / 10);
    let bad = file.image(&DicomOptions { window: Window::Explicit { center: 0.0, width: 0.0, function: VoiFunction::Linear }, ..Default::default() });
    assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
}

#[test]
fn frames_of_a_multi_frame_image_differ_and_out_of_range_is_an_error() {
    let file = open("emri_small.dcm");
    assert_eq!(file.frame_count().unwrap(), 10);
    let first = file.modality_frame(0).unwrap();
    let last = file.modality_frame(9).unwrap();
    assert_ne!(first.values, last.values);
    let beyond = file.modality_frame(10);
    assert!(matches!(&beyond, Err(Error::InvalidArgument(m)) if m.contains("frame 10")), "{beyond:?}");
}

#[test]
fn a_buffer_decodes_like_the_file_and_feeds_the_model() {
    let path = test_file("SC_rgb_jpeg_dcmtk.dcm");
    let bytes = std::fs::read(&path).unwrap();
    let from_file = open_image(&path, &DicomOptions::default()).unwrap();
    let from_buffer = image_from_bytes(&bytes, "in-memory", &DicomOptions::default()).unwrap();
    assert_eq!(from_file.pixels, from_buffer.pixels);
    assert_eq!((from_file.width, from_file.height, from_file.channels), (100, 100, 3));
    let input = from_file.view().to_model_input().unwrap();
    assert_eq!(input.size(), [1, 3, 100, 100]);
    let (lo, hi) = (input.min().double_value(&[]), input.max().double_value(&[]));
    assert!((-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi) && hi > lo);

    // A grey DICOM image is one channel, which the model input replicates to three.
    let grey = open_image(&test_file("CT_small.dcm"), &DicomOptions::default()).unwrap();
    assert_eq!(grey.channels, 1);
    assert_eq!(grey.view().to_model_input_resized(Some(64)).unwrap().size(), [1, 3, 64, 64]);
}

#[test]
fn png_and_jpeg_load_as_the_same_image_type() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = image::RgbImage::from_fn(8, 4, |x, y| image::Rgb([x as u8 * 30, y as u8 * 60, 255]));
    let png = dir.path().join("a.png");
    rgb.save(&png).unwrap();
    let image = open_image(&png, &DicomOptions::default()).unwrap();
    assert_eq!((image.width, image.height, image.channels), (8, 4, 3));
    assert_eq!(image.pixels[3 * (8 + 1)..3 * (8 + 1) + 3], [30.0 / 255.0, 60.0 / 255.0, 1.0]);
    assert!(image.metadata.is_none());

    let grey = image::GrayImage::from_fn(4, 4, |x, _| image::Luma([x as u8 * 80]));
    let jpeg = dir.path().join("b.jpg");
    grey.save(&jpeg).unwrap();
    assert_eq!(open_image(&jpeg, &DicomOptions::default()).unwrap().channels, 1);
}

/// A JPEG-LS file relabelled with a transfer syntax of the same length that no codec here decodes
/// (JPEG 2000 Part 2 multi-component).
fn jpeg2000_part2_bytes() -> Vec<u8> {
    let mut bytes = std::fs::read(test_file("MR_small_jpeg_ls_lossless.dcm")).unwrap();
    let at = bytes.windows(22).position(|w| w == b"1.2.840.10008.1.2.4.80").expect("the transfer syntax UID");
    bytes[at..at + 22].copy_from_slice(b"1.2.840.10008.1.2.4.92");
    bytes
}

/// JPEG-LS decodes (lossless 16-bit and near-lossless colour): checked pixel for pixel against
/// pydicom in tests/dicom_peer.rs; here its values' range and the file's own description.
#[test]
fn jpeg_ls_frames_decode() {
    let frame = open("MR_small_jpeg_ls_lossless.dcm").modality_frame(0).unwrap();
    assert_eq!((frame.width, frame.height, frame.channels), (64, 64, 1));
    let plain = open("MR_small.dcm").modality_frame(0).unwrap();
    assert_eq!(frame.values, plain.values, "the lossless JPEG-LS copy of MR_small holds its pixels");
    let colour = open("SC_rgb_jls_lossy_sample.dcm").image(&DicomOptions::default()).unwrap();
    assert_eq!(colour.channels, 3);
}

#[test]
fn bad_files_give_errors_that_name_the_file() {
    let garbage = image_from_bytes(b"this is not an image", "garbage.bin", &DicomOptions::default());
    assert!(matches!(&garbage, Err(Error::InvalidData(m)) if m.contains("garbage.bin")), "{garbage:?}");

    let missing = DicomFile::open(std::path::Path::new("/nonexistent/x.dcm"));
    assert!(matches!(missing, Err(Error::Io { .. })));

    // A data set without an image still gives its metadata.
    let plan = open("rtplan.dcm");
    assert!(plan.metadata().is_ok());
    let pixels = plan.modality_frame(0);
    assert!(matches!(&pixels, Err(Error::InvalidData(m)) if m.contains("rtplan.dcm") && m.contains("no Pixel Data")), "{pixels:?}");

    let part2 = DicomFile::from_bytes(&jpeg2000_part2_bytes(), "part2.dcm").unwrap().modality_frame(0);
    assert!(matches!(&part2, Err(Error::Unsupported(m)) if m.contains("part2.dcm: unsupported transfer syntax 1.2.840.10008.1.2.4.92")), "{part2:?}");

    let twelve_bit = open("JPGExtended.dcm").modality_frame(0);
    assert!(matches!(&twelve_bit, Err(Error::Unsupported(m)) if m.contains("12-bit")), "{twelve_bit:?}");

    let truncated = DicomFile::open(&test_file("MR_truncated.dcm"));
    assert!(matches!(&truncated, Err(Error::InvalidData(m)) if m.contains("MR_truncated.dcm")), "{truncated:?}");
}

/// A corrupt length must not make the parser allocate it: dicom-parser reserves and zero-fills a
/// declared length before reading, so a 2 KB file could take 4 GB (found by the fuzz target).
#[test]
fn an_impossible_element_length_is_refused_before_parsing() {
    let mut bytes = std::fs::read(test_file("CT_small.dcm")).unwrap();
    let header = bytes.windows(8).position(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]).expect("Pixel Data header");
    bytes[header + 8..header + 12].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    let started = std::time::Instant::now();
    let result = DicomFile::from_bytes(&bytes, "huge.dcm");
    assert!(matches!(&result, Err(Error::InvalidData(m)) if m.contains("huge.dcm") && m.contains("(7FE0,0010) declares 4294967040 bytes")), "{result:?}");
    assert!(started.elapsed().as_secs_f64() < 0.5, "refused without allocating");

    // The same behind a meta group holding a foreign tag, which dicom-object reads past by the group
    // length (a fuzz finding: the check must follow the group length too).
    let meta_tag = bytes[132..].windows(6).position(|w| w == [0x02, 0x00, 0x02, 0x00, b'U', b'I']).expect("(0002,0002)") + 132;
    bytes[meta_tag + 1] = 0x0F;
    let result = DicomFile::from_bytes(&bytes, "huge.dcm");
    assert!(matches!(&result, Err(Error::InvalidData(m)) if m.contains("declares 4294967040 bytes")), "{result:?}");

    let sequence = DicomFile::from_bytes(&std::fs::read(test_file("UN_sequence.dcm")).unwrap(), "un.dcm");
    assert!(matches!(&sequence, Err(Error::Unsupported(m)) if m.contains("undefined-length UN")), "{sequence:?}");
}

/// The inputs on which the fuzz target once ran out of memory (fuzz/regressions/dicom_image: each
/// declared an impossible length the parser would have allocated) are refused at once.
#[test]
fn fuzz_findings_are_refused_quickly() {
    let dir = common::repo_root().join("fuzz/regressions/dicom_image");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let started = std::time::Instant::now();
        let result = DicomFile::open(&path);
        assert!(matches!(&result, Err(Error::InvalidData(_) | Error::Unsupported(_))), "{}: {result:?}", path.display());
        assert!(started.elapsed().as_secs_f64() < 0.5, "{} took {:?}", path.display(), started.elapsed());
        count += 1;
    }
    assert!(count >= 2);
}

/// Every prefix and many single-byte corruptions of files in each codec must give a result or an
/// error, never a panic (a small, deterministic cousin of the fuzz target).
#[test]
fn truncated_and_corrupted_files_never_panic() {
    for name in [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_jp2klossless.dcm",
        "JPEG-LL.dcm",
        "SC_rgb_rle_32bit_2frame.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jls_lossy_line.dcm",
    ] {
        let bytes = std::fs::read(test_file(name)).unwrap();
        let decode = |data: &[u8]| {
            if let Ok(file) = DicomFile::from_bytes(data, name) {
                let _ = file.metadata();
                let _ = file.image(&DicomOptions::default());
            }
        };
        for cut in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
            decode(&bytes[..cut]);
        }
        for (i, position) in (bytes.len() / 2..bytes.len()).step_by(bytes.len() / 61 + 1).enumerate() {
            let mut corrupt = bytes.clone();
            corrupt[position] ^= 0x5A ^ i as u8;
            decode(&corrupt);
        }
    }
}

/// The synthetic set's DICOM copies hold the PNGs' pixels exactly, with the Data_Entry's patient
/// attributes, and the same options give the same UIDs.
#[test]
fn synthetic_dicom_copies_hold_the_png_pixels_and_the_patient_record() {
    use diffmine::synthetic::{write_dataset, write_dicom_copies, SyntheticOptions};
    let dir = tempfile::tempdir().unwrap();
    let options = SyntheticOptions { images_per_label: 2, size: 32, labels: vec!["Nodule".into(), "Mass".into()], ..Default::default() };
    let summary = write_dataset(&options, &dir.path().join("png")).unwrap();
    assert_eq!(write_dicom_copies(&options, &dir.path().join("dcm")).unwrap(), 4);
    for entry in &summary.entries {
        let stem = entry.name.trim_end_matches(".png");
        let file = DicomFile::open(&dir.path().join("dcm").join(&entry.label).join(format!("{stem}.dcm"))).unwrap();
        let png = image::open(dir.path().join("png").join(&entry.path)).unwrap().to_luma8().into_raw();
        let frame = file.modality_frame(0).unwrap();
        assert_eq!(frame.values, png.iter().map(|&v| v as f64).collect::<Vec<_>>(), "{}", entry.name);
        let metadata = file.metadata().unwrap();
        assert_eq!(metadata.patient_id.as_deref(), Some(stem.split('_').next().unwrap()));
        assert_eq!(metadata.modality.as_deref(), Some("DX"));
        assert!(metadata.study_instance_uid.unwrap().starts_with("2.25."));
    }
    write_dicom_copies(&options, &dir.path().join("again")).unwrap();
    let uid = |root: &str| DicomFile::open(&dir.path().join(root).join("Mass/00000003_000.dcm")).unwrap().metadata().unwrap().sop_instance_uid;
    assert_eq!(uid("dcm"), uid("again"));
}

/// `name` with `edit` applied to its data set, as the bytes of a Part 10 file.
fn edited(name: &str, edit: impl FnOnce(&mut dicom_object::DefaultDicomObject)) -> Vec<u8> {
    let mut object = dicom_object::open_file(test_file(name)).unwrap();
    edit(&mut object);
    let mut bytes = Vec::new();
    object.write_all(&mut bytes).unwrap();
    bytes
}

/// The error of reading frame 0 of `name` with one attribute replaced.
fn error_with(name: &str, tag: dicom_core::Tag, vr: dicom_core::VR, value: dicom_core::PrimitiveValue) -> String {
    let bytes = edited(name, |object| {
        object.put(dicom_core::DataElement::new(tag, vr, value));
    });
    match DicomFile::from_bytes(&bytes, "edited.dcm").and_then(|f| f.image(&DicomOptions::default())) {
        Ok(image) => panic!("{name} with {tag} edited opened ({}×{})", image.width, image.height),
        Err(Error::InvalidData(message)) => message,
        Err(other) => panic!("{name} with {tag} edited: {other:?}, not invalid data"),
    }
}

/// Attribute values the standard does not allow, or that the pixel data cannot hold, are refused
/// naming the attribute, rather than read as zeros or as whatever the bits happen to say.
#[test]
fn attributes_out_of_the_standards_range_are_invalid_data_naming_them() {
    use dicom_core::{PrimitiveValue, VR};
    use dicom_dictionary_std::tags;

    // The unedited file reads (the edits below are what breaks it).
    open("CT_small.dcm").image(&DicomOptions::default()).unwrap();
    let slope = error_with("CT_small.dcm", tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("NaN"));
    assert!(slope.contains("Rescale Slope") && slope.contains("edited.dcm"), "{slope}");
    let window = error_with("CT_small.dcm", tags::WINDOW_WIDTH, VR::DS, PrimitiveValue::from("inf"));
    assert!(window.contains("Window Width"), "{window}");
    let representation = error_with("CT_small.dcm", tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(7u16));
    assert!(representation.contains("Pixel Representation") && representation.contains('7'), "{representation}");
    let high_bit = error_with("CT_small.dcm", tags::HIGH_BIT, VR::US, PrimitiveValue::from(40u16));
    assert!(high_bit.contains("High Bit") && high_bit.contains("40"), "{high_bit}");
    // 2^31 - 1 frames of 128 × 128 16-bit samples, where Pixel Data holds one.
    let frames = error_with("CT_small.dcm", tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from("2147483647"));
    assert!(frames.contains("Number of Frames") && frames.contains("32768"), "{frames}");
    // Encapsulated: more frames than fragments.
    let jpeg_frames = error_with("SC_rgb_jpeg_dcmtk.dcm", tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from("2147483647"));
    assert!(jpeg_frames.contains("Number of Frames") && jpeg_frames.contains("fragments"), "{jpeg_frames}");
}

mod c_api {
    use std::ffi::{CStr, CString};
    use std::ptr::{null, null_mut};

    use diffmine::ffi::*;

    fn text(ptr: *const std::ffi::c_char) -> Option<String> {
        // SAFETY: the library hands out NUL-terminated strings that live as long as the image.
        (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_string())
    }

    fn last_error() -> String {
        // SAFETY: dm_last_error always returns a valid C string.
        unsafe { CStr::from_ptr(dm_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn open_view_info_and_free() {
        let path = CString::new(super::test_file("RG1_UNCR.dcm").to_str().unwrap()).unwrap();
        let mut image = null_mut();
        // SAFETY: valid arguments throughout; the view is read while the image lives.
        unsafe {
            assert_eq!(dm_image_open(path.as_ptr(), null(), &mut image), dm_status::DM_OK, "{}", last_error());
            let mut view: dm_image_view = std::mem::zeroed();
            assert_eq!(dm_image_get_view(image, &mut view), dm_status::DM_OK);
            assert_eq!((view.width, view.height, view.channels, view.pixel_type), (1841, 1955, 1, DM_PIXEL_F32));
            assert_eq!(view.data_len, 1841 * 1955 * 4);
            let pixels = std::slice::from_raw_parts(view.data as *const f32, 1841 * 1955);
            assert!(pixels.iter().all(|v| (0.0..=1.0).contains(v)));

            let mut info: dm_image_info = std::mem::zeroed();
            info.struct_size = std::mem::size_of::<dm_image_info>();
            assert_eq!(dm_image_get_info(image, &mut info), dm_status::DM_OK);
            assert_eq!((info.is_dicom, info.frames, info.channels), (1, 1, 1));
            assert_eq!(text(info.modality).as_deref(), Some("CR"));
            assert_eq!(text(info.view_position).as_deref(), Some("PA"));
            assert_eq!(text(info.study_instance_uid).as_deref(), Some("1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"));
            assert_eq!(text(info.transfer_syntax_uid).as_deref(), Some("1.2.840.10008.1.2.1"));

            assert_eq!(dm_image_free(image), dm_status::DM_OK);
            assert_eq!(dm_image_get_view(image, &mut view), dm_status::DM_ERR_INVALID_HANDLE, "a freed image is reported");
            assert_eq!(dm_image_free(null_mut()), dm_status::DM_OK);
        }
    }

    #[test]
    fn buffers_options_and_errors() {
        let bytes = std::fs::read(super::test_file("emri_small.dcm")).unwrap();
        // SAFETY: valid arguments throughout.
        unsafe {
            let mut options: dm_image_options = std::mem::zeroed();
            assert_eq!(dm_image_options_default(&mut options), dm_status::DM_OK);
            options.frame = 9;
            options.window = DM_WINDOW_MIN_MAX;
            let mut image = null_mut();
            assert_eq!(dm_image_open_buffer(bytes.as_ptr(), bytes.len(), &options, &mut image), dm_status::DM_OK, "{}", last_error());
            let mut info: dm_image_info = std::mem::zeroed();
            info.struct_size = std::mem::size_of::<dm_image_info>();
            assert_eq!(dm_image_get_info(image, &mut info), dm_status::DM_OK);
            assert_eq!((info.width, info.height, info.frames), (64, 64, 10));
            dm_image_free(image);

            options.frame = 10;
            let mut untouched = null_mut();
            assert_eq!(dm_image_open_buffer(bytes.as_ptr(), bytes.len(), &options, &mut untouched), dm_status::DM_ERR_INVALID_ARGUMENT);
            assert!(untouched.is_null(), "outputs are written only on success");
            assert!(last_error().contains("frame 10"), "{}", last_error());

            options.frame = 0;
            options.window = 7;
            assert_eq!(dm_image_open_buffer(bytes.as_ptr(), bytes.len(), &options, &mut untouched), dm_status::DM_ERR_INVALID_ARGUMENT);

            let garbage = b"not an image at all";
            assert_eq!(dm_image_open_buffer(garbage.as_ptr(), garbage.len(), null(), &mut untouched), dm_status::DM_ERR_INVALID_DATA);
            assert_eq!(dm_image_open_buffer(bytes.as_ptr(), bytes.len() / 3, null(), &mut untouched), dm_status::DM_ERR_INVALID_DATA);
            let part2 = super::jpeg2000_part2_bytes();
            assert_eq!(dm_image_open_buffer(part2.as_ptr(), part2.len(), null(), &mut untouched), dm_status::DM_ERR_UNSUPPORTED);
            assert!(last_error().contains("1.2.840.10008.1.2.4.92"), "{}", last_error());
            let missing = CString::new("/nonexistent.dcm").unwrap();
            assert_eq!(dm_image_open(missing.as_ptr(), null(), &mut untouched), dm_status::DM_ERR_IO);
            assert_eq!(dm_image_open(null(), null(), &mut untouched), dm_status::DM_ERR_NULL_ARGUMENT);
            assert_eq!(dm_image_open(missing.as_ptr(), null(), null_mut()), dm_status::DM_ERR_NULL_ARGUMENT);
            assert!(untouched.is_null());
        }
    }

    #[test]
    fn maps_written_through_the_c_api_share_a_series() {
        let source = CString::new(super::test_file("CT_small.dcm").to_str().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (overlay, raw) =
            (CString::new(dir.path().join("o.dcm").to_str().unwrap()).unwrap(), CString::new(dir.path().join("r.dcm").to_str().unwrap()).unwrap());
        let map: Vec<f32> = (0..64 * 64).map(|i| i as f32 * 1e-4).collect();
        let mut series = [0 as std::ffi::c_char; DM_UID_BUFFER_SIZE];
        let mut sop = [0 as std::ffi::c_char; DM_UID_BUFFER_SIZE];
        // SAFETY: valid arguments throughout.
        unsafe {
            assert_eq!(dm_dicom_new_uid(series.as_mut_ptr(), series.len()), dm_status::DM_OK);
            let write = |kind, path: &CString, sop: *mut std::ffi::c_char, sop_len| {
                dm_map_write_dicom(source.as_ptr(), 0, map.as_ptr(), map.len(), 64, 64, kind, series.as_ptr(), path.as_ptr(), sop, sop_len)
            };
            assert_eq!(write(DM_MAP_OVERLAY, &overlay, sop.as_mut_ptr(), sop.len()), dm_status::DM_OK, "{}", last_error());
            assert_eq!(write(DM_MAP_RAW, &raw, null_mut(), 0), dm_status::DM_OK, "{}", last_error());
            let series = text(series.as_ptr());
            for path in [dir.path().join("o.dcm"), dir.path().join("r.dcm")] {
                let written = diffmine::dicom::DicomFile::open(&path).unwrap().metadata().unwrap();
                assert_eq!(written.series_instance_uid, series);
                assert_eq!(written.study_instance_uid.as_deref(), Some("1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"));
            }
            let overlay_sop = diffmine::dicom::DicomFile::open(&dir.path().join("o.dcm")).unwrap().metadata().unwrap().sop_instance_uid;
            assert_eq!(text(sop.as_ptr()), overlay_sop);

            assert_eq!(write(7, &raw, null_mut(), 0), dm_status::DM_ERR_INVALID_ARGUMENT);
            assert_eq!(write(DM_MAP_RAW, &raw, sop.as_mut_ptr(), 10), dm_status::DM_ERR_BUFFER_TOO_SMALL);
            let mut short = [0 as std::ffi::c_char; 8];
            assert_eq!(dm_dicom_new_uid(short.as_mut_ptr(), short.len()), dm_status::DM_ERR_BUFFER_TOO_SMALL);
        }
    }

    /// A series UID handed in is checked as DICOM defines UIDs, before anything is written.
    #[test]
    fn a_series_uid_that_is_not_a_dicom_uid_is_refused() {
        let source = CString::new(super::test_file("CT_small.dcm").to_str().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = CString::new(dir.path().join("m.dcm").to_str().unwrap()).unwrap();
        let map = [0.5f32; 16];
        let too_long = format!("1.2.{}", "3".repeat(67));
        for (uid, problem) in [("abc", "\"abc\""), (too_long.as_str(), "71 characters"), ("1.02.3", "\"02\""), ("1..3", "\"\""), ("1.2.", "\"\"")] {
            let series = CString::new(uid).unwrap();
            // SAFETY: valid arguments.
            let status = unsafe { dm_map_write_dicom(source.as_ptr(), 0, map.as_ptr(), 16, 4, 4, DM_MAP_RAW, series.as_ptr(), out.as_ptr(), null_mut(), 0) };
            assert_eq!(status, dm_status::DM_ERR_INVALID_ARGUMENT, "{uid}");
            assert!(last_error().contains("Series Instance UID") && last_error().contains(problem), "{uid}: {}", last_error());
            assert!(!dir.path().join("m.dcm").exists(), "nothing written for {uid}");
        }
        let valid = CString::new("1.2.0.840.10008").unwrap();
        // SAFETY: valid arguments.
        let status = unsafe { dm_map_write_dicom(source.as_ptr(), 0, map.as_ptr(), 16, 4, 4, DM_MAP_RAW, valid.as_ptr(), out.as_ptr(), null_mut(), 0) };
        assert_eq!(status, dm_status::DM_OK, "{}", last_error());
    }

    /// The UID buffer is DM_UID_BUFFER_SIZE bytes, as documented: a smaller one is refused whatever
    /// the UID written this time, and the message gives the documented size.
    #[test]
    fn uid_buffers_are_checked_against_the_documented_size() {
        let mut buffer = [0 as std::ffi::c_char; DM_UID_BUFFER_SIZE];
        // SAFETY: `buffer` has the lengths passed (or more).
        unsafe {
            for len in [0, 45, DM_UID_BUFFER_SIZE - 1] {
                assert_eq!(dm_dicom_new_uid(buffer.as_mut_ptr(), len), dm_status::DM_ERR_BUFFER_TOO_SMALL, "{len}");
                assert!(last_error().contains(&format!("needs {DM_UID_BUFFER_SIZE}")), "{len}: {}", last_error());
            }
            assert_eq!(dm_dicom_new_uid(buffer.as_mut_ptr(), DM_UID_BUFFER_SIZE), dm_status::DM_OK);
            assert!(text(buffer.as_ptr()).unwrap().starts_with("2.25."));
        }
    }

    /// A map written onto a full disk, or into a read-only file system, fails with the operating
    /// system's reason; a map already there stays whole and readable, and no temporary is left.
    #[test]
    fn a_map_written_onto_a_full_or_read_only_disk_leaves_the_old_file_whole() {
        let Some(disk) = super::common::SmallDisk::mount(64) else { return };
        let source = CString::new(super::test_file("CT_small.dcm").to_str().unwrap()).unwrap();
        let map: Vec<f32> = (0..64 * 64).map(|i| i as f32 * 1e-3).collect();
        // The raw map is 2 bytes a pixel, the overlay 3: replacing one by the other needs more room.
        let write = |path: &std::path::Path, kind| {
            let out = CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: valid arguments.
            unsafe { dm_map_write_dicom(source.as_ptr(), 0, map.as_ptr(), map.len(), 64, 64, kind, null(), out.as_ptr(), null_mut(), 0) }
        };
        let (old, new) = (disk.path().join("old.dcm"), disk.path().join("new.dcm"));
        assert_eq!(write(&old, DM_MAP_RAW), dm_status::DM_OK, "{}", last_error());
        let before = std::fs::read(&old).unwrap();
        disk.fill();
        for path in [&old, &new] {
            assert_eq!(write(path, DM_MAP_OVERLAY), dm_status::DM_ERR_IO, "{}", path.display());
            assert!(last_error().contains("No space left on device"), "{}", last_error());
        }
        assert_eq!(disk.names(), ["filler", "old.dcm"], "no temporary, no empty new file");
        assert_eq!(std::fs::read(&old).unwrap(), before);
        diffmine::dicom::DicomFile::open(&old).unwrap().image(&diffmine::dicom::DicomOptions::default()).unwrap();

        std::fs::remove_file(disk.path().join("filler")).unwrap();
        disk.make_read_only();
        assert_eq!(write(&old, DM_MAP_RAW), dm_status::DM_ERR_IO);
        assert!(last_error().contains("Read-only file system"), "{}", last_error());
        assert_eq!(std::fs::read(&old).unwrap(), before);
    }
}

/// Maps written back as DICOM: pydicom reads them, they belong to the source's study and patient in
/// a new series, refer to the source image, and the raw map's values come back within half a step.
#[test]
fn maps_written_as_dicom_read_back_in_pydicom() {
    use diffmine::dicom::{MapKind, MapObjectOptions};

    let source = open("RG1_UNCR.dcm");
    let metadata = source.metadata().unwrap();
    let (width, height) = (48usize, 40usize);
    let map: Vec<f32> = (0..width * height).map(|i| ((i % width) as f32 - 20.0) * 1e-3 + (i / width) as f32 * 1e-5).collect();
    let dir = tempfile::tempdir().unwrap();
    let (overlay_path, raw_path) = (dir.path().join("overlay.dcm"), dir.path().join("raw.dcm"));
    let overlay = source.write_map(0, &map, [width, height], &MapObjectOptions::default(), &overlay_path).unwrap();
    let raw_options = MapObjectOptions { kind: MapKind::Raw, series_instance_uid: Some(overlay.series_instance_uid.clone()), ..Default::default() };
    let raw = source.write_map(0, &map, [width, height], &raw_options, &raw_path).unwrap();
    assert_ne!(overlay.sop_instance_uid, raw.sop_instance_uid);

    let out = dir.path().join("readback.json");
    let python = std::env::var_os("DIFFMINE_VENV").map(PathBuf::from).unwrap_or_else(|| common::repo_root().join(".deps/venv")).join("bin/python");
    let status = std::process::Command::new(python)
        .arg(common::repo_root().join("tests/reference/dicom_readback.py"))
        .arg(&out)
        .args([&overlay_path, &raw_path])
        .status()
        .unwrap();
    assert!(status.success(), "pydicom could not read the written files");
    let read: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for (file, written) in read.as_array().unwrap().iter().zip([&overlay, &raw]) {
        assert_eq!(file["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.7", "Secondary Capture");
        assert_eq!(file["sop_instance_uid"].as_str(), Some(written.sop_instance_uid.as_str()));
        assert_eq!(file["media_storage_sop_instance_uid"], file["sop_instance_uid"]);
        assert_eq!(file["series_instance_uid"].as_str(), Some(overlay.series_instance_uid.as_str()));
        assert_ne!(file["series_instance_uid"].as_str(), metadata.series_instance_uid.as_deref(), "a new series");
        assert_eq!(file["study_instance_uid"].as_str(), metadata.study_instance_uid.as_deref(), "the source's study");
        assert_eq!(file["patient_id"].as_str(), metadata.patient_id.as_deref());
        assert_eq!(file["patient_name"].as_str(), metadata.patient_name.as_deref());
        assert_eq!(file["referenced_sop_instance_uid"].as_str(), metadata.sop_instance_uid.as_deref());
        assert_eq!(file["referenced_sop_class_uid"].as_str(), metadata.sop_class_uid.as_deref());
        assert_eq!((file["rows"].as_u64(), file["columns"].as_u64()), (Some(height as u64), Some(width as u64)));
    }
    assert_eq!(read[0]["photometric"], "RGB");
    assert_eq!(read[0]["values"].as_array().unwrap().len(), 3 * width * height);
    assert_eq!(read[1]["photometric"], "MONOCHROME2");
    let (lo, hi) = map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let half_step = (hi - lo) as f64 / 65535.0 / 2.0;
    let values = read[1]["values"].as_array().unwrap();
    let worst = values.iter().zip(&map).map(|(v, &m)| (v.as_f64().unwrap() - m as f64).abs()).fold(0.0, f64::max);
    assert!(worst <= half_step * 1.001, "raw map round trip: {worst:e} > {half_step:e}");

    // libdiffmine reads its own output back too.
    let again = DicomFile::open(&raw_path).unwrap().modality_frame(0).unwrap();
    assert!(again.values.iter().zip(&map).all(|(v, &m)| (v - m as f64).abs() <= half_step * 1.001));
    let bad = source.write_map(0, &map[1..], [width, height], &raw_options, &raw_path);
    assert!(matches!(bad, Err(Error::InvalidArgument(_))));
}
