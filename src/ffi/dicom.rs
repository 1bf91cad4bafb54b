//! Typicality maps back to the PACS: `dm_map_write_dicom_object` (and the older
//! `dm_map_write_dicom`) and the UIDs they need.
use std::ffi::c_char;
use std::path::Path;
use std::ptr::null;

use super::args::{input_slice, optional_str, read_options, required_str, write_output, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::status::dm_status;
use crate::dicom::{new_uid, DicomFile, MapKind, MapObjectOptions};

/// The map blended on the image, as RGB.
pub const DM_MAP_OVERLAY: u32 = 0;
/// The map's values: 16-bit grey whose Rescale Slope/Intercept give them back.
pub const DM_MAP_RAW: u32 = 1;
/// A fractional Segmentation (SOP class 1.2.840.10008.5.1.4.1.1.66.4): the map as a probability.
pub const DM_MAP_SEGMENTATION: u32 = 2;
/// A Parametric Map (SOP class 1.2.840.10008.5.1.4.1.1.30): the exact float values.
pub const DM_MAP_PARAMETRIC: u32 = 3;

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
/// `frame` of the DICOM file at `source_path`) to `out_path` as an instance of the source's study:
/// `dm_map_write_dicom_object` with options at their defaults but `kind` (a `DM_MAP_*` value; this
/// function predates the Segmentation and the Parametric Map) and `series_instance_uid` (NULL: a new
/// series). When `out_sop_instance_uid` is not NULL, the new instance's UID is written there
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
    let options = dm_dicom_map_options { kind, series_instance_uid, ..Default::default() };
    // SAFETY: forwarded to the caller's contract; `options` is a complete local struct.
    unsafe { dm_map_write_dicom_object(source_path, frame, map, map_len, width, height, &options, out_path, out_sop_instance_uid, out_sop_instance_uid_len) }
}

/// How `dm_map_write_dicom_object` writes a map and what the object records of how it was made. Fill
/// with `dm_dicom_map_options_default`. Strings are UTF-8, NULL meaning absent.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_dicom_map_options {
    pub struct_size: usize,
    /// `DM_MAP_OVERLAY` (default), `DM_MAP_RAW`, `DM_MAP_SEGMENTATION` or `DM_MAP_PARAMETRIC`.
    pub kind: u32,
    /// What the map is the typicality of (the segment label; at most 64 characters); NULL:
    /// "typicality".
    pub label: *const c_char,
    /// The prompts, samples and seed the map was computed with: recorded in the object (Image
    /// Comments, as JSON), not used. Defaults: NULL, NULL, and `dm_typicality_options_default`'s
    /// samples and seed.
    pub prompt: *const c_char,
    pub null_prompt: *const c_char,
    pub samples: u32,
    pub seed: u64,
    /// The series to add the instance to; NULL: a new one.
    pub series_instance_uid: *const c_char,
    /// NULL: a description naming the kind (at most 64 characters).
    pub series_description: *const c_char,
    /// 9000 by default.
    pub series_number: u32,
}

impl Default for dm_dicom_map_options {
    fn default() -> Self {
        let d = MapObjectOptions::default();
        dm_dicom_map_options {
            struct_size: std::mem::size_of::<dm_dicom_map_options>(),
            kind: DM_MAP_OVERLAY,
            label: null(),
            prompt: null(),
            null_prompt: null(),
            samples: d.samples as u32,
            seed: d.seed,
            series_instance_uid: null(),
            series_description: null(),
            series_number: d.series_number,
        }
    }
}

/// Fills `options` with the defaults.
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_dicom_map_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_dicom_map_options_default(options: *mut dm_dicom_map_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_dicom_map_options::default(), options, "options") })
}

/// The safe options from the C struct (NULL: the defaults).
///
/// # Safety
/// `ptr` NULL or a valid options struct whose strings are NULL or NUL-terminated.
unsafe fn map_options(ptr: *const dm_dicom_map_options) -> FfiResult<MapObjectOptions> {
    // SAFETY: forwarded to the caller's contract.
    let o = unsafe { read_options(ptr, dm_dicom_map_options::default(), std::mem::size_of::<dm_dicom_map_options>(), "options") }?;
    let kind = match o.kind {
        DM_MAP_OVERLAY => MapKind::Overlay,
        DM_MAP_RAW => MapKind::Raw,
        DM_MAP_SEGMENTATION => MapKind::Segmentation,
        DM_MAP_PARAMETRIC => MapKind::Parametric,
        other => return Err(FfiError::Invalid(format!("`options.kind` = {other} is not a DM_MAP_* value"))),
    };
    // SAFETY: the strings are NULL or NUL-terminated by the caller's contract.
    let text = |ptr, what| unsafe { optional_str(ptr, what) }.map(|t| t.map(str::to_string));
    Ok(MapObjectOptions {
        kind,
        label: text(o.label, "options.label")?.unwrap_or_default(),
        prompt: text(o.prompt, "options.prompt")?.unwrap_or_default(),
        null_prompt: text(o.null_prompt, "options.null_prompt")?.unwrap_or_default(),
        samples: o.samples as usize,
        seed: o.seed,
        series_instance_uid: text(o.series_instance_uid, "options.series_instance_uid")?,
        series_description: text(o.series_description, "options.series_description")?,
        series_number: o.series_number,
    })
}

/// Writes a row-major `width` × `height` map (`map_len` floats, e.g. the typicality map of frame
/// `frame` of the DICOM file at `source_path`) to `out_path` as a new instance of the source's study
/// (same patient and study, the source in its Source Image Sequence), of the kind `options->kind`:
/// - `DM_MAP_OVERLAY`: Secondary Capture, the map in colour on the image (RGB, the map's size);
/// - `DM_MAP_RAW`: Secondary Capture, 16-bit grey whose Rescale Slope/Intercept give the values;
/// - `DM_MAP_SEGMENTATION`: a fractional Segmentation (probability), the map min–max scaled to
///   [0, 1] and resampled (bilinear) to the source frame's rows and columns, 8 bits;
/// - `DM_MAP_PARAMETRIC`: a Parametric Map of the exact float values at the map's size.
///
/// `options` NULL means the defaults (`dm_dicom_map_options_default`). When `out_sop_instance_uid`
/// is not NULL, the new instance's UID is written there (`out_sop_instance_uid_len` bytes, at least
/// `DM_UID_BUFFER_SIZE`). On failure no file is left at `out_path` (one already there stays as it
/// was).
///
/// # Safety
/// Strings must be NULL or NUL-terminated; `map` NULL or `map_len` readable floats; `options` NULL
/// or a valid struct of `options->struct_size` bytes; `out_sop_instance_uid` NULL or
/// `out_sop_instance_uid_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dm_map_write_dicom_object(
    source_path: *const c_char,
    frame: u32,
    map: *const f32,
    map_len: usize,
    width: u32,
    height: u32,
    options: *const dm_dicom_map_options,
    out_path: *const c_char,
    out_sop_instance_uid: *mut c_char,
    out_sop_instance_uid_len: usize,
) -> dm_status {
    guard(|| {
        // SAFETY: the caller's contract covers each pointer.
        let (source_path, out_path) = unsafe { (required_str(source_path, "source_path")?, required_str(out_path, "out_path")?) };
        // SAFETY: as above.
        let map = unsafe { input_slice(map, map_len, "map") }?;
        // SAFETY: as above.
        let options = unsafe { map_options(options) }?;
        if !out_sop_instance_uid.is_null() {
            check_uid_buffer(out_sop_instance_uid_len, "out_sop_instance_uid")?;
        }
        let source = DicomFile::open(Path::new(source_path))?;
        let written = source.write_map(frame as usize, map, [width as usize, height as usize], &options, Path::new(out_path))?;
        if !out_sop_instance_uid.is_null() {
            // SAFETY: non-NULL, with the length checked above, by the caller's contract.
            unsafe { write_uid(&written.sop_instance_uid, out_sop_instance_uid, out_sop_instance_uid_len, "out_sop_instance_uid") }?;
        }
        Ok(())
    })
}
