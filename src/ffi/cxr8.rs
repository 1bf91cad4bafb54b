//! ChestX-ray8 evaluation on caller buffers: AUC-PR of a map against one disease's boxes.
use super::args::{input_slice, write_value};
use super::error::{guard, FfiError};
use super::status::dm_status;
use crate::cxr8::{auc_pr, BoundingBox};

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
