//! Peer check of DICOM decoding against pydicom (with the pylibjpeg plugins) on the test files that
//! pydicom's wheel and PyPI's pydicom-data ship. tests/reference/dicom_reference.py records what
//! pydicom decodes; this test decodes the same files and compares, and lists every file that either
//! side cannot read, with the reason. Run with `--nocapture` to see the table.
//!
//! Tolerances: exact for lossless data (native, RLE, JPEG lossless, reversible JPEG 2000); 1 level
//! where a YBR → RGB conversion rounds (pydicom converts in float32 through numpy's matmul); for lossy
//! JPEG and JPEG 2000 the two decoders' IDCT and chroma upsampling may differ (jpeg-decoder vs.
//! libjpeg; both use OpenJPEG for JPEG 2000), so there the mean difference must stay below 0.5 % of
//! full scale (2^Bits Stored − 1) and the largest below 8 levels of 8 bits (3.1 %).
mod common;

use std::path::PathBuf;
use std::process::Command;

use diffmine::dicom::{DicomFile, DicomOptions};
use serde_json::Value;

fn reference_dir() -> PathBuf {
    let dir = common::repo_root().join("target/dicom-reference");
    let python = std::env::var_os("DIFFMINE_VENV").map(PathBuf::from).unwrap_or_else(|| common::repo_root().join(".deps/venv")).join("bin/python");
    let status = Command::new(python)
        .arg(common::repo_root().join("tests/reference/dicom_reference.py"))
        .arg(&dir)
        .status()
        .expect("run tests/reference/dicom_reference.py (run scripts/setup.sh first)");
    assert!(status.success(), "dicom_reference.py failed");
    dir
}

fn read_array(path: PathBuf, dtype: &str) -> Vec<f64> {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    macro_rules! values {
        ($t:ty) => {
            bytes.chunks_exact(std::mem::size_of::<$t>()).map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f64).collect()
        };
    }
    match dtype {
        "u1" => values!(u8),
        "i2" => values!(i16),
        "u2" => values!(u16),
        "i4" => values!(i32),
        "u4" => values!(u32),
        "f4" => values!(f32),
        "f8" => values!(f64),
        other => panic!("unknown dtype {other}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tolerance {
    Exact,
    /// Largest difference allowed, in sample levels.
    Rounding(f64),
    /// Lossy codecs: bounds on the mean and largest difference, as fractions of full scale.
    Lossy,
}

fn tolerance(transfer_syntax: &str, photometric: &str) -> Tolerance {
    match transfer_syntax {
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.91" => Tolerance::Lossy,
        _ if photometric.starts_with("YBR_FULL") => Tolerance::Rounding(1.0),
        _ => Tolerance::Exact,
    }
}

/// Files where pydicom is wrong, and the twin file (the same image in another transfer syntax) whose
/// pydicom display levels are right and are used instead.
const PYDICOM_ERRATA: &[(&str, &str, &str)] = &[
    ("pydicom-data/OBXXXX1A_expb.dcm", "pydicom-data/OBXXXX1A.dcm", "apply_color_lut reads big-endian OW palette data as little-endian"),
    ("pydicom-data/OBXXXX1A_expb_2frame.dcm", "pydicom-data/OBXXXX1A_2frame.dcm", "apply_color_lut reads big-endian OW palette data as little-endian"),
];

const LOSSY_MEAN: f64 = 0.005;
const LOSSY_MAX: f64 = 8.0 / 255.0;

struct Difference {
    max: f64,
    mean: f64,
}

fn difference(ours: &[f64], theirs: &[f64]) -> Difference {
    assert_eq!(ours.len(), theirs.len());
    let diffs: Vec<f64> = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).collect();
    Difference { max: diffs.iter().cloned().fold(0.0, f64::max), mean: diffs.iter().sum::<f64>() / diffs.len().max(1) as f64 }
}

/// Whether a difference is within `tolerance`, for values whose largest magnitude is `scale` and
/// whose full scale is `full_scale`.
fn within(tolerance: Tolerance, d: &Difference, scale: f64, full_scale: f64) -> bool {
    match tolerance {
        Tolerance::Exact => d.max <= 1e-9 * scale,
        Tolerance::Rounding(levels) => d.max <= levels + 1e-9,
        Tolerance::Lossy => d.mean <= LOSSY_MEAN * full_scale && d.max <= LOSSY_MAX * full_scale,
    }
}

/// Compares one file both sides decode; returns a description of the mismatch, if any.
fn compare(file: &DicomFile, entry: &Value, dir: &std::path::Path) -> std::result::Result<String, String> {
    let id = entry["file_id"].as_str().unwrap();
    let transfer_syntax = entry["transfer_syntax"].as_str().unwrap();
    let photometric = entry["photometric"].as_str().unwrap();
    let tol = tolerance(transfer_syntax, photometric);
    let (rows, columns, samples) =
        (entry["rows"].as_u64().unwrap() as usize, entry["columns"].as_u64().unwrap() as usize, entry["samples"].as_u64().unwrap() as usize);
    let frame_len = rows * columns * samples;
    let full_scale = 2f64.powi(entry["bits_stored"].as_u64().unwrap() as i32) - 1.0;
    let theirs = read_array(dir.join(format!("{id}.modality")), entry["dtype"].as_str().unwrap());
    let mut summary = Vec::new();
    for (k, index) in entry["frame_indices"].as_array().unwrap().iter().enumerate() {
        let index = index.as_u64().unwrap() as usize;
        let ours = file.modality_frame(index).map_err(|e| format!("frame {index}: {e}"))?;
        if (ours.height, ours.width, ours.channels) != (rows, columns, samples) {
            return Err(format!("frame {index} is {}×{}×{}, pydicom's {rows}×{columns}×{samples}", ours.height, ours.width, ours.channels));
        }
        let expected = &theirs[k * frame_len..(k + 1) * frame_len];
        let d = difference(&ours.values, expected);
        let scale = expected.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        if !within(tol, &d, scale, full_scale) {
            return Err(format!("frame {index}: max |Δ| {} mean |Δ| {:.4} ({tol:?})", d.max, d.mean));
        }
        summary.push(format!("frame {index} max |Δ| {} mean {:.3}", d.max, d.mean));
    }
    if entry.get("display_step").is_some() {
        let step = entry["display_step"].as_u64().unwrap() as usize;
        let image = file.image(&DicomOptions::default()).map_err(|e| format!("display: {e}"))?;
        let name = entry["name"].as_str().unwrap();
        let display_id = match PYDICOM_ERRATA.iter().find(|(file, _, _)| *file == name) {
            Some((_, twin, why)) => {
                summary.push(format!("display against {twin} (pydicom {why})"));
                twin.replace('/', "__")
            }
            None => id.to_string(),
        };
        let expected = read_array(dir.join(format!("{display_id}.display")), "f4");
        let ours: Vec<f64> = (0..rows)
            .step_by(step)
            .flat_map(|y| (0..columns).step_by(step).map(move |x| (y, x)))
            .flat_map(|(y, x)| (0..image.channels).map(move |c| (y, x, c)))
            .map(|(y, x, c)| image.pixels[(y * columns + x) * image.channels + c] as f64)
            .collect();
        let d = difference(&ours, &expected);
        let allowed = match tol {
            // float32 rounding of levels in [0, 1].
            Tolerance::Exact => 1e-6,
            Tolerance::Rounding(levels) => levels / full_scale + 1e-6,
            Tolerance::Lossy => LOSSY_MAX + 1e-6,
        };
        if d.max > allowed {
            return Err(format!("display of frame 0: max |Δ| {:.3e} (allowed {allowed:.1e})", d.max));
        }
        summary.push(format!("display max |Δ| {:.1e}", d.max));
    }
    Ok(format!("{tol:?}: {}", summary.join(", ")))
}

#[test]
fn dicom_decoding_matches_pydicom() {
    let dir = reference_dir();
    let index: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let (mut compared, mut mismatches, mut only_pydicom, mut only_ours, mut neither) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for entry in index["files"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let path = PathBuf::from(entry["path"].as_str().unwrap());
        let ours = DicomFile::open(&path).and_then(|f| f.modality_frame(0).map(|_| f));
        match (ours, entry.get("error")) {
            (Ok(file), None) => match compare(&file, entry, &dir) {
                Ok(summary) => compared.push(format!("{name}: {summary}")),
                Err(problem) => mismatches.push(format!("{name}: {problem}")),
            },
            (Ok(_), Some(theirs)) => only_ours.push(format!("{name}: pydicom: {}", theirs.as_str().unwrap())),
            (Err(e), None) => only_pydicom.push(format!("{name}: libdiffmine: {e}")),
            (Err(e), Some(theirs)) => neither.push(format!("{name}: libdiffmine: {e} | pydicom: {}", theirs.as_str().unwrap())),
        }
    }
    for (title, list) in [
        ("compared", &compared),
        ("MISMATCHED", &mismatches),
        ("only pydicom reads", &only_pydicom),
        ("only libdiffmine reads", &only_ours),
        ("neither reads pixels", &neither),
    ] {
        println!("\n== {title}: {}", list.len());
        for line in list {
            println!("  {line}");
        }
    }
    assert!(mismatches.is_empty(), "{} files decode differently from pydicom:\n{}", mismatches.len(), mismatches.join("\n"));
    let unexplained: Vec<&String> = only_pydicom.iter().filter(|line| !EXPECTED_REFUSALS.iter().any(|reason| line.contains(reason))).collect();
    assert!(unexplained.is_empty(), "files only pydicom reads, for no known reason:\n{unexplained:#?}");
    assert!(compared.len() >= 116, "only {} files compared", compared.len());
}

/// Why libdiffmine refuses files pydicom reads: 12-bit lossy JPEG (jpeg-decoder has no 12-bit DCT),
/// and one file whose meta group says explicit VR while its data set
/// is implicit VR: pydicom guesses the encoding; read as explicit VR, its first element declares an
/// impossible length and is refused.
const EXPECTED_REFUSALS: &[&str] = &["12-bit lossy JPEG", "SC_rgb_jpeg.dcm: element (0008,0008) declares"];
