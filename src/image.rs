//! Borrowed pixel buffers as callers hand them in (any row stride, 1/3/4 channels, 8/16-bit or float),
//! and their conversion to the model's RGB input in [-1, 1].
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelType {
    U8,
    U16,
    /// Values in [0, 1].
    F32,
}

impl PixelType {
    pub fn bytes(self) -> usize {
        match self {
            PixelType::U8 => 1,
            PixelType::U16 => 2,
            PixelType::F32 => 4,
        }
    }
}

/// A borrowed image: `height` rows of `width` pixels of `channels` samples, rows `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    /// 1 (grey, replicated to RGB), 3 (RGB) or 4 (RGBA, alpha ignored).
    pub channels: usize,
    pub stride: usize,
    pub pixel: PixelType,
}

impl<'a> ImageView<'a> {
    /// Checks the view's geometry against its buffer.
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::InvalidArgument(format!("image has a zero side ({}×{})", self.width, self.height)));
        }
        if ![1, 3, 4].contains(&self.channels) {
            return Err(Error::InvalidArgument(format!("image has {} channels (1, 3 or 4 supported)", self.channels)));
        }
        let too_large = || {
            Error::InvalidArgument(format!("image size {}×{}×{} (stride {}) overflows the address space", self.width, self.height, self.channels, self.stride))
        };
        let row = self.width.checked_mul(self.channels * self.pixel.bytes()).ok_or_else(too_large)?;
        if self.stride < row {
            return Err(Error::InvalidArgument(format!("image row stride {} is smaller than a row ({row} bytes)", self.stride)));
        }
        let needed = self.stride.checked_mul(self.height - 1).and_then(|n| n.checked_add(row)).ok_or_else(too_large)?;
        if self.data.len() < needed {
            return Err(Error::InvalidArgument(format!(
                "image buffer holds {} bytes, its stated size ({}×{}×{}, stride {}) needs {needed}",
                self.data.len(),
                self.width,
                self.height,
                self.channels,
                self.stride
            )));
        }
        Ok(())
    }

    /// The image as a (1, 3, H, W) f32 tensor in [-1, 1]: x/255·2-1 for 8 bits, in that order, as
    /// diffusers' image processor computes it.
    pub fn to_model_input(&self) -> Result<Tensor> {
        self.validate()?;
        let (w, h, c) = (self.width, self.height, self.channels);
        let mut rgb = vec![0f32; 3 * w * h];
        for y in 0..h {
            let row = &self.data[y * self.stride..];
            for x in 0..w {
                for out_c in 0..3 {
                    let in_c = if c == 1 { 0 } else { out_c };
                    let value = self.sample(row, x * c + in_c);
                    rgb[out_c * w * h + y * w + x] = value * 2.0 - 1.0;
                }
            }
        }
        Ok(Tensor::from_slice(&rgb).f_reshape([1, 3, h as i64, w as i64])?)
    }

    /// The model input of the image resized so that its shorter side is `short_side` pixels (Lanczos3,
    /// aspect ratio kept, sides rounded), or at its own size when `short_side` is None.
    pub fn to_model_input_resized(&self, short_side: Option<usize>) -> Result<Tensor> {
        let input = self.to_model_input()?;
        match short_side {
            None => Ok(input),
            Some(side) => resize_short_side(&input, side),
        }
    }

    /// Sample `index` of a row, scaled to [0, 1].
    fn sample(&self, row: &[u8], index: usize) -> f32 {
        match self.pixel {
            PixelType::U8 => row[index] as f32 / 255.0,
            PixelType::U16 => u16::from_ne_bytes([row[2 * index], row[2 * index + 1]]) as f32 / 65535.0,
            PixelType::F32 => f32::from_ne_bytes(row[4 * index..4 * index + 4].try_into().expect("4 bytes")),
        }
    }
}

/// The size (height, width) an image of `height` × `width` has after resizing its shorter side to
/// `short_side`; an error when that size cannot be computed with: sides beyond the resampler's 32
/// bits, or an RGB float image larger than the address space.
pub fn resized_size(height: usize, width: usize, short_side: usize) -> Result<(usize, usize)> {
    if short_side == 0 {
        return Err(Error::InvalidArgument("the resize target side must be positive".into()));
    }
    let scale = short_side as f64 / height.min(width) as f64;
    let side = |s: usize| (s as f64 * scale).round().max(1.0);
    let (h, w) = (side(height), side(width));
    let bytes = 3.0 * 4.0 * h * w;
    if h > u32::MAX as f64 || w > u32::MAX as f64 || bytes > isize::MAX as f64 {
        return Err(Error::InvalidArgument(format!(
            "resizing the {height}×{width} image to a shorter side of {short_side} gives {h}×{w} pixels, more than can be computed"
        )));
    }
    Ok((h as usize, w as usize))
}

/// Resizes a (1, 3, H, W) model input with Lanczos3 so its shorter side is `short_side`.
fn resize_short_side(input: &Tensor, short_side: usize) -> Result<Tensor> {
    let (_, _, h, w) = input.size4()?;
    let (new_h, new_w) = resized_size(h as usize, w as usize, short_side)?;
    // The image crate clamps float pixels to [0, 1] while resampling, so resample in that range.
    let unit = input.f_get(0)?.f_add_scalar(1.0)?.f_div_scalar(2.0)?;
    let interleaved = Vec::<f32>::try_from(unit.f_permute([1, 2, 0])?.f_contiguous()?.f_flatten(0, -1)?)?;
    let buffer = image::Rgb32FImage::from_raw(w as u32, h as u32, interleaved).expect("buffer holds H × W × 3 values");
    let resized = image::imageops::resize(&buffer, new_w as u32, new_h as u32, image::imageops::FilterType::Lanczos3);
    let out = Tensor::from_slice(resized.as_raw()).f_reshape([new_h as i64, new_w as i64, 3])?;
    Ok(out.f_permute([2, 0, 1])?.f_unsqueeze(0)?.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?.f_contiguous()?)
}

/// Images (B, 3, H, W) about [-1, 1] to interleaved RGB bytes (H, W, 3) of the first image, rounded
/// as diffusers' `numpy_to_pil` does: ((x / 2 + 0.5) clamped to [0, 1] · 255).round().
pub fn to_rgb8(images: &Tensor) -> Result<Vec<u8>> {
    let first = images.f_get(0)?;
    let scaled = first
        .f_div_scalar(2.0)?
        .f_add_scalar(0.5)?
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_permute([1, 2, 0])?
        .f_contiguous()?
        .f_to_kind(Kind::Uint8)?;
    Ok(Vec::<u8>::try_from(scaled.f_flatten(0, -1)?)?)
}

/// The first image of a batch (B, 3, H, W) about [-1, 1] as an 8-bit RGB image, rounded as [`to_rgb8`].
pub fn to_rgb_image(images: &Tensor) -> Result<image::RgbImage> {
    let (_, _, h, w) = images.size4()?;
    image::RgbImage::from_raw(w as u32, h as u32, to_rgb8(images)?)
        .ok_or_else(|| Error::InvalidArgument(format!("images {:?} are not (B, 3, H, W)", images.size())))
}
