//! dicom-pixeldata 0.10.1 against pydicom on frame 0 of every test file pydicom decodes: the values
//! after the Modality LUT (pydicom: `apply_modality_lut(pixel_array)`), compared exactly for lossless
//! transfer syntaxes and within 0.5 % of full scale on average for lossy ones.
use std::path::{Path, PathBuf};

use dicom_pixeldata::{ConvertOptions, PixelDecoder};
use serde_json::Value;

fn reference(dir: &Path, id: &str, dtype: &str, len: usize) -> Vec<f64> {
    let bytes = std::fs::read(dir.join(format!("{id}.modality"))).expect("reference values");
    let size = match dtype {
        "u1" => 1,
        "i2" | "u2" => 2,
        "i4" | "u4" | "f4" => 4,
        _ => 8,
    };
    bytes
        .chunks_exact(size)
        .take(len)
        .map(|c| match dtype {
            "u1" => c[0] as f64,
            "i2" => i16::from_le_bytes([c[0], c[1]]) as f64,
            "u2" => u16::from_le_bytes([c[0], c[1]]) as f64,
            "i4" => i32::from_le_bytes(c.try_into().unwrap()) as f64,
            "u4" => u32::from_le_bytes(c.try_into().unwrap()) as f64,
            "f4" => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            _ => f64::from_le_bytes(c.try_into().unwrap()),
        })
        .collect()
}

/// Frame 0 after dicom-pixeldata's default conversion (Modality LUT applied, no VOI), as f64.
fn pixeldata_frame(path: &Path) -> Result<Vec<f64>, String> {
    let object = dicom_object::open_file(path).map_err(|e| format!("open: {e}"))?;
    let decoded = object.decode_pixel_data().map_err(|e| format!("decode: {e}"))?;
    let array = decoded.to_ndarray_frame_with_options::<f64>(0, &ConvertOptions::default()).map_err(|e| format!("to_ndarray: {e}"))?;
    Ok(array.iter().copied().collect())
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: pixeldata-gaps REFERENCE_DIR"));
    let index: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let (mut same, mut differ, mut fail) = (0, 0, 0);
    for entry in index["files"].as_array().unwrap().iter().filter(|e| e.get("error").is_none()) {
        let name = entry["name"].as_str().unwrap();
        let len = ["rows", "columns", "samples"].iter().map(|k| entry[k].as_u64().unwrap() as usize).product();
        let theirs = reference(&dir, entry["file_id"].as_str().unwrap(), entry["dtype"].as_str().unwrap(), len);
        let lossy = matches!(entry["transfer_syntax"].as_str().unwrap(), "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.91");
        let full_scale = 2f64.powi(entry["bits_stored"].as_u64().unwrap() as i32) - 1.0;
        // Panics inside the crate count as failures too (a few corrupt test files trigger them).
        let ours = std::panic::catch_unwind(|| pixeldata_frame(Path::new(entry["path"].as_str().unwrap()))).unwrap_or_else(|_| Err("panicked".into()));
        match ours {
            Err(e) => {
                fail += 1;
                println!("FAILS   {name}: {e}");
            }
            Ok(ours) if ours.len() != theirs.len() => {
                differ += 1;
                println!("DIFFERS {name}: {} values, pydicom {}", ours.len(), theirs.len());
            }
            Ok(ours) => {
                let diffs: Vec<f64> = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).collect();
                let (max, mean) = (diffs.iter().cloned().fold(0.0, f64::max), diffs.iter().sum::<f64>() / diffs.len().max(1) as f64);
                let ok = if lossy { mean <= 0.005 * full_scale } else { max <= 1.0 };
                if ok {
                    same += 1;
                } else {
                    differ += 1;
                    println!("DIFFERS {name}: max |Δ| {max}, mean |Δ| {mean:.3} ({})", entry["photometric"].as_str().unwrap());
                }
            }
        }
    }
    println!("dicom-pixeldata 0.10.1 vs pydicom, frame 0 after the Modality LUT: {same} agree, {differ} differ, {fail} fail");
}
