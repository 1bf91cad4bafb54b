//! Translating an image between labels with Plug-and-Play (Tumanyan et al. 2023), as the paper's
//! Section 5.1 uses it, and text-to-image DDIM sampling from the same code.
//!
//! Plug-and-Play: the source image's latent (the VAE posterior mean × scaling factor) is inverted with
//! DDIM under the source prompt, keeping the latent of every step. Sampling then starts from the
//! inverted latent at the first sampling timestep and runs DDIM (eta 0) with classifier-free guidance
//! towards each target prompt. In the same UNet call a source branch runs the stored inverted latent of
//! the step under the null prompt; during the first `resnet_injection` fraction of the steps its
//! residual hidden state of `up_blocks[1].resnets[1]` replaces the other rows', and during the first
//! `attention_injection` fraction its self-attention queries and keys do in `up_blocks[1].attentions[1,2]`,
//! `up_blocks[2].attentions[0..2]` and `up_blocks[3].attentions[0..2]` (the first transformer block of
//! each). All targets of one image share one batch: [source branch, unconditional × N, conditional × N].
//! The authors' code ran one target per batch; rows only meet through the injection, which copies the
//! source row alone, so the result is the same.
mod generate;

use tch::{Kind, Tensor};

pub use generate::{generate, GenerateOptions, Generation};

use crate::error::{Error, Result};
use crate::model::ddim::guided::{GuidedSampler, SourceBranch};
use crate::model::ddim::{self, Ddim};
use crate::model::unet::Injection;
use crate::model::StableDiffusion;
use crate::rng::SplitMix64;
use crate::typicality::{LatentMode, Progress};

/// The injection sites of the Plug-and-Play authors for Stable Diffusion's UNet.
pub fn default_injection_sites() -> Injection {
    Injection { resnets: vec![(1, 1)], attentions: vec![(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)] }
}

#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// DDIM sampling steps (50).
    pub steps: usize,
    /// DDIM inversion steps (999). Every sampling timestep must be one of the inversion's: with
    /// `leading` spacing, 999 (or equal to `steps`) always is.
    pub inversion_steps: usize,
    /// Classifier-free guidance scale (7.5); 1 means no guidance.
    pub guidance: f64,
    /// Fraction of the sampling steps, from the first, that inject the residual hidden state (0.8:
    /// 40 of 50 steps, rounded down).
    pub resnet_injection: f64,
    /// Fraction of the sampling steps, from the first, that inject self-attention queries and keys
    /// (0.5: 25 of 50 steps).
    pub attention_injection: f64,
    /// The prompt of the unconditional rows and of the source branch ("").
    pub null_prompt: String,
    /// Where the source branch's features go in (the authors' sites; see [`default_injection_sites`]).
    pub sites: Injection,
    /// Which latent of the VAE posterior is inverted (the mean, as the authors did).
    pub latent: LatentMode,
    /// Seed of the posterior sample when `latent` is `Sample` (nothing else is random).
    pub seed: u64,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            steps: 50,
            inversion_steps: 999,
            guidance: 7.5,
            resnet_injection: 0.8,
            attention_injection: 0.5,
            null_prompt: String::new(),
            sites: default_injection_sites(),
            latent: LatentMode::Mean,
            seed: 42,
        }
    }
}

impl TranslateOptions {
    /// Refuses out-of-range settings before any work is done.
    pub fn check(&self, model: &StableDiffusion) -> Result<()> {
        let sampling = self.check_sampling(model)?;
        check_inversion_covers(&sampling_timesteps(model, self.inversion_steps)?, &sampling, self.inversion_steps)
    }

    /// Checks the settings of the sampling half and returns its timesteps.
    fn check_sampling(&self, model: &StableDiffusion) -> Result<Vec<i64>> {
        check_guidance(self.guidance)?;
        for (name, value) in [("resnet_injection", self.resnet_injection), ("attention_injection", self.attention_injection)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(Error::InvalidArgument(format!("{name} must be a fraction in [0, 1], got {value}")));
            }
        }
        model.unet().check_injection(&self.sites)?;
        sampling_timesteps(model, self.steps)
    }

    /// The feature injection of sampling step `index` (0-based): the sites whose window covers it.
    fn injection_at(&self, index: usize) -> Injection {
        let within = |fraction: f64| index < (self.steps as f64 * fraction).floor() as usize;
        Injection {
            resnets: if within(self.resnet_injection) { self.sites.resnets.clone() } else { Vec::new() },
            attentions: if within(self.attention_injection) { self.sites.attentions.clone() } else { Vec::new() },
        }
    }
}

/// The source branch needs a stored latent at every sampling timestep.
fn check_inversion_covers(inversion: &[i64], sampling: &[i64], inversion_steps: usize) -> Result<()> {
    match sampling.iter().find(|t| !inversion.contains(t)) {
        Some(t) => Err(Error::InvalidArgument(format!(
            "sampling timestep {t} is not among the timesteps of {inversion_steps} inversion steps; choose inversion steps \
             whose timesteps include the sampling's (999, or equal to the sampling steps)"
        ))),
        None => Ok(()),
    }
}

fn check_guidance(guidance: f64) -> Result<()> {
    if !guidance.is_finite() || guidance < 0.0 {
        return Err(Error::InvalidArgument(format!("the guidance scale must be a finite number >= 0, got {guidance}")));
    }
    Ok(())
}

fn sampling_timesteps(model: &StableDiffusion, steps: usize) -> Result<Vec<i64>> {
    let config = model.schedule().config();
    ddim::timesteps(&config.timestep_spacing, steps, model.schedule().train_steps(), config.steps_offset)
}

/// A DDIM inversion: the latent reached at each inversion timestep.
pub struct Inversion {
    /// Ascending, the order inversion visits them.
    pub timesteps: Vec<i64>,
    /// `latents[i]` (1, C, h, w), f32 on the model's device, is the latent at `timesteps[i]`.
    pub latents: Vec<Tensor>,
}

impl Inversion {
    pub fn latent_at(&self, t: i64) -> Option<&Tensor> {
        self.timesteps.iter().position(|&s| s == t).map(|i| &self.latents[i])
    }
}

/// Inverts a scaled latent (1, C, h, w) with `steps` DDIM inversion steps under `prompt`. Progress
/// after each step: (steps done, steps).
pub fn invert(model: &StableDiffusion, latent: &Tensor, prompt: &str, steps: usize, progress: Progress) -> Result<Inversion> {
    let _span = tracing::info_span!("ddim_inversion", steps).entered();
    let ddim = Ddim::new(model.schedule(), steps)?;
    let context = model.text_embeddings(&[prompt])?;
    let timesteps: Vec<i64> = ddim.timesteps().iter().rev().copied().collect();
    let mut x = latent.f_to_kind(Kind::Float)?.f_to_device(model.device())?;
    let mut latents = Vec::with_capacity(timesteps.len());
    for (i, &t) in timesteps.iter().enumerate() {
        let output = model.predict_noise(&x, &Tensor::from_slice(&[t]), &context)?;
        x = ddim.inversion_step(&output, t, &x)?;
        latents.push(x.shallow_clone());
        if !progress(i as u64 + 1, timesteps.len() as u64) {
            return Err(Error::Cancelled);
        }
    }
    Ok(Inversion { timesteps, latents })
}

/// Plug-and-Play sampling from an inversion towards each target prompt: the final latents (N, C, h, w),
/// f32 on the model's device. Progress after each step: (steps done, steps).
pub fn plug_and_play(model: &StableDiffusion, inversion: &Inversion, targets: &[&str], options: &TranslateOptions, progress: Progress) -> Result<Tensor> {
    let _span = tracing::info_span!("plug_and_play", targets = targets.len(), steps = options.steps).entered();
    check_targets(targets)?;
    let timesteps = options.check_sampling(model)?;
    check_inversion_covers(&inversion.timesteps, &timesteps, inversion.timesteps.len())?;
    let sources: Vec<&Tensor> = timesteps.iter().filter_map(|&t| inversion.latent_at(t)).collect();
    let ddim = Ddim::new(model.schedule(), options.steps)?;
    let sampler = GuidedSampler::new(model, ddim, targets, &options.null_prompt, options.guidance, Some(options.null_prompt.as_str()))?;
    let mut x = sources[0].f_expand([targets.len() as i64, -1, -1, -1], false)?;
    for (i, (&t, source)) in timesteps.iter().zip(&sources).enumerate() {
        let injection = options.injection_at(i);
        tracing::debug!(step = i, t, resnets = injection.resnets.len(), attentions = injection.attentions.len(), "pnp step");
        x = sampler.step(t, &x, Some(SourceBranch { latent: source, injection: &injection }))?;
        if !progress(i as u64 + 1, timesteps.len() as u64) {
            return Err(Error::Cancelled);
        }
    }
    Ok(x)
}

fn check_targets(targets: &[&str]) -> Result<()> {
    if targets.is_empty() {
        return Err(Error::InvalidArgument("no target prompts given".into()));
    }
    Ok(())
}

pub struct Translation {
    /// (N, 3, H, W) f32 on the CPU, one per target prompt, at the source image's size; about [-1, 1],
    /// unclamped.
    pub images: Tensor,
    /// The final latents (N, C, h, w), f32 on the CPU.
    pub latents: Tensor,
    /// The unedited reconstruction (1, 3, H, W): the source latent decoded as it is, what the
    /// translations are to be compared with (both went through the VAE).
    pub reconstruction: Tensor,
}

/// Translates one image (1, 3, H, W) in [-1, 1] described by `source_prompt` to each target prompt.
/// Progress after each UNet call: (calls done, inversion steps + sampling steps).
pub fn translate(
    model: &StableDiffusion,
    image: &Tensor,
    source_prompt: &str,
    targets: &[&str],
    options: &TranslateOptions,
    progress: Progress,
) -> Result<Translation> {
    let _span = tracing::info_span!("translate", targets = targets.len()).entered();
    let started = std::time::Instant::now();
    check_targets(targets)?;
    options.check(model)?;
    let (_, _, height, width) = image.size4().map_err(|_| Error::InvalidArgument(format!("image must be (1, 3, H, W), got {:?}", image.size())))?;
    if image.size()[0] != 1 {
        return Err(Error::InvalidArgument(format!("translate takes one image (1, 3, H, W), got {:?}", image.size())));
    }
    let latent = source_latent(model, image, options)?;
    let total = (options.inversion_steps + options.steps) as u64;
    let inversion = invert(model, &latent, source_prompt, options.inversion_steps, &mut |done, _| progress(done, total))?;
    let offset = options.inversion_steps as u64;
    let latents = plug_and_play(model, &inversion, targets, options, &mut |done, _| progress(offset + done, total))?;
    let translation = Translation {
        images: decode_to_size(model, &latents, height, width)?,
        latents: latents.f_to_device(tch::Device::Cpu)?,
        reconstruction: decode_to_size(model, &latent, height, width)?,
    };
    tracing::info!(targets = targets.len(), seconds = started.elapsed().as_secs_f64(), "translated");
    Ok(translation)
}

/// The scaled latent (1, C, h, w) of the image, f32 on the model's device.
fn source_latent(model: &StableDiffusion, image: &Tensor, options: &TranslateOptions) -> Result<Tensor> {
    let posterior = model.encode(image)?;
    let unscaled = match options.latent {
        LatentMode::Mean => posterior.mean,
        LatentMode::Sample => {
            let noise = SplitMix64::new(options.seed).normal_tensor(&posterior.mean.size()).f_to_device(model.device())?;
            posterior.sample_with(&noise)?
        }
    };
    Ok(unscaled.f_mul_scalar(model.vae().config().scaling_factor)?)
}

/// Decodes latents one at a time (a batch of 512 px decodes needs gigabytes) and resizes bilinearly to
/// `height` × `width` where the VAE's size differs (sides that are not multiples of its factor).
fn decode_to_size(model: &StableDiffusion, latents: &Tensor, height: i64, width: i64) -> Result<Tensor> {
    let mut images = Vec::new();
    for i in 0..latents.size()[0] {
        let image = model.decode(&latents.f_narrow(0, i, 1)?)?;
        let (_, _, h, w) = image.size4()?;
        let image = if (h, w) == (height, width) { image } else { image.f_upsample_bilinear2d([height, width], false, None, None)? };
        images.push(image.f_to_device(tch::Device::Cpu)?);
    }
    Ok(Tensor::f_cat(&images, 0)?)
}
