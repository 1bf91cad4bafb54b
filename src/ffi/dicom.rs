//! Typicality maps back to the PACS: `dm_map_write_dicom` and the UIDs it needs.
use std::ffi::c_char;
use std::path::Path;

use super::args::{input_slice, optional_str, required_str, write_output};
use super::error::{guard, FfiError, FfiResult};
use super::status::dm_status;
use crate::dicom::{new_uid, DicomFile, MapKind};

/// The map blended on the image, as RGB.
pub const DM_MAP_OVERLAY: u32 = 0;
/// The map's values: 16-bit grey whose Rescale Slope/Intercept give them back.
pub const DM_MAP_RAW: u32 = 1;

/// Bytes a UID buffer needs: 64 characters and the NUL.
pub const DM_UID_BUFFER_SIZE: usize = 65;

/// Checks that a UID buffer has the documented `DM_UID_BUFFER_SIZE` bytes: the UIDs written today are
/// shorter, but a caller sized by the documentation must never meet a longer one.
fn check_uid_buffer(len: usize, what: &'static str) -> FfiResult<()> {
    match len {
        DM_UID_BUFFER_SIZE.. => Ok(()),
        given => Err(FfiError::BufferTooSmall { what, needed: DM_UID_BUFFER_SIZE, given }),
    }
}

/// Copies `uid` NUL-terminated into the caller's buffer of `len` bytes (at least `DM_UID_BUFFER_SIZE`).
///
/// # Safety
/// `out` must be NULL or point to `len` writable bytes.
unsafe fn write_uid(uid: &str, out: *mut c_char, len: usize, what: &'static str) -> FfiResult<()> {
    if out.is_null() {
        return Err(FfiError::Null(what));
    }
    check_uid_buffer(len, what)?;
    let mut bytes: Vec<c_char> = uid.bytes().map(|b| b as c_char).collect();
    bytes.push(0);
    // SAFETY: forwarded to the caller's contract.
    unsafe { write_output(&bytes, out, len, what) }
}

/// Writes a new globally unique UID (2.25 root, 128 random bits) into `out`, a buffer of `out_len`
/// bytes (at least `DM_UID_BUFFER_SIZE`): e.g. a Series Instance UID to pass to several
/// `dm_map_write_dicom` calls so their instances share one series.
///
/// # Safety
/// `out` must be NULL or point to `out_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dm_dicom_new_uid(out: *mut c_char, out_len: usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_uid(&new_uid(), out, out_len, "out") })
}

/// Writes a row-major `width` × `height` map (`map_len` floats, e.g. the typicality map of frame
/// `frame` of the DICOM file at `source_path`) to `out_path` as a Secondary Capture instance of the
/// source's study: same patient and study, a new SOP Instance UID, the source in its Source Image
/// Sequence. `kind` is `DM_MAP_OVERLAY` or `DM_MAP_RAW`. The series is `series_instance_uid`, or a new
/// one when NULL. When `out_sop_instance_uid` is not NULL, the new instance's UID is written there
/// (`out_sop_instance_uid_len` bytes, at least `DM_UID_BUFFER_SIZE`).
///
/// # Safety
/// Strings must be NULL or NUL-terminated; `map` NULL or `map_len` readable floats;
/// `out_sop_instance_uid` NULL or `out_sop_instance_uid_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dm_map_write_dicom(
    source_path: *const c_char,
    frame: u32,
    map: *const f32,
    map_len: usize,
    width: u32,
    height: u32,
    kind: u32,
    series_instance_uid: *const c_char,
    out_path: *const c_char,
    out_sop_instance_uid: *mut c_char,
    out_sop_instance_uid_len: usize,
) -> dm_status {
    guard(|| {
        // SAFETY: the caller's contract covers each pointer.
        let (source_path, out_path) = unsafe { (required_str(source_path, "source_path")?, required_str(out_path, "out_path")?) };
        // SAFETY: as above.
        let series = unsafe { optional_str(series_instance_uid, "series_instance_uid") }?;
        // SAFETY: as above.
        let map = unsafe { input_slice(map, map_len, "map") }?;
        let kind = match kind {
            DM_MAP_OVERLAY => MapKind::Overlay,
            DM_MAP_RAW => MapKind::Raw,
            other => return Err(FfiError::Invalid(format!("`kind` = {other} is not a DM_MAP_* value"))),
        };
        if !out_sop_instance_uid.is_null() {
            check_uid_buffer(out_sop_instance_uid_len, "out_sop_instance_uid")?;
        }
        let source = DicomFile::open(Path::new(source_path))?;
        let written = source.write_map(frame as usize, map, [width as usize, height as usize], kind, series, Path::new(out_path))?;
        if !out_sop_instance_uid.is_null() {
            // SAFETY: non-NULL, with the length checked above, by the caller's contract.
            unsafe { write_uid(&written.sop_instance_uid, out_sop_instance_uid, out_sop_instance_uid_len, "out_sop_instance_uid") }?;
        }
        Ok(())
    })
}
