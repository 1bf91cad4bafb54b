//! Finetuning the UNet of a loaded model on labelled images, the paper's first step: the DDPM loss
//! (MSE between the UNet's prediction and the noise, or v for v-models) at t uniform over the training
//! steps, AdamW with gradient clipping, constant learning rate, f32 weights (optionally bf16 autocast and
//! gradient checkpointing); VAE and text encoder frozen. The result is saved as a diffusers folder that
//! libdiffmine and diffusers both load.
//!
//! Or, with `lora` options, LoRA adapters on the UNet's attention projections are trained instead,
//! the base weights frozen, by the same loop and step; the result is then a
//! `pytorch_lora_weights.safetensors` for the base model (see [`lora`]).
//!
//! This module owns the run over a labelled set (images encoded once, batches drawn from one seeded
//! stream, checkpoints, the saved result); `training` the optimiser step, `adamw` the optimiser,
//! `checkpoint` the resumable state, `export` the diffusers folders and `lora` the adapters.
mod adamw;
mod checkpoint;
mod export;
pub mod lora;
mod training;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::dataset::{center_crop, LabelledSet};
use crate::error::{Error, Result};
use crate::model::{Component, ModelOptions, StableDiffusion};
use crate::rng::SplitMix64;

pub use export::{save_component, save_unet, ComponentSources};
pub use lora::{LoraOptions, LORA_TARGETS, LORA_WEIGHTS_FILE};
pub(crate) use training::{require_f32, Optimization};
pub use training::{StepCompute, StepReport, TrainOptions, Trainer};

/// How to finetune on a labelled set (defaults: the paper's recipe; steps and batch are the caller's).
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
    /// Train LoRA adapters with these options instead of the whole UNet (None: the whole UNet).
    pub lora: Option<LoraOptions>,
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
            lora: None,
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
/// folder written by an earlier run) when given, and saves the result at `out`: a diffusers folder, or
/// with `options.lora` a folder holding `pytorch_lora_weights.safetensors`. Every draw (LoRA's initial
/// A, then batch members, posterior noise, ε, t, caption dropout) comes from one generator seeded with
/// `options.seed`, whose state checkpoints keep, so a resumed run continues the same stream.
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
    let mut rng = SplitMix64::new(options.seed);
    let mut trainer = match &options.lora {
        Some(lora) => {
            lora.validate()?;
            // The base is frozen: a resumed run reads it from the model again, the adapters from the
            // checkpoint.
            let model = StableDiffusion::open(model_dir, model_options)?;
            Trainer::with_lora(model, options.train.clone(), options.compute, lora, &mut rng)?
        }
        None => Trainer::new(StableDiffusion::open(resume.unwrap_or(model_dir), model_options)?, options.train.clone(), options.compute)?,
    };
    let mut first_step = 0;
    if let Some(dir) = resume {
        (rng, first_step) = trainer.load_state(dir)?;
    }
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
