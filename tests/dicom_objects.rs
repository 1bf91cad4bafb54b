//! Typicality maps as the DICOM objects a viewer shows (`dm_map_write_dicom_object`): the two
//! Secondary Captures, the fractional Segmentation and the Parametric Map, each written from a
//! MONOCHROME1 12-bit CR with rescale and window, from a MONOCHROME2 DX and from a CT (whose Frame of
//! Reference and plane geometry the enhanced objects take over), then read back by
//! highdicom and pydicom (tests/reference/dicom_objects.py) against the map passed in, and checked
//! by dicom3tools' `dciodvfy` for errors. Bad input gives a clear status and leaves no file.
mod common;

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::{null, null_mut};

use common::{c_last_error, python, repo_root};
use diffmine::ffi::*;
use serde_json::Value;

/// The test's sources, written by tests/reference/dicom_objects.py.
fn sources(dir: &Path) -> [PathBuf; 3] {
    let status = Command::new(python()).arg(repo_root().join("tests/reference/dicom_objects.py")).arg("sources").arg(dir).status().unwrap();
    assert!(status.success(), "dicom_objects.py sources");
    [dir.join("cr.dcm"), dir.join("dx.dcm"), dir.join("ct.dcm")]
}

fn c_path(path: &Path) -> CString {
    CString::new(path.to_str().unwrap()).unwrap()
}

/// A smooth map with values of typicality's size and sign (negative to positive), `width` × `height`.
fn test_map(width: usize, height: usize) -> Vec<f32> {
    (0..width * height)
        .map(|i| {
            let (x, y) = ((i % width) as f32, (i / width) as f32);
            0.02 * (x * 0.37).sin() * (y * 0.23).cos() - 0.004 + 1e-4 * x
        })
        .collect()
}

/// `values` (`height` × `width`) resampled bilinearly to `new_height` × `new_width`, sample centres
/// aligned (output pixel centre x + 0.5 maps to (x + 0.5) · width / new_width, clamped to the
/// edge pixels): what PyTorch's `interpolate(mode="bilinear", align_corners=False)` computes.
fn bilinear(values: &[f64], [width, height]: [usize; 2], [new_width, new_height]: [usize; 2]) -> Vec<f64> {
    let source = |position: f64, scale: f64, size: usize| {
        let s = ((position + 0.5) * scale - 0.5).max(0.0);
        let low = (s.floor() as usize).min(size - 1);
        (low, (low + 1).min(size - 1), s - low as f64)
    };
    let mut out = Vec::with_capacity(new_width * new_height);
    for y in 0..new_height {
        let (y0, y1, fy) = source(y as f64, height as f64 / new_height as f64, height);
        for x in 0..new_width {
            let (x0, x1, fx) = source(x as f64, width as f64 / new_width as f64, width);
            let at = |yy: usize, xx: usize| values[yy * width + xx];
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

fn largest_difference(read: &Value, expected: &[f64]) -> f64 {
    let read = read.as_array().unwrap();
    assert_eq!(read.len(), expected.len());
    read.iter().zip(expected).map(|(r, e)| (r.as_f64().unwrap() - e).abs()).fold(0.0, f64::max)
}

/// dciodvfy's errors about `path` (its warnings are advice, e.g. on deprecated coding schemes).
fn dciodvfy_errors(path: &Path) -> Vec<String> {
    let output = Command::new("dciodvfy").arg(path).output().expect("dciodvfy (Debian dicom3tools, scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    text.lines().filter(|l| l.starts_with("Error")).map(str::to_string).collect()
}

struct Written {
    path: PathBuf,
    kind: u32,
    sop_instance_uid: String,
}

/// Writes `map` from `source` as each kind through the C API, with the options a caller sets.
fn write_all_kinds(source: &Path, map: &[f32], [width, height]: [usize; 2], dir: &Path) -> Vec<Written> {
    let (label, prompt, null_prompt) = (CString::new("Pneumonia").unwrap(), CString::new("Chest X-Ray with Pneumonia.").unwrap(), CString::new("").unwrap());
    let stem = source.file_stem().unwrap().to_str().unwrap();
    [DM_MAP_OVERLAY, DM_MAP_RAW, DM_MAP_SEGMENTATION, DM_MAP_PARAMETRIC]
        .into_iter()
        .map(|kind| {
            let path = dir.join(format!("{stem}-{kind}.dcm"));
            // SAFETY: all-zero is a valid dm_dicom_map_options (integers and NULL pointers).
            let mut options = unsafe { std::mem::zeroed::<dm_dicom_map_options>() };
            let mut uid = [0 as c_char; DM_UID_BUFFER_SIZE];
            // SAFETY: valid arguments; the strings outlive the call.
            unsafe {
                assert_eq!(dm_dicom_map_options_default(&mut options), dm_status::DM_OK);
                options.kind = kind;
                options.label = label.as_ptr();
                options.prompt = prompt.as_ptr();
                options.null_prompt = null_prompt.as_ptr();
                options.samples = 37;
                options.seed = 5;
                let status = dm_map_write_dicom_object(
                    c_path(source).as_ptr(),
                    0,
                    map.as_ptr(),
                    map.len(),
                    width as u32,
                    height as u32,
                    &options,
                    c_path(&path).as_ptr(),
                    uid.as_mut_ptr(),
                    uid.len(),
                );
                assert_eq!(status, dm_status::DM_OK, "kind {kind}: {}", c_last_error());
            }
            // SAFETY: written NUL-terminated on success.
            let sop_instance_uid = unsafe { CStr::from_ptr(uid.as_ptr()) }.to_str().unwrap().to_string();
            Written { path, kind, sop_instance_uid }
        })
        .collect()
}

#[test]
fn each_map_object_reads_back_in_highdicom_and_pydicom_and_passes_dciodvfy() {
    let dir = tempfile::tempdir().unwrap();
    for source in sources(dir.path()) {
        let source_file = diffmine::dicom::DicomFile::open(&source).unwrap();
        let metadata = source_file.metadata().unwrap();
        let frame = source_file.modality_frame(0).unwrap();
        let (columns, rows) = (frame.width, frame.height);
        // A map of half the source's size, as typicality maps of a resized image are.
        let size @ [width, height] = [columns / 2, rows / 2];
        let map = test_map(width, height);
        let written = write_all_kinds(&source, &map, size, dir.path());

        let out = dir.path().join("read.json");
        let status = Command::new(python())
            .arg(repo_root().join("tests/reference/dicom_objects.py"))
            .arg("read")
            .arg(&out)
            .args(written.iter().map(|w| &w.path))
            .status()
            .unwrap();
        assert!(status.success(), "highdicom and pydicom could not read the objects written from {}", source.display());
        let read: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();

        let (lo, hi) = map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        let map64: Vec<f64> = map.iter().map(|&v| v as f64).collect();
        for (file, w) in read.iter().zip(&written) {
            let what = format!("{} kind {}", source.display(), w.kind);
            assert_eq!(file["sop_instance_uid"].as_str(), Some(w.sop_instance_uid.as_str()), "{what}");
            assert_eq!(file["study_instance_uid"].as_str(), metadata.study_instance_uid.as_deref(), "{what}: the source's study");
            assert_ne!(file["series_instance_uid"].as_str(), metadata.series_instance_uid.as_deref(), "{what}: a new series");
            assert_eq!(file["patient_id"].as_str(), metadata.patient_id.as_deref(), "{what}");
            assert_eq!(file["referenced_sop_instance_uid"].as_str(), metadata.sop_instance_uid.as_deref(), "{what}");
            let provenance = &file["provenance"];
            assert_eq!(
                (&provenance["label"], &provenance["prompt"], &provenance["null_prompt"], &provenance["samples"], &provenance["seed"]),
                (&Value::from("Pneumonia"), &Value::from("Chest X-Ray with Pneumonia."), &Value::from(""), &Value::from(37), &Value::from(5)),
                "{what}: the options that made it"
            );
            let errors = dciodvfy_errors(&w.path);
            assert!(errors.is_empty(), "{what}: dciodvfy: {errors:#?}");
        }

        let [overlay, raw, seg, parametric] = [&read[0], &read[1], &read[2], &read[3]];
        assert_eq!((overlay["sop_class_uid"].as_str(), overlay["rows"].as_u64()), (Some("1.2.840.10008.5.1.4.1.1.7"), Some(height as u64)));

        // Raw Secondary Capture: within half a step of 16 bits over the map's range.
        assert_eq!(raw["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.7");
        let half_step = (hi - lo) as f64 / 65535.0 / 2.0 * 1.001;
        for reader in ["pydicom", "highdicom"] {
            let worst = largest_difference(&raw[reader], &map64);
            assert!(worst <= half_step, "raw map through {reader}: {worst:e} > {half_step:e}");
        }

        // Segmentation: on the source's grid, the probability (map − min) / (max − min) resampled
        // bilinearly, within half a step of 255.
        assert_eq!(seg["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.66.4");
        assert_eq!(
            (seg["modality"].as_str(), seg["segmentation_type"].as_str(), seg["fractional_type"].as_str()),
            (Some("SEG"), Some("FRACTIONAL"), Some("PROBABILITY"))
        );
        assert_eq!((seg["rows"].as_u64(), seg["columns"].as_u64()), (Some(rows as u64), Some(columns as u64)), "the source's pixel grid");
        assert_eq!((seg["segment_label"].as_str(), seg["algorithm_type"].as_str()), (Some("Pneumonia"), Some("AUTOMATIC")));
        assert_eq!((seg["algorithm_name"].as_str(), seg["algorithm_version"].as_str()), (Some("libdiffmine"), Some(env!("CARGO_PKG_VERSION"))));
        assert_eq!(seg["algorithm_parameters"]["seed"], 5);
        assert_eq!(seg["highdicom_source_uids"][0][2].as_str(), metadata.sop_instance_uid.as_deref(), "highdicom finds the source");
        let scaling = &seg["provenance"];
        assert_eq!((scaling["map_min"].as_f64(), scaling["map_max"].as_f64()), (Some(lo as f64), Some(hi as f64)), "the scaling is kept");
        let probability: Vec<f64> = map64.iter().map(|v| (v - lo as f64) / (hi as f64 - lo as f64)).collect();
        let expected = bilinear(&probability, size, [columns, rows]);
        let half_step = 0.5 / 255.0 + 1e-6;
        for reader in ["pydicom", "highdicom"] {
            let worst = largest_difference(&seg[reader], &expected);
            assert!(worst <= half_step, "segmentation through {reader}: {worst:e} > {half_step:e}");
        }

        // Parametric Map: the exact float values, in Float Pixel Data (compared as 32-bit floats:
        // serde_json's parsing of the JSON decimals may be a unit in the last place of an f64 off).
        assert_eq!(parametric["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.30");
        assert_eq!((parametric["pixel_data_tag"].as_str(), parametric["frame_label"].as_str()), (Some("FloatPixelData"), Some("TYPICALITY")));
        assert_eq!((parametric["real_world_value_first"].as_f64(), parametric["real_world_value_last"].as_f64()), (Some(lo as f64), Some(hi as f64)));
        for reader in ["pydicom", "highdicom"] {
            let values: Vec<f32> = parametric[reader].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(values, map, "parametric map through {reader}");
        }
    }
}

/// A frame the source lacks, wrong map length, unknown kind, NULL pointers, an options struct older than the first version,
/// a label DICOM cannot hold: each a clear status and message, and no file at the output path.
#[test]
fn bad_map_object_input_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let [source, ..] = sources(dir.path());
    let (source, out_path) = (c_path(&source), dir.path().join("out.dcm"));
    let out = c_path(&out_path);
    let map = test_map(24, 20);
    // SAFETY: all-zero is a valid dm_dicom_map_options (integers and NULL pointers).
    let mut defaults = unsafe { std::mem::zeroed::<dm_dicom_map_options>() };
    // SAFETY: a writable struct.
    assert_eq!(unsafe { dm_dicom_map_options_default(&mut defaults) }, dm_status::DM_OK);
    assert_eq!(defaults.struct_size, std::mem::size_of::<dm_dicom_map_options>());
    assert_eq!((defaults.kind, defaults.samples, defaults.seed, defaults.series_number), (DM_MAP_OVERLAY, 100, 42, 9000));
    let backslash = CString::new("Pneumonia\\Effusion").unwrap();
    let write_frame = |frame: u32, source: *const c_char, map: *const f32, map_len: usize, options: *const dm_dicom_map_options, out: *const c_char| {
        // SAFETY: every pointer is NULL or valid for what it claims.
        unsafe { dm_map_write_dicom_object(source, frame, map, map_len, 24, 20, options, out, null_mut(), 0) }
    };
    let write = |source, map, map_len, options, out| write_frame(0, source, map, map_len, options, out);
    let with = |edit: &dyn Fn(&mut dm_dicom_map_options)| {
        let mut options = defaults;
        options.kind = DM_MAP_SEGMENTATION;
        edit(&mut options);
        options
    };
    let (src, values, n, o) = (source.as_ptr(), map.as_ptr(), map.len(), out.as_ptr());
    let cases: [(&str, &dyn Fn() -> dm_status, dm_status, &str); 8] = [
        ("no such frame", &|| write_frame(1, src, values, n, &with(&|_| {}), o), dm_status::DM_ERR_INVALID_ARGUMENT, "frame 1"),
        ("short map", &|| write(src, values, n - 1, &with(&|_| {}), o), dm_status::DM_ERR_INVALID_ARGUMENT, "24×20 map"),
        ("unknown kind", &|| write(src, values, n, &with(&|o| o.kind = 4), o), dm_status::DM_ERR_INVALID_ARGUMENT, "DM_MAP_"),
        ("old struct", &|| write(src, values, n, &with(&|o| o.struct_size = 8), o), dm_status::DM_ERR_INVALID_ARGUMENT, "struct_size"),
        ("backslash", &|| write(src, values, n, &with(&|o| o.label = backslash.as_ptr()), o), dm_status::DM_ERR_INVALID_ARGUMENT, "label"),
        ("NULL source", &|| write(null(), values, n, &with(&|_| {}), o), dm_status::DM_ERR_NULL_ARGUMENT, "source_path"),
        ("NULL map", &|| write(src, null(), n, &with(&|_| {}), o), dm_status::DM_ERR_NULL_ARGUMENT, "map"),
        ("NULL out", &|| write(src, values, n, &with(&|_| {}), null()), dm_status::DM_ERR_NULL_ARGUMENT, "out_path"),
    ];
    for (what, call, expected, message) in cases {
        assert_eq!(call(), expected, "{what}");
        assert!(c_last_error().contains(message), "{what}: {}", c_last_error());
    }
    assert!(!out_path.exists(), "nothing written");
    // NULL options are the defaults: a Secondary Capture overlay.
    assert_eq!(write(source.as_ptr(), map.as_ptr(), map.len(), null(), out.as_ptr()), dm_status::DM_OK, "{}", c_last_error());
    let written = diffmine::dicom::DicomFile::open(&out_path).unwrap().metadata().unwrap();
    assert_eq!(written.sop_class_uid.as_deref(), Some("1.2.840.10008.5.1.4.1.1.7"));
}
