//! The plain layers the networks are built from, each holding the tensors read from the weight files
//! under diffusers' names. Forwards are fallible: a caller's input of the wrong shape is an error.
use tch::Tensor;

use super::weights::WeightPath;
use crate::error::Result;

pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    adapter: Option<LowRankAdapter>,
}

/// A LoRA adapter applied on the fly, as peft's `lora.Linear` does: the layer computes
/// W x + b + scaling · B (A x), with A (rank, in) and B (out, rank), leaving W itself untouched.
pub struct LowRankAdapter {
    pub down: Tensor,
    pub up: Tensor,
    pub scaling: f64,
}

impl Linear {
    pub(crate) fn load(p: &WeightPath, in_features: i64, out_features: i64, bias: bool) -> Result<Self> {
        let weight = p.get("weight", &[out_features, in_features])?;
        let bias = if bias { Some(p.get("bias", &[out_features])?) } else { None };
        Ok(Linear { weight, bias, adapter: None })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let base = x.f_linear(&self.weight, self.bias.as_ref())?;
        match &self.adapter {
            None => Ok(base),
            Some(a) => Ok(base.f_add(&x.f_linear::<&Tensor>(&a.down, None)?.f_linear::<&Tensor>(&a.up, None)?.f_mul_scalar(a.scaling)?)?),
        }
    }

    /// (out_features, in_features).
    pub fn shape(&self) -> (i64, i64) {
        let size = self.weight.size();
        (size[0], size[1])
    }

    pub fn device(&self) -> tch::Device {
        self.weight.device()
    }

    /// Applies `adapter` from now on (None: the plain layer again).
    pub fn set_adapter(&mut self, adapter: Option<LowRankAdapter>) {
        self.adapter = adapter;
    }
}

pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub(crate) fn load(p: &WeightPath, c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64) -> Result<Self> {
        let weight = p.get("weight", &[c_out, c_in, kernel, kernel])?;
        let bias = p.get("bias", &[c_out])?;
        Ok(Conv2d { weight, bias, stride, padding })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv2d(&self.weight, Some(&self.bias), [self.stride; 2], [self.padding; 2], [1, 1], 1)?)
    }
}

pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub(crate) fn load(p: &WeightPath, groups: i64, channels: i64, eps: f64) -> Result<Self> {
        Ok(GroupNorm { weight: p.get("weight", &[channels])?, bias: p.get("bias", &[channels])?, groups, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_group_norm(self.groups, Some(&self.weight), Some(&self.bias), self.eps, true)?)
    }
}

pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
    eps: f64,
}

impl LayerNorm {
    pub(crate) fn load(p: &WeightPath, dim: i64, eps: f64) -> Result<Self> {
        Ok(LayerNorm { weight: p.get("weight", &[dim])?, bias: p.get("bias", &[dim])?, dim, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_layer_norm([self.dim], Some(&self.weight), Some(&self.bias), self.eps, true)?)
    }
}

pub struct Embedding {
    weight: Tensor,
}

impl Embedding {
    pub(crate) fn load(p: &WeightPath, count: i64, dim: i64) -> Result<Self> {
        Ok(Embedding { weight: p.get("weight", &[count, dim])? })
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(Tensor::f_embedding(&self.weight, ids, -1, false, false)?)
    }
}

/// Splits the last dimension into heads: (B, L, H·D) → (B, H, L, D).
pub fn split_heads(x: &Tensor, heads: i64) -> Result<Tensor> {
    let (b, l, inner) = x.size3()?;
    Ok(x.f_reshape([b, l, heads, inner / heads])?.f_transpose(1, 2)?)
}

/// Joins heads back: (B, H, L, D) → (B, L, H·D).
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, l, d) = x.size4()?;
    Ok(x.f_transpose(1, 2)?.f_reshape([b, l, h * d])?)
}

/// Batch row 0 repeated over the whole batch: how Plug-and-Play hands the source branch's features
/// (row 0) to every other row.
pub fn share_first_row(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_narrow(0, 0, 1)?.f_expand_as(x)?)
}
