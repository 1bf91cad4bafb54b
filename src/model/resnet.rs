//! Residual blocks and the resampling layers shared by the UNet and the VAE.
use tch::Tensor;

use super::nn::{share_first_row, Conv2d, GroupNorm, Linear};
use super::weights::WeightPath;
use crate::error::Result;

pub struct ResnetShape {
    pub c_in: i64,
    pub c_out: i64,
    /// Width of the time embedding; None in the VAE, which has no time conditioning.
    pub temb: Option<i64>,
    pub groups: i64,
    pub eps: f64,
    pub output_scale: f64,
}

/// diffusers' `ResnetBlock2D` with the default time-scale-shift (the embedding is added).
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale: f64,
}

impl ResnetBlock2D {
    pub(crate) fn load(p: &WeightPath, s: &ResnetShape) -> Result<Self> {
        let time_emb_proj = s.temb.map(|t| Linear::load(&p.sub("time_emb_proj"), t, s.c_out, true)).transpose()?;
        let conv_shortcut = if s.c_in != s.c_out { Some(Conv2d::load(&p.sub("conv_shortcut"), s.c_in, s.c_out, 1, 1, 0)?) } else { None };
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(&p.sub("norm1"), s.groups, s.c_in, s.eps)?,
            conv1: Conv2d::load(&p.sub("conv1"), s.c_in, s.c_out, 3, 1, 1)?,
            time_emb_proj,
            norm2: GroupNorm::load(&p.sub("norm2"), s.groups, s.c_out, s.eps)?,
            conv2: Conv2d::load(&p.sub("conv2"), s.c_out, s.c_out, 3, 1, 1)?,
            conv_shortcut,
            output_scale: s.output_scale,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with(x, temb, false)
    }

    /// The forward with batch row 0's residual branch (after `conv2`, before the skip is added) given
    /// to every row: Plug-and-Play's feature injection.
    pub fn forward_sharing_first_row(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with(x, temb, true)
    }

    fn forward_with(&self, x: &Tensor, temb: Option<&Tensor>, share_first_row_residual: bool) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward(x)?.f_silu()?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(&temb.f_silu()?)?;
            h = h.f_add(&t.f_unsqueeze(-1)?.f_unsqueeze(-1)?)?;
        }
        let mut h = self.conv2.forward(&self.norm2.forward(&h)?.f_silu()?)?;
        if share_first_row_residual {
            h = share_first_row(&h)?;
        }
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.shallow_clone(),
        };
        let sum = shortcut.f_add(&h)?;
        Ok(if self.output_scale == 1.0 { sum } else { sum.f_div_scalar(self.output_scale)? })
    }
}

/// Stride-2 convolution (`downsamplers.0.conv`). With padding 0 (the VAE) diffusers pads only the
/// right and bottom edges by one first, which keeps odd sizes aligned the way the checkpoints expect.
pub struct Downsample2D {
    conv: Conv2d,
    asymmetric_pad: bool,
}

impl Downsample2D {
    pub(crate) fn load(p: &WeightPath, channels: i64, padding: i64) -> Result<Self> {
        Ok(Downsample2D { conv: Conv2d::load(&p.sub("conv"), channels, channels, 3, 2, padding)?, asymmetric_pad: padding == 0 })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.asymmetric_pad {
            self.conv.forward(&x.f_constant_pad_nd([0, 1, 0, 1])?)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Nearest-neighbour ×2 upsampling (or to an explicit size, for latents whose sides are not multiples
/// of the UNet's down-sampling factor) followed by a 3×3 convolution (`upsamplers.0.conv`).
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub(crate) fn load(p: &WeightPath, channels: i64) -> Result<Self> {
        Ok(Upsample2D { conv: Conv2d::load(&p.sub("conv"), channels, channels, 3, 1, 1)? })
    }

    pub fn forward(&self, x: &Tensor, size: Option<(i64, i64)>) -> Result<Tensor> {
        let (_, _, h, w) = x.size4()?;
        let (out_h, out_w) = size.unwrap_or((h * 2, w * 2));
        let up = x.f_upsample_nearest2d([out_h, out_w], None, None)?;
        self.conv.forward(&up)
    }
}
