//! Sinusoidal timestep features and the MLP that embeds them (diffusers' `Timesteps` and
//! `TimestepEmbedding`).
use tch::{Kind, Tensor};

use super::nn::Linear;
use super::weights::WeightPath;
use crate::error::Result;

/// Sinusoidal features of `timesteps` (B,), as diffusers' `get_timestep_embedding`, in f32. The
/// operation order (exponent, division, exp, product) follows diffusers so f32 results agree bit-for-bit
/// in the common case.
pub fn timestep_features(timesteps: &Tensor, dim: i64, flip_sin_to_cos: bool, freq_shift: f64) -> Result<Tensor> {
    let half = dim / 2;
    let device = timesteps.device();
    let exponent = Tensor::f_arange(half, (Kind::Float, device))?.f_mul_scalar(-(10000f64).ln())?.f_div_scalar(half as f64 - freq_shift)?;
    let freqs = exponent.f_exp()?;
    let args = timesteps.f_to_kind(Kind::Float)?.f_unsqueeze(1)?.f_mul(&freqs.f_unsqueeze(0)?)?;
    let (sin, cos) = (args.f_sin()?, args.f_cos()?);
    let features = if flip_sin_to_cos { Tensor::f_cat(&[cos, sin], -1)? } else { Tensor::f_cat(&[sin, cos], -1)? };
    Ok(if dim % 2 == 1 { features.f_constant_pad_nd([0, 1])? } else { features })
}

pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub(crate) fn load(p: &WeightPath, in_dim: i64, out_dim: i64) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: Linear::load(&p.sub("linear_1"), in_dim, out_dim, true)?,
            linear_2: Linear::load(&p.sub("linear_2"), out_dim, out_dim, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.f_silu()?)
    }
}
