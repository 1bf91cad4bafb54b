//! The fuzz targets' bodies, one per parser of outside input, each through the library's public
//! entry point: whatever the bytes, a result or an error, never a crash, a hang or an unbounded
//! allocation. Shared by the cargo-fuzz targets (fuzz_targets/<target>.rs) and the test suite, which
//! replays the findings kept in fuzz/regressions/<target> through [`run`] without building the
//! instrumented targets.
//!
//! Parsers that only read files get the bytes in a scratch folder of their own (under `TMPDIR`, one
//! per process and thread), written anew for each input.
use std::cell::OnceCell;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use diffmine::cxr8::tables::{boxes_by_image, boxes_confirmed_by, read_bbox_list, read_data_entry};
use diffmine::dicom::{DicomFile, DicomOptions};
use diffmine::ffi::{
    dm_dicom_map_options, dm_image_free, dm_image_get_view, dm_image_open_buffer, dm_image_view, dm_map_write_dicom, dm_map_write_dicom_object, dm_status,
    DM_MAP_OVERLAY, DM_MAP_PARAMETRIC, DM_MAP_RAW, DM_MAP_SEGMENTATION,
};
use diffmine::model::config::{read_json, ClipTextConfig, SchedulerConfig, UNetConfig, VaeConfig};
use diffmine::model::scheduler::NoiseSchedule;
use diffmine::model::single_file::Layout;
use diffmine::model::tokenizer::ClipTokenizer;

/// Every target, as named in fuzz/Cargo.toml, fuzz/run.sh and fuzz/regressions.
pub const TARGETS: [&str; 7] = ["dicom_image", "dicom_write", "image_buffer", "safetensors", "model_config", "tokenizer", "cxr8_csv"];

/// Feeds `data` to `target`'s parser.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "dicom_image" => dicom_image(data),
        "dicom_write" => dicom_write(data),
        "image_buffer" => image_buffer(data),
        "safetensors" => safetensors(data),
        "model_config" => model_config(data),
        "tokenizer" => tokenizer(data),
        "cxr8_csv" => cxr8_csv(data),
        other => panic!("no fuzz target named {other}"),
    }
}

/// DICOM ingestion, file bytes → metadata and image.
pub fn dicom_image(data: &[u8]) {
    let Ok(file) = DicomFile::from_bytes(data, "fuzz input") else { return };
    let _ = file.metadata();
    // Two frames reach the frame-splitting paths without letting one input decode hundreds.
    let frames = file.frame_count().unwrap_or(0).min(2);
    for frame in 0..frames {
        let _ = file.image(&DicomOptions { frame, ..Default::default() });
    }
}

/// The DICOM writers with a fuzzed source file, the kind chosen by the input's last byte: the
/// Secondary Captures through `dm_map_write_dicom`, the Segmentation and the Parametric Map through
/// `dm_map_write_dicom_object`. A map reported written must read back (a Secondary Capture's pixels
/// too: the library does not decode the other two's), and a failed write must leave no file.
pub fn dicom_write(data: &[u8]) {
    let source = write_scratch("source.dcm", data);
    let out = scratch().join("map.dcm");
    let kind = data.last().map_or(DM_MAP_OVERLAY, |b| u32::from(b & 3));
    let map: Vec<f32> = (0..64).map(|i| i as f32 / 63.0).collect();
    let (source_c, out_c) = (c_path(&source), c_path(&out));
    let status = if kind == DM_MAP_SEGMENTATION || kind == DM_MAP_PARAMETRIC {
        let options = dm_dicom_map_options { kind, ..dm_dicom_map_options::default() };
        // SAFETY: NUL-terminated paths, a map of `map.len()` values and options that outlive the
        // call; no UID buffer (NULL, 0).
        unsafe { dm_map_write_dicom_object(source_c.as_ptr(), 0, map.as_ptr(), map.len(), 8, 8, &options, out_c.as_ptr(), std::ptr::null_mut(), 0) }
    } else {
        // SAFETY: as above; no series UID (NULL).
        unsafe { dm_map_write_dicom(source_c.as_ptr(), 0, map.as_ptr(), map.len(), 8, 8, kind, std::ptr::null(), out_c.as_ptr(), std::ptr::null_mut(), 0) }
    };
    if status != dm_status::DM_OK {
        assert!(!out.exists(), "a failed write ({status:?}) left {}", out.display());
        return;
    }
    let written = DicomFile::open(&out).unwrap_or_else(|e| panic!("the map written from a fuzzed source does not open: {e}"));
    written.metadata().unwrap_or_else(|e| panic!("the written map's metadata: {e}"));
    if kind == DM_MAP_OVERLAY || kind == DM_MAP_RAW {
        written.image(&DicomOptions::default()).unwrap_or_else(|e| panic!("the written map's pixels: {e}"));
    }
    std::fs::remove_file(&out).expect("remove the written map");
}

/// PNG, JPEG, BMP (and DICOM) through the C entry `dm_image_open_buffer`: an image it opens has the
/// geometry it reports and finite pixels in [0, 1].
pub fn image_buffer(data: &[u8]) {
    let mut image = std::ptr::null_mut();
    // SAFETY: `data` is readable for its length; NULL options mean the defaults; `image` is writable.
    let status = unsafe { dm_image_open_buffer(data.as_ptr(), data.len(), std::ptr::null(), &mut image) };
    if status != dm_status::DM_OK {
        return;
    }
    let mut view = dm_image_view { data: std::ptr::null(), data_len: 0, width: 0, height: 0, channels: 0, pixel_type: 0, stride: 0 };
    // SAFETY: a live image handle and a writable view.
    assert_eq!(unsafe { dm_image_get_view(image, &mut view) }, dm_status::DM_OK);
    let values = view.width as usize * view.height as usize * view.channels as usize;
    assert!(values > 0 && view.data_len == values * 4, "{}×{}×{} image with {} bytes", view.width, view.height, view.channels, view.data_len);
    // SAFETY: the view's `data_len` bytes of f32 pixels stay valid until the image is freed.
    let pixels = unsafe { std::slice::from_raw_parts(view.data.cast::<f32>(), values) };
    assert!(pixels.iter().all(|v| (0.0..=1.0).contains(v)), "a pixel outside [0, 1]");
    assert_eq!(dm_image_free(image), dm_status::DM_OK);
}

/// A safetensors file's header and tensor table (every byte range checked against the file and the
/// other tensors), through the single-file checkpoint detection that reads its keys and shapes: the
/// public way in (the weight reader itself hands out views of its mapping, which only a model may
/// keep, so it is not public).
pub fn safetensors(data: &[u8]) {
    let _ = Layout::detect(&write_scratch("model.safetensors", data), None);
}

/// A `config.json` read as each component's config (UNet, VAE, text encoder) and as a
/// `scheduler_config.json`, checked as loading checks them; the schedule is computed.
pub fn model_config(data: &[u8]) {
    let path = write_scratch("config.json", data);
    if let Ok(config) = read_json::<UNetConfig>(&path) {
        let _ = config.check_supported().and_then(|()| config.heads_per_block());
    }
    if let Ok(config) = read_json::<VaeConfig>(&path) {
        let _ = config.check_supported();
    }
    let _ = ClipTextConfig::read(&path);
    if let Ok(config) = read_json::<SchedulerConfig>(&path) {
        let _ = NoiseSchedule::new(config);
    }
}

/// The files of a tokenizer folder, in the input in this order, separated by 0xFF bytes (which UTF-8
/// text never holds); an empty part is a missing file. What follows the last is a prompt.
const TOKENIZER_FILES: [&str; 5] = ["tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json"];

/// A tokenizer folder (either layout, with its config and special-token files), then prompts encoded.
pub fn tokenizer(data: &[u8]) {
    let dir = scratch().join("tokenizer");
    std::fs::create_dir_all(&dir).expect("create the tokenizer folder");
    let mut parts = data.split(|&b| b == 0xFF);
    for name in TOKENIZER_FILES {
        match parts.next() {
            Some(part) if !part.is_empty() => std::fs::write(dir.join(name), part).expect("write a tokenizer file"),
            _ => drop(std::fs::remove_file(dir.join(name))),
        }
    }
    let prompt = parts.next().map(String::from_utf8_lossy).unwrap_or_default();
    let Ok(tokenizer) = ClipTokenizer::from_dir(&dir) else { return };
    for text in ["a photo of a cat", &prompt] {
        let ids = tokenizer.encode(text);
        assert_eq!(ids.len(), tokenizer.max_length(), "encoded {text:?}");
    }
}

/// NIH ChestX-ray8's tables: the text read as a box list and as a data entry, then matched.
pub fn cxr8_csv(data: &[u8]) {
    let path = write_scratch("table.csv", data);
    let boxes = read_bbox_list(&path);
    let entries = read_data_entry(&path);
    if let Ok(boxes) = &boxes {
        let _ = boxes_by_image(boxes);
        for entry in boxes {
            let _ = entry.bbox.scaled([1024, 1024], [64, 64]);
        }
    }
    if let (Ok(boxes), Ok(entries)) = (boxes, entries) {
        let _ = boxes_confirmed_by(boxes, &entries);
    }
}

thread_local! {
    static SCRATCH: OnceCell<PathBuf> = const { OnceCell::new() };
}

/// This thread's scratch folder.
fn scratch() -> PathBuf {
    SCRATCH.with(|cell| {
        cell.get_or_init(|| {
            let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
            let dir = std::env::temp_dir().join(format!("diffmine-fuzz-{}-{thread}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create the fuzz scratch folder");
            dir
        })
        .clone()
    })
}

/// Removes this thread's scratch folder (the suite's replay; a fuzzing process runs until it exits).
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch());
}

fn write_scratch(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("write the fuzz input");
    path
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).expect("a scratch path holds no NUL")
}
