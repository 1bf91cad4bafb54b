//! `dm_image_view`: the one way images enter the C API, a borrowed pixel buffer with its geometry; and
//! `dm_image`: an owned image decoded from a DICOM, PNG or JPEG file or buffer, which hands out such a
//! view and the metadata of its DICOM source.
use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::ptr::null;

use super::args::{input_slice, read_options, required_str, write_sized, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::handle;
use super::status::dm_status;
use crate::dicom::{self, DicomOptions, Metadata, OwnedImage, VoiFunction, Window};
use crate::image::{ImageView, PixelType};

pub const DM_PIXEL_U8: u32 = 0;
pub const DM_PIXEL_U16: u32 = 1;
/// 32-bit float samples in [0, 1].
pub const DM_PIXEL_F32: u32 = 2;

/// A borrowed image: `height` rows of `width` pixels with `channels` samples each (1 grey, 3 RGB,
/// 4 RGBA with alpha ignored), rows `stride` bytes apart, in a buffer of `data_len` bytes. Samples of
/// 16 and 32 bits are in native byte order.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_image_view {
    pub data: *const c_void,
    pub data_len: usize,
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    /// One of `DM_PIXEL_*`.
    pub pixel_type: u32,
    pub stride: usize,
}

/// Borrows a C image view as the safe type, checking its geometry against its buffer.
///
/// # Safety
/// `view` must be NULL or point to a valid `dm_image_view` whose `data` holds `data_len` readable bytes
/// for the returned lifetime.
pub(crate) unsafe fn borrow_view<'a>(view: *const dm_image_view) -> FfiResult<ImageView<'a>> {
    if view.is_null() {
        return Err(FfiError::Null("image"));
    }
    // SAFETY: non-NULL and valid by the caller's contract.
    let v = unsafe { *view };
    let pixel = match v.pixel_type {
        DM_PIXEL_U8 => PixelType::U8,
        DM_PIXEL_U16 => PixelType::U16,
        DM_PIXEL_F32 => PixelType::F32,
        other => return Err(FfiError::Invalid(format!("`image.pixel_type` = {other} is not a DM_PIXEL_* value"))),
    };
    // SAFETY: `data` holds `data_len` readable bytes by the caller's contract.
    let data = unsafe { super::args::input_slice(v.data as *const u8, v.data_len, "image.data") }?;
    let image = ImageView { data, width: v.width as usize, height: v.height as usize, channels: v.channels as usize, stride: v.stride, pixel };
    image.validate()?;
    Ok(image)
}

/// An owned image: decoded pixels in [0, 1] (float32, 1 or 3 channels) and, for DICOM, its metadata.
/// Immutable once created, so it may be used from several threads at once.
#[allow(non_camel_case_types)]
pub struct dm_image {
    _opaque: [u8; 0],
}

/// Grey levels through the file's first VOI LUT or window, else the frame's min–max.
pub const DM_WINDOW_FILE: u32 = 0;
/// Grey levels through the frame's own min–max, whatever the file says.
pub const DM_WINDOW_MIN_MAX: u32 = 1;
/// Grey levels through the caller's `window_center`/`window_width` (modality units).
pub const DM_WINDOW_EXPLICIT: u32 = 2;

/// DICOM's linear window (PS3.3 C.11.2.1.2.1).
pub const DM_VOI_LINEAR: u32 = 0;
pub const DM_VOI_LINEAR_EXACT: u32 = 1;
pub const DM_VOI_SIGMOID: u32 = 2;

/// How to read a DICOM image (ignored for PNG and JPEG). Fill with `dm_image_options_default`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_image_options {
    /// `sizeof(dm_image_options)` as the caller was compiled with.
    pub struct_size: usize,
    /// The frame of a multi-frame image, from 0.
    pub frame: u32,
    /// One of `DM_WINDOW_*`.
    pub window: u32,
    /// With `DM_WINDOW_EXPLICIT`: the window in modality units and its function (`DM_VOI_*`).
    pub window_center: f64,
    pub window_width: f64,
    pub voi_function: u32,
}

impl Default for dm_image_options {
    fn default() -> Self {
        dm_image_options {
            struct_size: std::mem::size_of::<dm_image_options>(),
            frame: 0,
            window: DM_WINDOW_FILE,
            window_center: 0.0,
            window_width: 0.0,
            voi_function: DM_VOI_LINEAR,
        }
    }
}

/// What an image is and, for DICOM, where it belongs. The strings are NUL-terminated UTF-8 owned by
/// the image (valid until `dm_image_free`), NULL when the file lacks the attribute or is not DICOM.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_image_info {
    pub struct_size: usize,
    pub width: u32,
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u32,
    /// 1 when the image came from a DICOM file, 0 for PNG/JPEG.
    pub is_dicom: u32,
    /// Frames of the DICOM image (1 for PNG/JPEG).
    pub frames: u32,
    /// Millimetres between pixel centres (row, column); NaN when unknown.
    pub pixel_spacing_row: f64,
    pub pixel_spacing_column: f64,
    pub patient_id: *const c_char,
    pub patient_name: *const c_char,
    pub study_instance_uid: *const c_char,
    pub series_instance_uid: *const c_char,
    pub sop_instance_uid: *const c_char,
    pub sop_class_uid: *const c_char,
    pub modality: *const c_char,
    pub view_position: *const c_char,
    pub transfer_syntax_uid: *const c_char,
}

/// The object behind a `dm_image`: the image and its metadata as C strings.
struct LoadedImage {
    image: OwnedImage,
    strings: [Option<CString>; 9],
}

// SAFETY: the C strings are only read, and their pointers are handed out for reading only.
unsafe impl Send for LoadedImage {}
// SAFETY: as above: nothing in a LoadedImage changes after it is made.
unsafe impl Sync for LoadedImage {}

impl LoadedImage {
    fn new(image: OwnedImage) -> Self {
        let m = image.metadata.clone().unwrap_or_default();
        let text = |s: &Option<String>| s.as_deref().and_then(|s| CString::new(s).ok());
        let transfer_syntax = image.metadata.as_ref().and_then(|m| CString::new(m.transfer_syntax_uid.as_str()).ok());
        let strings = [
            text(&m.patient_id),
            text(&m.patient_name),
            text(&m.study_instance_uid),
            text(&m.series_instance_uid),
            text(&m.sop_instance_uid),
            text(&m.sop_class_uid),
            text(&m.modality),
            text(&m.view_position),
            transfer_syntax,
        ];
        LoadedImage { image, strings }
    }

    fn info(&self) -> dm_image_info {
        let image = &self.image;
        let metadata: Option<&Metadata> = image.metadata.as_ref();
        let spacing = metadata.and_then(|m| m.pixel_spacing).unwrap_or([f64::NAN; 2]);
        let s = |i: usize| self.strings[i].as_ref().map_or(null(), |c| c.as_ptr());
        dm_image_info {
            struct_size: std::mem::size_of::<dm_image_info>(),
            width: image.width as u32,
            height: image.height as u32,
            channels: image.channels as u32,
            is_dicom: metadata.is_some() as u32,
            frames: metadata.map_or(1, |m| m.frames as u32),
            pixel_spacing_row: spacing[0],
            pixel_spacing_column: spacing[1],
            patient_id: s(0),
            patient_name: s(1),
            study_instance_uid: s(2),
            series_instance_uid: s(3),
            sop_instance_uid: s(4),
            sop_class_uid: s(5),
            modality: s(6),
            view_position: s(7),
            transfer_syntax_uid: s(8),
        }
    }
}

/// Fills `options` with the defaults: frame 0, the file's window.
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_image_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_image_options_default(options: *mut dm_image_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_image_options::default(), options, "options") })
}

fn dicom_options(o: &dm_image_options) -> FfiResult<DicomOptions> {
    let function = match o.voi_function {
        DM_VOI_LINEAR => VoiFunction::Linear,
        DM_VOI_LINEAR_EXACT => VoiFunction::LinearExact,
        DM_VOI_SIGMOID => VoiFunction::Sigmoid,
        other => return Err(FfiError::Invalid(format!("`options.voi_function` = {other} is not a DM_VOI_* value"))),
    };
    let window = match o.window {
        DM_WINDOW_FILE => Window::File,
        DM_WINDOW_MIN_MAX => Window::MinMax,
        DM_WINDOW_EXPLICIT => Window::Explicit { center: o.window_center, width: o.window_width, function },
        other => return Err(FfiError::Invalid(format!("`options.window` = {other} is not a DM_WINDOW_* value"))),
    };
    Ok(DicomOptions { frame: o.frame as usize, window })
}

/// Reads options (NULL for the defaults) and registers the image `load` makes into `*out_image`.
///
/// # Safety
/// `options` must be NULL or a valid options struct; `out_image` NULL or writable.
unsafe fn open_with(
    options: *const dm_image_options,
    out_image: *mut *mut dm_image,
    load: impl FnOnce(&DicomOptions) -> crate::Result<OwnedImage>,
) -> FfiResult<()> {
    if out_image.is_null() {
        return Err(FfiError::Null("out_image"));
    }
    let min_size = std::mem::size_of::<dm_image_options>();
    // SAFETY: forwarded to the caller's contract.
    let options = dicom_options(&unsafe { read_options(options, dm_image_options::default(), min_size, "options") }?)?;
    let image = LoadedImage::new(load(&options)?);
    // SAFETY: checked non-NULL above; writable by the caller's contract.
    unsafe { write_value(handle::register::<LoadedImage, dm_image>(image), out_image, "out_image") }
}

/// Opens a DICOM, PNG or JPEG file (told apart by content) at `path` (UTF-8). `options` may be NULL
/// for the defaults. On success `*out_image` owns a new image, released with `dm_image_free`.
/// A malformed file gives `DM_ERR_INVALID_DATA`, a transfer syntax or format this build cannot decode
/// `DM_ERR_UNSUPPORTED`, each with a message naming the file and the problem.
///
/// # Safety
/// `path` must be a NUL-terminated string; `options` NULL or a valid options struct; `out_image` NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_image_open(path: *const c_char, options: *const dm_image_options, out_image: *mut *mut dm_image) -> dm_status {
    guard(|| {
        // SAFETY: the caller's contract covers each pointer.
        let path = unsafe { required_str(path, "path") }?;
        // SAFETY: as above.
        unsafe { open_with(options, out_image, |o| dicom::open_image(Path::new(path), o)) }
    })
}

/// As `dm_image_open`, from the `data_len` bytes of a file held in memory. The image does not keep
/// the buffer: it may be released when the call returns.
///
/// # Safety
/// `data` must be NULL or point to `data_len` readable bytes; `options` NULL or a valid options
/// struct; `out_image` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_image_open_buffer(data: *const u8, data_len: usize, options: *const dm_image_options, out_image: *mut *mut dm_image) -> dm_status {
    guard(|| {
        // SAFETY: the caller's contract covers each pointer.
        let bytes = unsafe { input_slice(data, data_len, "data") }?;
        // SAFETY: as above.
        unsafe { open_with(options, out_image, |o| dicom::image_from_bytes(bytes, "<buffer>", o)) }
    })
}

/// Releases an image. NULL is accepted; a handle that is not a live image gives
/// `DM_ERR_INVALID_HANDLE`. Views handed out by `dm_image_get_view` end with it.
#[no_mangle]
pub extern "C" fn dm_image_free(image: *mut dm_image) -> dm_status {
    guard(|| handle::release::<LoadedImage, dm_image>(image, "image"))
}

fn image_ref(image: *const dm_image) -> FfiResult<std::sync::Arc<LoadedImage>> {
    handle::get::<LoadedImage, dm_image>(image, "image")
}

/// Writes a view of the image's pixels (`DM_PIXEL_F32`, values in [0, 1], 1 or 3 channels) into
/// `*out_view`, ready for `dm_model_encode`, `dm_typicality_map` and the like. The pixels belong to
/// the image: the view is valid until `dm_image_free`.
///
/// # Safety
/// `out_view` must be NULL or point to a writable `dm_image_view`.
#[no_mangle]
pub unsafe extern "C" fn dm_image_get_view(image: *const dm_image, out_view: *mut dm_image_view) -> dm_status {
    guard(|| {
        let loaded = image_ref(image)?;
        let v = loaded.image.view();
        let view = dm_image_view {
            data: v.data.as_ptr() as *const c_void,
            data_len: v.data.len(),
            width: v.width as u32,
            height: v.height as u32,
            channels: v.channels as u32,
            pixel_type: DM_PIXEL_F32,
            stride: v.stride,
        };
        // SAFETY: forwarded to the caller's contract.
        unsafe { write_value(view, out_view, "out_view") }
    })
}

/// Writes the image's size and metadata into `*out_info`, whose `struct_size` the caller sets
/// (`sizeof(dm_image_info)`); only that many bytes are written. Its strings live as long as the image.
///
/// # Safety
/// `out_info` must be NULL or point to a writable struct of `out_info->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn dm_image_get_info(image: *const dm_image, out_info: *mut dm_image_info) -> dm_status {
    guard(|| {
        let info = image_ref(image)?.info();
        // This is the struct's first version: every caller knows all of it.
        let min_size = std::mem::size_of::<dm_image_info>();
        // SAFETY: forwarded to the caller's contract.
        unsafe { write_sized(info, out_info, min_size, "out_info") }
    })
}
