//! Finetuning the UNet of a loaded model on labelled images, the paper's first step: the DDPM loss
//! (MSE between the UNet's prediction and the noise, or v for v-models) at t uniform over the training
//! steps, AdamW with gradient clipping, constant learning rate, f32; VAE and text encoder frozen. The
//! result is saved as a diffusers folder that libdiffmine and diffusers both load.
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::scheduler::PredictionType;
use crate::model::StableDiffusion;

/// The optimiser and loss settings (defaults: the spec's recipe).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    /// Gradients are scaled so their global 2-norm is at most this (0 disables clipping).
    pub max_grad_norm: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions { learning_rate: 1e-4, beta1: 0.9, beta2: 0.999, weight_decay: 1e-2, eps: 1e-8, max_grad_norm: 1.0 }
    }
}

/// AdamW with decoupled weight decay, step for step as `torch.optim.AdamW` (no amsgrad).
struct AdamW {
    options: TrainOptions,
    first_moments: Vec<Tensor>,
    second_moments: Vec<Tensor>,
    steps: i32,
}

impl AdamW {
    fn new(parameters: &[Tensor], options: TrainOptions) -> Result<Self> {
        let zeros = |p: &Tensor| p.f_zeros_like();
        Ok(AdamW {
            first_moments: parameters.iter().map(zeros).collect::<std::result::Result<_, _>>()?,
            second_moments: parameters.iter().map(zeros).collect::<std::result::Result<_, _>>()?,
            options,
            steps: 0,
        })
    }

    /// Updates every parameter in place from its gradient.
    fn step(&mut self, parameters: &[Tensor]) -> Result<()> {
        self.steps += 1;
        let o = &self.options;
        let bias1 = 1.0 - o.beta1.powi(self.steps);
        let bias2_sqrt = (1.0 - o.beta2.powi(self.steps)).sqrt();
        let step_size = o.learning_rate / bias1;
        tch::no_grad(|| -> Result<()> {
            for ((p, m), v) in parameters.iter().zip(&mut self.first_moments).zip(&mut self.second_moments) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let mut p = p.shallow_clone();
                // In-place updates return another handle to the same storage, not needed here.
                let _ = p.f_mul_scalar_(1.0 - o.learning_rate * o.weight_decay)?;
                let _ = m.f_mul_scalar_(o.beta1)?.f_add_(&grad.f_mul_scalar(1.0 - o.beta1)?)?;
                let _ = v.f_mul_scalar_(o.beta2)?.f_add_(&grad.f_square()?.f_mul_scalar(1.0 - o.beta2)?)?;
                let denom = v.f_sqrt()?.f_div_scalar(bias2_sqrt)?.f_add_scalar(o.eps)?;
                let _ = p.f_sub_(&m.f_div(&denom)?.f_mul_scalar(step_size)?)?;
            }
            Ok(())
        })
    }
}

/// What one optimiser step saw.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub loss: f64,
    /// The gradients' global 2-norm before clipping.
    pub grad_norm: f64,
}

/// Trains the UNet of a model it owns (training writes the weights, so the model cannot be shared
/// with inference while it runs).
pub struct Trainer {
    model: StableDiffusion,
    parameters: Vec<Tensor>,
    optimizer: AdamW,
}

impl Trainer {
    pub fn new(model: StableDiffusion, options: TrainOptions) -> Result<Self> {
        if model.dtype() != Kind::Float {
            return Err(Error::InvalidArgument("finetuning runs in float32: open the model with dtype float32".into()));
        }
        let parameters: Vec<Tensor> = model.unet_parameters().iter().map(|(_, t)| t.shallow_clone()).collect();
        for p in &parameters {
            let mut p = p.shallow_clone();
            let _ = p.f_requires_grad_(true)?;
        }
        let optimizer = AdamW::new(&parameters, options)?;
        Ok(Trainer { model, parameters, optimizer })
    }

    pub fn model(&self) -> &StableDiffusion {
        &self.model
    }

    /// Gives the model back for inference.
    pub fn into_model(self) -> StableDiffusion {
        for p in &self.parameters {
            let mut p = p.shallow_clone();
            let _ = p.f_requires_grad_(false);
        }
        self.model
    }

    /// One optimiser step on clean latents (B, C, h, w) with the given noise, integer timesteps (B,)
    /// and text embeddings (B, L, D).
    pub fn step(&mut self, latents: &Tensor, noise: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<StepReport> {
        let _span = tracing::debug_span!("train_step").entered();
        let loss = self.loss(latents, noise, timesteps, context)?;
        for p in &self.parameters {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
        loss.f_backward()?;
        let grad_norm = self.clip_gradients()?;
        self.optimizer.step(&self.parameters)?;
        Ok(StepReport { loss: loss.f_double_value(&[])?, grad_norm })
    }

    /// The parameters' current gradients by name (after a step: clipped), for inspection and tests.
    pub fn gradients(&self) -> Vec<(String, Tensor)> {
        self.model.unet_parameters().iter().map(|(name, p)| (name.clone(), p.grad())).collect()
    }

    /// The DDPM training loss: MSE between the UNet output and its target (the noise for ε-models,
    /// v = √ᾱ ε − √(1−ᾱ) x₀ for v-models).
    fn loss(&self, latents: &Tensor, noise: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor> {
        let device = self.model.device();
        let (x0, eps, ctx) = (latents.f_to_device(device)?, noise.f_to_device(device)?, context.f_to_device(device)?);
        let t = timesteps.f_to_kind(Kind::Int64)?.f_to_device(device)?;
        let schedule = self.model.schedule();
        let noisy = schedule.add_noise(&x0, &eps, &t)?;
        let target = match schedule.prediction_type() {
            PredictionType::Epsilon => eps,
            PredictionType::VPrediction => schedule.velocity(&x0, &eps, &t)?,
        };
        let prediction = self.model.unet().forward(&noisy, &t, &ctx)?;
        Ok(prediction.f_mse_loss(&target, tch::Reduction::Mean)?)
    }

    /// Scales all gradients so their global norm is at most `max_grad_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` does; returns the norm before clipping.
    fn clip_gradients(&self) -> Result<f64> {
        let grads: Vec<Tensor> = self.parameters.iter().map(|p| p.grad()).filter(|g| g.defined()).collect();
        let norms: Vec<Tensor> = grads.iter().map(|g| g.f_norm()).collect::<std::result::Result<_, _>>()?;
        let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
        let max_norm = self.optimizer.options.max_grad_norm;
        if max_norm > 0.0 {
            let coefficient = total.f_add_scalar(1e-6)?.f_reciprocal()?.f_mul_scalar(max_norm)?.f_clamp_max(1.0)?;
            tch::no_grad(|| -> Result<()> {
                for g in &grads {
                    let mut g = g.shallow_clone();
                    let _ = g.f_mul_(&coefficient)?;
                }
                Ok(())
            })?;
        }
        Ok(total.f_double_value(&[])?)
    }

    /// Writes the model as a diffusers folder: the trained UNet (`unet/config.json` and
    /// `diffusion_pytorch_model.safetensors`) plus the other components copied from `source`, the
    /// folder the model was loaded from, so the result loads on its own.
    pub fn save(&self, source: &Path, out: &Path) -> Result<()> {
        save_unet(&self.model, &out.join("unet"))?;
        for component in ["vae", "text_encoder", "tokenizer", "scheduler"] {
            copy_dir(&source.join(component), &out.join(component))?;
        }
        let index = source.join("model_index.json");
        std::fs::copy(&index, out.join("model_index.json")).map_err(|e| Error::io(&index, e))?;
        Ok(())
    }
}

/// Writes a model's UNet as a diffusers component folder.
pub fn save_unet(model: &StableDiffusion, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config = serde_json::to_string_pretty(model.unet_config_json()).expect("a JSON value serialises");
    std::fs::write(dir.join("config.json"), config).map_err(|e| Error::io(dir, e))?;
    let tensors: Vec<(String, Tensor)> = model
        .unet_parameters()
        .iter()
        .map(|(name, t)| Ok((name.clone(), t.f_detach()?.f_to_device(tch::Device::Cpu)?.f_contiguous()?)))
        .collect::<Result<_>>()?;
    let path = dir.join("diffusion_pytorch_model.safetensors");
    Tensor::write_safetensors(&tensors, &path).map_err(|e| Error::io(&path, e))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let path = entry.map_err(|e| Error::io(from, e))?.path();
        if path.is_file() {
            let target = to.join(path.file_name().expect("a file has a name"));
            std::fs::copy(&path, &target).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}
