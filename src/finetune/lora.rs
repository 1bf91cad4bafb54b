//! LoRA training: low-rank adapters on the UNet's attention projections, trained while every base
//! weight stays frozen (no gradient, no optimiser state, never written, so weights mapped from their
//! files stay shared with the page cache).
//!
//! Each adapted layer computes W x + b + (alpha / rank) · B (A x), as peft's `lora.Linear` does; A
//! (rank, in) starts uniform in ±1/√in (peft's `kaiming_uniform_(a=√5)`) and B (out, rank) at zero,
//! so training starts from the base model exactly. The draws come from the run's own random stream.
//!
//! The result is `pytorch_lora_weights.safetensors` in diffusers/peft naming
//! (`unet.<module>.lora_A.weight` / `lora_B.weight`), the file diffusers' training script writes and
//! `load_lora_weights` reads. The file carries no alpha: diffusers' loader assumes alpha = rank, so B
//! is written multiplied by alpha / rank, which is the same adapter for every reader.
use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::nn::LowRankAdapter;
use crate::model::StableDiffusion;
use crate::rng::SplitMix64;

/// The file name diffusers writes and `load_lora_weights` looks for in a folder.
pub const LORA_WEIGHTS_FILE: &str = "pytorch_lora_weights.safetensors";

/// The projections an adapter may go on (leaf names of diffusers' attention modules).
pub const LORA_TARGETS: [&str; 4] = ["to_q", "to_k", "to_v", "to_out.0"];

/// Which adapters to train (defaults: rank 4, alpha = rank, all four attention projections, as
/// diffusers' `train_text_to_image_lora.py`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraOptions {
    pub rank: usize,
    /// The adapter's output is scaled by alpha / rank (None: alpha = rank).
    pub alpha: Option<f64>,
    /// Leaf names of the projections to adapt, from [`LORA_TARGETS`].
    pub targets: Vec<String>,
}

impl Default for LoraOptions {
    fn default() -> Self {
        LoraOptions { rank: 4, alpha: None, targets: LORA_TARGETS.iter().map(|t| t.to_string()).collect() }
    }
}

impl LoraOptions {
    pub fn scaling(&self) -> f64 {
        self.alpha.unwrap_or(self.rank as f64) / self.rank as f64
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::InvalidArgument("LoRA rank must be at least 1".into()));
        }
        if let Some(alpha) = self.alpha.filter(|a| !(a.is_finite() && *a > 0.0)) {
            return Err(Error::InvalidArgument(format!("LoRA alpha must be positive and finite, got {alpha}")));
        }
        if self.targets.is_empty() {
            return Err(Error::InvalidArgument(format!("no LoRA targets given (choose from {})", LORA_TARGETS.join(", "))));
        }
        let unknown: Vec<&str> = self.targets.iter().map(String::as_str).filter(|t| !LORA_TARGETS.contains(t)).collect();
        if !unknown.is_empty() {
            return Err(Error::InvalidArgument(format!("unknown LoRA target {} (choose from {})", unknown.join(", "), LORA_TARGETS.join(", "))));
        }
        Ok(())
    }
}

/// The adapters under training: their factors by peft name (`<module>.lora_A.weight`,
/// `<module>.lora_B.weight`, in module order, A before B), the very tensors the layers use.
pub(super) struct Adapters {
    pub(super) parameters: Vec<(String, Tensor)>,
    scaling: f64,
}

impl Adapters {
    /// Attaches freshly initialised adapters to the model's target projections.
    pub(super) fn attach(model: &mut StableDiffusion, options: &LoraOptions, rng: &mut SplitMix64) -> Result<Self> {
        options.validate()?;
        let rank = options.rank as i64;
        let scaling = options.scaling();
        let mut parameters = Vec::new();
        for (module, layer) in model.unet_attention_projections_mut() {
            if !options.targets.iter().any(|t| module.ends_with(&format!(".{t}"))) {
                continue;
            }
            let (out_features, in_features) = layer.shape();
            let bound = 1.0 / (in_features as f64).sqrt();
            let values: Vec<f32> = (0..rank * in_features).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32).collect();
            let down = Tensor::from_slice(&values).f_reshape([rank, in_features])?.f_to_device(layer.device())?;
            let up = Tensor::f_zeros([out_features, rank], (Kind::Float, layer.device()))?;
            layer.set_adapter(Some(LowRankAdapter { down: down.shallow_clone(), up: up.shallow_clone(), scaling }));
            parameters.push((format!("{module}.lora_A.weight"), down));
            parameters.push((format!("{module}.lora_B.weight"), up));
        }
        Ok(Adapters { parameters, scaling })
    }

    /// Takes every adapter off the model: its layers are the base model's again.
    pub(super) fn detach(model: &mut StableDiffusion) {
        for (_, layer) in model.unet_attention_projections_mut() {
            layer.set_adapter(None);
        }
    }

    /// Writes `dir/pytorch_lora_weights.safetensors` (see the module doc for the naming and alpha).
    pub(super) fn save(&self, dir: &Path) -> Result<()> {
        let tensors = tch::no_grad(|| -> Result<Vec<(String, Tensor)>> {
            self.parameters
                .iter()
                .map(|(name, t)| {
                    let value = if name.ends_with(".lora_B.weight") { t.f_mul_scalar(self.scaling)? } else { t.f_detach()? };
                    Ok((format!("unet.{name}"), value.f_to_device(tch::Device::Cpu)?.f_contiguous()?))
                })
                .collect()
        })?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LORA_WEIGHTS_FILE);
        crate::io::write_atomic_with(&path, |temporary| Tensor::write_safetensors(&tensors, temporary).map_err(|e| Error::io(&path, e)))
    }

    /// Sets the factors to `values` (by name, as `parameters`), checking that every one is there with
    /// its shape; nothing changes when one is missing or misshapen.
    pub(super) fn set_values(&self, values: &HashMap<String, Tensor>, source: &Path) -> Result<()> {
        for (name, t) in &self.parameters {
            let value = values.get(name).ok_or_else(|| Error::MissingTensor { name: name.clone(), file: source.display().to_string() })?;
            if value.size() != t.size() {
                return Err(Error::InvalidArgument(format!("{}: {name} has shape {:?}, the adapter {:?}", source.display(), value.size(), t.size())));
            }
        }
        tch::no_grad(|| -> Result<()> {
            for (name, t) in &self.parameters {
                t.shallow_clone().f_copy_(&values[name])?;
            }
            Ok(())
        })
    }
}
