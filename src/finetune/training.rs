//! One training step of a model's UNet: the DDPM loss on noised latents, back-propagation (optionally
//! through checkpointed blocks and under bf16 autocast), gradient clipping and AdamW.
use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

use super::adamw::AdamW;
use super::export::{save_unet, ComponentSources};
use super::lora::{Adapters, LoraOptions};
use crate::error::{Error, Result};
use crate::model::autocast::AutocastGuard;
use crate::model::scheduler::PredictionType;
use crate::model::StableDiffusion;
use crate::rng::SplitMix64;

/// The optimiser and loss settings (defaults: the paper's recipe).
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

pub(crate) fn require_f32(model: &StableDiffusion) -> Result<()> {
    if model.dtype() != Kind::Float {
        return Err(Error::InvalidArgument("training runs in float32: open the model with dtype float32".into()));
    }
    Ok(())
}

/// What one optimiser step saw.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub loss: f64,
    /// The gradients' global 2-norm before clipping.
    pub grad_norm: f64,
}

/// Parameters under training: back-propagates a loss, clips the gradients and steps AdamW.
pub(crate) struct Optimization {
    parameters: Vec<Tensor>,
    /// The last step's clipped gradients, one per parameter. They come back from the autograd engine
    /// rather than being accumulated into each parameter's `grad`, which would zero and add into a
    /// second copy every step (two more passes over 3.4 GB for SD 1.5).
    gradients: Vec<Tensor>,
    pub(super) optimizer: AdamW,
}

impl Optimization {
    /// Marks `parameters` as trainable; `release` undoes it.
    pub(crate) fn new(parameters: &[(String, Tensor)], options: TrainOptions) -> Result<Self> {
        let parameters: Vec<Tensor> = parameters.iter().map(|(_, t)| t.shallow_clone()).collect();
        for p in &parameters {
            let _ = p.shallow_clone().f_requires_grad_(true)?;
        }
        let optimizer = AdamW::new(&parameters, options)?;
        Ok(Optimization { parameters, gradients: Vec::new(), optimizer })
    }

    pub(crate) fn release(&self) {
        for p in &self.parameters {
            let _ = p.shallow_clone().f_requires_grad_(false);
        }
    }

    /// One step on `loss`.
    pub(crate) fn step(&mut self, loss: &Tensor) -> Result<StepReport> {
        self.step_after(|parameters| Ok((loss.shallow_clone(), Tensor::f_run_backward(&[loss], parameters, false, false)?)))
    }

    /// One step on what `backward` returns for the parameters it is given: the loss and its
    /// gradient with respect to each.
    fn step_after(&mut self, backward: impl FnOnce(&[Tensor]) -> Result<(Tensor, Vec<Tensor>)>) -> Result<StepReport> {
        // Freed first, as `zero_grad(set_to_none=True)` does: kept, they would double the memory the
        // gradients take while the next ones are computed.
        self.gradients.clear();
        let (loss, gradients) = backward(&self.parameters)?;
        self.gradients = gradients;
        let grad_norm = self.clip_gradients()?;
        self.optimizer.step(&self.parameters, &self.gradients)?;
        Ok(StepReport { loss: loss.f_double_value(&[])?, grad_norm })
    }

    /// Scales all gradients so their global norm is at most `max_grad_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` does; returns the norm before clipping.
    fn clip_gradients(&self) -> Result<f64> {
        let grads: Vec<&Tensor> = self.gradients.iter().filter(|g| g.defined()).collect();
        let norms: Vec<Tensor> = grads.iter().map(|g| g.f_norm()).collect::<std::result::Result<_, _>>()?;
        let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
        let max_norm = self.optimizer.options.max_grad_norm;
        if max_norm > 0.0 {
            let coefficient = total.f_add_scalar(1e-6)?.f_reciprocal()?.f_mul_scalar(max_norm)?.f_clamp_max(1.0)?;
            tch::no_grad(|| -> Result<()> {
                for g in grads {
                    let _ = g.shallow_clone().f_mul_(&coefficient)?;
                }
                Ok(())
            })?;
        }
        Ok(total.f_double_value(&[])?)
    }
}

/// How a training step computes, for memory and speed; neither changes what it computes beyond
/// rounding. Both are what a GPU run of SD 1.5 at 512 px needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepCompute {
    /// Mixed precision (`torch.autocast`): bfloat16 for the ops libtorch lists, weights, gradients
    /// and optimiser state in float32 (None: all float32; float16 is refused, see `Trainer::new`).
    pub autocast: Option<Kind>,
    /// Recompute each UNet block in the backward pass instead of keeping its activations.
    pub gradient_checkpointing: bool,
}

impl StepCompute {
    /// The compute dtype as callers name it: float32 for no autocast, else autocast in that dtype.
    pub fn new(dtype: Kind, gradient_checkpointing: bool) -> Self {
        StepCompute { autocast: Some(dtype).filter(|&kind| kind != Kind::Float), gradient_checkpointing }
    }
}

/// What a trainer trains.
pub(super) enum Trained {
    /// Every UNet weight.
    Unet,
    /// LoRA adapters on the frozen UNet.
    Lora(Adapters),
}

/// Trains the UNet of a model it owns, whole or through LoRA adapters (training writes the weights
/// or the adapters the layers use, so the model cannot be shared with inference while it runs).
pub struct Trainer {
    pub(super) model: StableDiffusion,
    pub(super) optimization: Optimization,
    pub(super) trained: Trained,
    compute: StepCompute,
}

impl Trainer {
    /// Trains every UNet weight.
    pub fn new(model: StableDiffusion, options: TrainOptions, compute: StepCompute) -> Result<Self> {
        Self::check(&model, compute)?;
        let optimization = Optimization::new(&model.unet_weights().parameters, options)?;
        Ok(Trainer { model, optimization, trained: Trained::Unet, compute })
    }

    /// Trains LoRA adapters on the UNet's attention projections, initialised from `rng` (see
    /// [`super::lora`]); the base weights stay frozen.
    pub fn with_lora(mut model: StableDiffusion, options: TrainOptions, compute: StepCompute, lora: &LoraOptions, rng: &mut SplitMix64) -> Result<Self> {
        Self::check(&model, compute)?;
        let adapters = Adapters::attach(&mut model, lora, rng)?;
        let optimization = Optimization::new(&adapters.parameters, options)?;
        Ok(Trainer { model, optimization, trained: Trained::Lora(adapters), compute })
    }

    fn check(model: &StableDiffusion, compute: StepCompute) -> Result<()> {
        require_f32(model)?;
        match compute.autocast {
            // float16's narrow range makes small gradients underflow unless the loss is scaled, which
            // this trainer does not do (diffusers' scripts pair fp16 with a GradScaler).
            Some(Kind::Half) => return Err(Error::InvalidArgument("float16 autocast needs loss scaling, which finetuning does not do: use bfloat16".into())),
            // Refuses a wrong dtype or device now rather than at the first step.
            Some(dtype) => drop(AutocastGuard::enter(model.device(), dtype)?),
            None => {}
        }
        Ok(())
    }

    pub fn model(&self) -> &StableDiffusion {
        &self.model
    }

    /// Gives the model back for inference: with its trained weights, or, after LoRA training, the
    /// base model again (the adapters are what `save` writes; load them with `load_lora`).
    pub fn into_model(mut self) -> StableDiffusion {
        self.optimization.release();
        if let Trained::Lora(_) = self.trained {
            Adapters::detach(&mut self.model);
        }
        self.model
    }

    /// The trained tensors by name: the UNet's parameters (diffusers' names), or the adapters'
    /// factors (peft's names, `<module>.lora_A.weight`, without the file's `unet.` prefix).
    pub(super) fn trained_parameters(&self) -> &[(String, Tensor)] {
        match &self.trained {
            Trained::Unet => &self.model.unet_weights().parameters,
            Trained::Lora(adapters) => &adapters.parameters,
        }
    }

    /// The LoRA adapters' factors as they are now, copied (A as trained; B without the alpha / rank
    /// that the saved file folds in); empty when the whole UNet is trained.
    pub fn lora_parameters(&self) -> Result<Vec<(String, Tensor)>> {
        match &self.trained {
            Trained::Unet => Ok(Vec::new()),
            Trained::Lora(adapters) => adapters.parameters.iter().map(|(n, t)| Ok((n.clone(), t.f_detach()?.copy()))).collect(),
        }
    }

    /// Sets the LoRA adapters' factors (names as [`Self::lora_parameters`]), every one required with
    /// its shape; refused when the whole UNet is trained.
    pub fn set_lora_parameters(&mut self, values: &HashMap<String, Tensor>) -> Result<()> {
        match &self.trained {
            Trained::Unet => Err(Error::InvalidArgument("this trainer trains the whole UNet, not LoRA adapters".into())),
            Trained::Lora(adapters) => adapters.set_values(values, Path::new("the given values")),
        }
    }

    /// One optimiser step on clean latents (B, C, h, w) with the given noise, integer timesteps (B,)
    /// and text embeddings (B, L, D).
    pub fn step(&mut self, latents: &Tensor, noise: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<StepReport> {
        let _span = tracing::debug_span!("train_step").entered();
        let _autocast = self.compute.autocast.map(|dtype| AutocastGuard::enter(self.model.device(), dtype)).transpose()?;
        let [noisy, target, t, ctx] = self.training_inputs(latents, noise, timesteps, context)?;
        let unet = self.model.unet();
        let loss_of = |prediction: &Tensor| -> Result<Tensor> { Ok(prediction.f_to_kind(Kind::Float)?.f_mse_loss(&target, tch::Reduction::Mean)?) };
        if self.compute.gradient_checkpointing {
            self.optimization.step_after(|parameters| unet.backward_checkpointed(&noisy, &t, &ctx, loss_of, parameters))
        } else {
            self.optimization.step(&loss_of(&unet.forward(&noisy, &t, &ctx)?)?)
        }
    }

    /// The parameters' current gradients by name (after a step: clipped), for inspection and tests.
    pub fn gradients(&self) -> Vec<(String, Tensor)> {
        let names = self.trained_parameters().iter().map(|(name, _)| name.clone());
        names.zip(self.optimization.gradients.iter().map(Tensor::shallow_clone)).collect()
    }

    /// The DDPM training pair on the model's device: the noised latents and the target the UNet
    /// is trained to predict (the noise for ε-models, v = √ᾱ ε − √(1−ᾱ) x₀ for v-models, in f32), with
    /// the timesteps and text embeddings.
    fn training_inputs(&self, latents: &Tensor, noise: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<[Tensor; 4]> {
        let device = self.model.device();
        let (x0, eps, ctx) = (latents.f_to_device(device)?, noise.f_to_device(device)?, context.f_to_device(device)?);
        let t = timesteps.f_to_kind(Kind::Int64)?.f_to_device(device)?;
        let schedule = self.model.schedule();
        let noisy = schedule.add_noise(&x0, &eps, &t)?;
        let target = match schedule.prediction_type() {
            PredictionType::Epsilon => eps,
            PredictionType::VPrediction => schedule.velocity(&x0, &eps, &t)?,
        };
        Ok([noisy, target.f_to_kind(Kind::Float)?, t, ctx])
    }

    /// Writes the result into the folder `out`. A trained UNet makes a diffusers folder: the UNet
    /// (`unet/config.json` and `diffusion_pytorch_model.safetensors`) plus the other components copied
    /// from where the model was loaded (`sources`), so the result loads on its own. LoRA adapters make
    /// `out/pytorch_lora_weights.safetensors` alone (`sources` unused): they go with the base model.
    pub fn save(&self, sources: &ComponentSources, out: &Path) -> Result<()> {
        match &self.trained {
            Trained::Unet => {
                save_unet(&self.model, &out.join("unet"))?;
                sources.copy_to(out)
            }
            Trained::Lora(adapters) => adapters.save(out),
        }
    }
}
