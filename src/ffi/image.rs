//! `dm_image_view`: the one way images enter the C API, a borrowed pixel buffer with its geometry.
use std::ffi::c_void;

use super::error::{FfiError, FfiResult};
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
