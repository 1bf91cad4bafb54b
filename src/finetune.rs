//! Finetuning the UNet of a loaded model on labelled images, the paper's first step: the DDPM loss
//! (MSE between the UNet's prediction and the noise, or v for v-models) at t uniform over the training
//! steps, AdamW with gradient clipping, constant learning rate, f32 weights (optionally bf16 autocast and
//! gradient checkpointing); VAE and text encoder frozen. The
//! result is saved as a diffusers folder that libdiffmine and diffusers both load.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::dataset::{center_crop, LabelledSet};
use crate::error::{Error, Result};
use crate::model::autocast::AutocastGuard;
use crate::model::scheduler::PredictionType;
use crate::model::{Component, ComponentOverrides, ModelOptions, StableDiffusion};
use crate::rng::SplitMix64;

mod adamw;
use adamw::AdamW;

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
    optimizer: AdamW,
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

/// Trains the UNet of a model it owns (training writes the weights, so the model cannot be shared
/// with inference while it runs).
pub struct Trainer {
    model: StableDiffusion,
    optimization: Optimization,
    compute: StepCompute,
}

impl Trainer {
    pub fn new(model: StableDiffusion, options: TrainOptions, compute: StepCompute) -> Result<Self> {
        require_f32(&model)?;
        match compute.autocast {
            // float16's narrow range makes small gradients underflow unless the loss is scaled, which
            // this trainer does not do (diffusers' scripts pair fp16 with a GradScaler).
            Some(Kind::Half) => return Err(Error::InvalidArgument("float16 autocast needs loss scaling, which finetuning does not do: use bfloat16".into())),
            // Refuses a wrong dtype or device now rather than at the first step.
            Some(dtype) => drop(AutocastGuard::enter(model.device(), dtype)?),
            None => {}
        }
        let optimization = Optimization::new(&model.unet_weights().parameters, options)?;
        Ok(Trainer { model, optimization, compute })
    }

    pub fn model(&self) -> &StableDiffusion {
        &self.model
    }

    /// Gives the model back for inference.
    pub fn into_model(self) -> StableDiffusion {
        self.optimization.release();
        self.model
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
        let names = self.model.unet_weights().parameters.iter().map(|(name, _)| name.clone());
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

    /// Writes the model as a diffusers folder: the trained UNet (`unet/config.json` and
    /// `diffusion_pytorch_model.safetensors`) plus the other components copied from where the model
    /// was loaded (`sources`), so the result loads on its own.
    pub fn save(&self, sources: &ComponentSources, out: &Path) -> Result<()> {
        save_unet(&self.model, &out.join("unet"))?;
        sources.copy_to(out)
    }
}

/// Writes a model's UNet as a diffusers component folder.
pub fn save_unet(model: &StableDiffusion, dir: &Path) -> Result<()> {
    let unet = model.unet_weights();
    save_component(&unet.parameters, &unet.config, dir)
}

/// Writes a diffusers component folder: `config.json` and `diffusion_pytorch_model.safetensors`.
pub fn save_component(parameters: &[(String, Tensor)], config: &serde_json::Value, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = serde_json::to_string_pretty(config).expect("a JSON value serialises");
    crate::io::write_atomic(&dir.join("config.json"), text.as_bytes())?;
    let tensors: Vec<(String, Tensor)> =
        parameters.iter().map(|(name, t)| Ok((name.clone(), t.f_detach()?.f_to_device(tch::Device::Cpu)?.f_contiguous()?))).collect::<Result<_>>()?;
    // Never rewritten in place: a model loaded from this folder maps the old file, and rewriting it
    // would pull the pages from under that mapping (SIGBUS).
    let path = dir.join("diffusion_pytorch_model.safetensors");
    crate::io::write_atomic_with(&path, |temporary| Tensor::write_safetensors(&tensors, temporary).map_err(|e| Error::io(&path, e)))
}

/// The folders a saved pipeline copies its untrained components from: each component's folder as
/// the model was loaded (overrides included), and the `model_index.json` of the pipeline folder or,
/// where it has none (a folder holding only a finetuned UNet), of the base pipeline the overrides
/// point into. Resolved before any training, so a missing source fails at once, not after the work.
pub struct ComponentSources {
    folders: Vec<(Component, PathBuf)>,
    model_index: PathBuf,
}

impl ComponentSources {
    pub fn resolve(root: &Path, overrides: &ComponentOverrides, components: &[Component]) -> Result<Self> {
        let folders: Vec<(Component, PathBuf)> = components.iter().map(|&component| (component, overrides.component_dir(root, component))).collect();
        if let Some((component, dir)) = folders.iter().find(|(_, dir)| !dir.is_dir()) {
            let name = component.folder_name();
            return Err(Error::InvalidModel(format!("missing model component folder {} (the {name} to copy into the saved model)", dir.display())));
        }
        let model_index = std::iter::once(root)
            .chain(overrides.base_folders())
            .map(|dir| dir.join("model_index.json"))
            .find(|path| path.is_file())
            .ok_or_else(|| Error::InvalidModel(format!("no model_index.json in {} or the folders its components are taken from", root.display())))?;
        Ok(ComponentSources { folders, model_index })
    }

    pub fn copy_to(&self, out: &Path) -> Result<()> {
        for (component, dir) in &self.folders {
            copy_dir(dir, &out.join(component.folder_name()))?;
        }
        copy_file(&self.model_index, &out.join("model_index.json"))
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let path = entry.map_err(|e| Error::io(from, e))?.path();
        if path.is_file() {
            let target = to.join(path.file_name().expect("a file has a name"));
            copy_file(&path, &target)?;
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    crate::io::write_atomic_with(to, |temporary| {
        std::fs::copy(from, temporary).map(drop).map_err(|e| Error::io(to, format!("copying {}: {e}", from.display())))
    })
}

/// How to finetune on a labelled set (defaults: the spec's recipe; steps and batch are the caller's).
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    pub train: TrainOptions,
    /// Caption of an image: the template with `{label}` replaced by its labels joined by
    /// `label_separator` (e.g. "Chest X-Ray with {label}." and ", ").
    pub caption_template: String,
    pub label_separator: String,
    pub null_prompt: String,
    /// Probability that a caption is replaced by the null prompt (0.05; 0.10 for faces).
    pub condition_dropout: f64,
    pub batch_size: usize,
    pub steps: usize,
    pub seed: u64,
    /// Training images are resized (shorter side) and centre-cropped to this size.
    pub resolution: usize,
    /// Save a resumable checkpoint every this many steps into `checkpoint_dir` (0: never).
    pub checkpoint_every: usize,
    pub checkpoint_dir: Option<PathBuf>,
    pub compute: StepCompute,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
            train: TrainOptions::default(),
            caption_template: "Image of {label}.".into(),
            label_separator: ", ".into(),
            null_prompt: String::new(),
            condition_dropout: 0.05,
            batch_size: 8,
            steps: 1000,
            seed: 0,
            resolution: 512,
            checkpoint_every: 0,
            checkpoint_dir: None,
            compute: StepCompute::default(),
        }
    }
}

impl FinetuneOptions {
    pub fn caption(&self, labels: &[String]) -> String {
        self.caption_template.replace("{label}", &labels.join(&self.label_separator))
    }
}

/// An image of the set, encoded once: the VAE is frozen, so each step only samples its posterior.
struct EncodedImage {
    mean: Tensor,
    std: Tensor,
    caption: String,
}

/// Progress of finetuning: (steps done, steps in all, loss of the last step). False cancels.
pub type TrainProgress<'a> = &'a mut dyn FnMut(u64, u64, f64) -> bool;

/// Finetunes the UNet of the model at `model_dir` on `set`, continuing from `resume` (a checkpoint
/// folder written by an earlier run) when given, and saves the result as a diffusers folder at `out`.
/// Every draw (batch members, posterior noise, ε, t, caption dropout) comes from one generator seeded
/// with `options.seed`, whose state checkpoints keep, so a resumed run continues the same stream.
pub fn finetune(
    model_dir: &Path,
    model_options: &ModelOptions,
    set: &LabelledSet,
    options: &FinetuneOptions,
    resume: Option<&Path>,
    out: &Path,
    progress: TrainProgress,
) -> Result<StepReport> {
    if options.batch_size == 0 || options.steps == 0 {
        return Err(Error::InvalidArgument("batch size and steps must be at least 1".into()));
    }
    let sources =
        ComponentSources::resolve(model_dir, &model_options.overrides, &[Component::Vae, Component::TextEncoder, Component::Tokenizer, Component::Scheduler])?;
    let start_dir = resume.unwrap_or(model_dir);
    let model = StableDiffusion::open(start_dir, model_options)?;
    let mut trainer = Trainer::new(model, options.train.clone(), options.compute)?;
    let (mut rng, first_step) = match resume {
        Some(dir) => trainer.load_state(dir)?,
        None => (SplitMix64::new(options.seed), 0),
    };
    let images = encode_set(trainer.model(), set, options)?;
    let mut embeddings = HashMap::new();
    let mut last = StepReport { loss: f64::NAN, grad_norm: f64::NAN };
    for step in first_step..options.steps {
        let batch = draw_batch(&trainer, &images, options, &mut rng, &mut embeddings)?;
        last = trainer.step(&batch[0], &batch[1], &batch[2], &batch[3])?;
        tracing::debug!(step, loss = last.loss, grad_norm = last.grad_norm, "finetune step");
        let done = step + 1;
        if options.checkpoint_every > 0 && done % options.checkpoint_every == 0 {
            if let Some(dir) = &options.checkpoint_dir {
                let checkpoint = dir.join(format!("checkpoint-{done}"));
                trainer.save(&sources, &checkpoint)?;
                trainer.save_state(&checkpoint, &rng, done)?;
            }
        }
        if !progress(done as u64, options.steps as u64, last.loss) {
            return Err(Error::Cancelled);
        }
    }
    trainer.save(&sources, out)?;
    Ok(last)
}

fn encode_set(model: &StableDiffusion, set: &LabelledSet, options: &FinetuneOptions) -> Result<Vec<EncodedImage>> {
    let _span = tracing::info_span!("encode_training_set", images = set.items.len()).entered();
    let size = options.resolution;
    set.items
        .iter()
        .map(|item| {
            let image = center_crop(&item.load(Some(size))?, size as i64)?;
            let posterior = model.encode(&image)?;
            Ok(EncodedImage { mean: posterior.mean, std: posterior.std, caption: options.caption(&item.labels) })
        })
        .collect()
}

/// One batch [clean latents, noise, timesteps, text embeddings], drawn in a fixed order per member:
/// image index, posterior noise, ε, t, dropout coin.
fn draw_batch(
    trainer: &Trainer,
    images: &[EncodedImage],
    options: &FinetuneOptions,
    rng: &mut SplitMix64,
    embeddings: &mut HashMap<String, Tensor>,
) -> Result<[Tensor; 4]> {
    let model = trainer.model();
    let scaling = model.vae().config().scaling_factor;
    let steps = model.schedule().train_steps() as u64;
    let (mut latents, mut noises, mut timesteps, mut contexts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.batch_size {
        let image = &images[rng.below(images.len() as u64) as usize];
        let posterior_noise = rng.normal_tensor(&image.mean.size()).f_to_device(model.device())?;
        latents.push(image.mean.f_add(&image.std.f_mul(&posterior_noise)?)?.f_mul_scalar(scaling)?);
        noises.push(rng.normal_tensor(&image.mean.size()));
        timesteps.push(rng.below(steps) as i64);
        let caption = if rng.uniform() < options.condition_dropout { &options.null_prompt } else { &image.caption };
        if !embeddings.contains_key(caption) {
            embeddings.insert(caption.clone(), model.text_embeddings(&[caption])?);
        }
        contexts.push(embeddings[caption].shallow_clone());
    }
    Ok([Tensor::f_cat(&latents, 0)?, Tensor::f_cat(&noises, 0)?, Tensor::from_slice(&timesteps), Tensor::f_cat(&contexts, 0)?])
}

impl Trainer {
    /// Writes what resuming needs beside a saved folder: the optimiser's moments and step count and
    /// the random stream's state.
    fn save_state(&self, dir: &Path, rng: &SplitMix64, steps_done: usize) -> Result<()> {
        let names = self.model.unet_weights().parameters.iter().map(|(n, _)| n);
        let moments: Vec<(String, Tensor)> = names
            .zip(self.optimization.optimizer.first_moments.iter().zip(&self.optimization.optimizer.second_moments))
            .flat_map(|(name, (m, v))| [(format!("m.{name}"), m.shallow_clone()), (format!("v.{name}"), v.shallow_clone())])
            .collect();
        let path = dir.join("optimizer.safetensors");
        crate::io::write_atomic_with(&path, |temporary| Tensor::write_safetensors(&moments, temporary).map_err(|e| Error::io(&path, e)))?;
        let (state, spare) = rng.snapshot();
        let json = serde_json::json!({ "steps_done": steps_done, "optimizer_steps": self.optimization.optimizer.steps, "rng_state": state.to_string(), "rng_spare_normal": spare });
        let path = dir.join("trainer_state.json");
        crate::io::write_atomic(&path, json.to_string().as_bytes())
    }

    /// Restores a checkpoint's optimiser and random stream; returns the stream and the steps done.
    fn load_state(&mut self, dir: &Path) -> Result<(SplitMix64, usize)> {
        let path = dir.join("trainer_state.json");
        let json: serde_json::Value = crate::model::config::read_json(&path)?;
        let bad = || Error::InvalidArgument(format!("{}: not a libdiffmine trainer state", path.display()));
        let steps_done = json["steps_done"].as_u64().ok_or_else(bad)? as usize;
        self.optimization.optimizer.steps = json["optimizer_steps"].as_i64().ok_or_else(bad)? as i32;
        let state: u64 = json["rng_state"].as_str().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let spare = json["rng_spare_normal"].as_f64();
        let path = dir.join("optimizer.safetensors");
        let stored: HashMap<String, Tensor> = Tensor::read_safetensors(&path).map_err(|e| Error::io(&path, e))?.into_iter().collect();
        let names: Vec<String> = self.model.unet_weights().parameters.iter().map(|(n, _)| n.clone()).collect();
        for (i, name) in names.iter().enumerate() {
            for (moments, prefix) in [(&mut self.optimization.optimizer.first_moments, "m"), (&mut self.optimization.optimizer.second_moments, "v")] {
                let key = format!("{prefix}.{name}");
                let value = stored.get(&key).ok_or_else(|| Error::MissingTensor { name: key.clone(), file: path.display().to_string() })?;
                moments[i] = value.f_to_device(self.model.device())?;
            }
        }
        Ok((SplitMix64::restore((state, spare)), steps_done))
    }
}
