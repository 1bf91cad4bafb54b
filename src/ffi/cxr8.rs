//! ChestX-ray8 evaluation through the C ABI: AUC-PR of a map against one disease's boxes, and the
//! whole evaluation from NIH's files to a report folder.
use std::ffi::{c_char, c_void};
use std::path::Path;

use super::args::{input_slice, optional_str, read_options, required_str, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::model::{dm_model, model_ref};
use super::status::dm_status;
use super::typicality::{dm_progress_fn, progress_adapter};
use crate::cxr8::{auc_pr, evaluate_files, BoundingBox, EvaluationFiles, EvaluationOptions};

/// AUC-PR of a row-major `width` × `height` map (`map_len` floats, e.g. a typicality map) against the
/// boxes of one disease: `boxes` holds `boxes_len` doubles, 4 per box (x, y, w, h of the top-left
/// corner and size, in map pixels: scale ChestX-ray8's 1024-pixel boxes to the map first). Positives
/// are the pixels whose centre lies inside any box. Writes scikit-learn's average precision (the
/// primary figure) to `*out_average_precision` and the area under the authors' thresholded curve to
/// `*out_authors_area`; both are NaN when no pixel centre lies inside the boxes. A box outside the
/// map gives `DM_ERR_INVALID_DATA`.
///
/// # Safety
/// `map` and `boxes` must be NULL or point to `map_len` and `boxes_len` readable values; the outputs
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_cxr8_auc_pr(
    map: *const f32,
    map_len: usize,
    width: u32,
    height: u32,
    boxes: *const f64,
    boxes_len: usize,
    out_average_precision: *mut f64,
    out_authors_area: *mut f64,
) -> dm_status {
    guard(|| {
        // SAFETY: the caller's contract covers each pointer.
        let map = unsafe { input_slice(map, map_len, "map") }?;
        // SAFETY: as above.
        let boxes = unsafe { input_slice(boxes, boxes_len, "boxes") }?;
        if !boxes_len.is_multiple_of(4) {
            return Err(FfiError::Invalid(format!("`boxes_len` = {boxes_len} is not a multiple of 4 (x, y, w, h per box)")));
        }
        if out_average_precision.is_null() || out_authors_area.is_null() {
            return Err(FfiError::Null(if out_average_precision.is_null() { "out_average_precision" } else { "out_authors_area" }));
        }
        let boxes: Vec<BoundingBox> = boxes.chunks_exact(4).map(|b| BoundingBox { x: b[0], y: b[1], w: b[2], h: b[3] }).collect();
        let result = auc_pr(map, width as usize, height as usize, &boxes, "map")?;
        let (ap, area) = result.map_or((f64::NAN, f64::NAN), |r| (r.average_precision, r.authors_area));
        // SAFETY: both checked non-NULL above; writable by the caller's contract.
        unsafe {
            write_value(ap, out_average_precision, "out_average_precision")?;
            write_value(area, out_authors_area, "out_authors_area")
        }
    })
}

/// How to run a ChestX-ray8 evaluation. Fill with `dm_cxr8_options_default`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_cxr8_options {
    pub struct_size: usize,
    /// Side the images are resized to (shorter side) and the maps' size (512, as the authors).
    pub working_size: u32,
    /// Typicality samples N per map (100).
    pub samples: u32,
    /// Samples per UNet call (10).
    pub batch: u32,
    /// Range of t as fractions of the training steps (the full [0, 1) by default).
    pub t_min: f64,
    pub t_max: f64,
    pub seed: u64,
    /// At most this many image–disease pairs, in image-name order; 0 for all.
    pub limit: u32,
    /// Comma-separated disease names to evaluate (UTF-8), or NULL for the 8 with boxes.
    pub diseases: *const c_char,
}

impl Default for dm_cxr8_options {
    fn default() -> Self {
        let d = EvaluationOptions::default();
        dm_cxr8_options {
            struct_size: std::mem::size_of::<dm_cxr8_options>(),
            working_size: d.working_size as u32,
            samples: d.samples as u32,
            batch: d.batch as u32,
            t_min: d.t_min,
            t_max: d.t_max,
            seed: d.seed,
            limit: 0,
            diseases: std::ptr::null(),
        }
    }
}

/// Fills `options` with the defaults: 512 px, N = 100, t over [0, 1), seed 42, every boxed disease.
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_cxr8_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_cxr8_options_default(options: *mut dm_cxr8_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_cxr8_options::default(), options, "options") })
}

/// The safe options from the C struct.
///
/// # Safety
/// `o.diseases` NULL or a NUL-terminated string.
unsafe fn evaluation_options(o: &dm_cxr8_options) -> FfiResult<EvaluationOptions> {
    let d = EvaluationOptions::default();
    // SAFETY: forwarded to the caller's contract.
    let diseases = unsafe { optional_str(o.diseases, "options.diseases") }?;
    Ok(EvaluationOptions {
        working_size: o.working_size as usize,
        diseases: diseases.map_or(d.diseases, |list| list.split(',').map(|s| s.trim().to_string()).collect()),
        limit: (o.limit > 0).then_some(o.limit as usize),
        samples: o.samples as usize,
        t_min: o.t_min,
        t_max: o.t_max,
        seed: o.seed,
        batch: o.batch as usize,
    })
}

/// Runs the ChestX-ray8 evaluation: for every image and disease of the box list `bbox_csv`
/// (`BBox_List_2017.csv`; only those the data entry `data_entry_csv` confirms when it is not NULL),
/// the typicality map of the image under "Chest X-Ray with {disease}." against "Chest X-Ray." from
/// `model` and, when not NULL, from `baseline`, scored by AUC-PR against the boxes. Images are found
/// by name under `images_dir` (subfolders included). Writes `report.md`, `report.csv`,
/// `report.json` and `overlays/` (each disease's best and worst case) into `out_dir`. `options` may
/// be NULL for the defaults; `progress` (may be NULL) is called after each map with (maps done, maps
/// in all, NaN), and non-zero cancels with `DM_ERR_CANCELLED`.
///
/// # Safety
/// Handles must be NULL or from `dm_model_open`; strings NULL or NUL-terminated; `options` NULL or a
/// valid options struct; `progress` safe to call with `user_data` from this thread.
#[no_mangle]
pub unsafe extern "C" fn dm_cxr8_evaluate(
    model: *const dm_model,
    baseline: *const dm_model,
    images_dir: *const c_char,
    bbox_csv: *const c_char,
    data_entry_csv: *const c_char,
    out_dir: *const c_char,
    options: *const dm_cxr8_options,
    progress: dm_progress_fn,
    user_data: *mut c_void,
) -> dm_status {
    guard(|| {
        let finetuned = model_ref(model)?;
        let baseline = if baseline.is_null() { None } else { Some(model_ref(baseline)?) };
        // SAFETY: the caller's contract covers each pointer.
        let (images, bbox_list, out) =
            unsafe { (required_str(images_dir, "images_dir")?, required_str(bbox_csv, "bbox_csv")?, required_str(out_dir, "out_dir")?) };
        // SAFETY: as above.
        let data_entry = unsafe { optional_str(data_entry_csv, "data_entry_csv") }?;
        let min = std::mem::size_of::<dm_cxr8_options>();
        // SAFETY: as above.
        let o = unsafe { read_options(options, dm_cxr8_options::default(), min, "options") }?;
        // SAFETY: as above (the options' string).
        let options = unsafe { evaluation_options(&o) }?;
        let files = EvaluationFiles { images: Path::new(images), bbox_list: Path::new(bbox_list), data_entry: data_entry.map(Path::new), out: Path::new(out) };
        evaluate_files(&finetuned, baseline.as_deref(), &files, &options, &mut progress_adapter(progress, user_data))?;
        Ok(())
    })
}
