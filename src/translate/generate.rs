//! Text-to-image DDIM sampling with classifier-free guidance, so that a user can see what a finetuned
//! model has learnt. The initial noise comes from the library's own generator ([`SplitMix64`]): N·C·h·w
//! normals in row-major order, prompt by prompt.
use tch::Tensor;

use super::check_guidance;
use crate::error::{Error, Result};
use crate::model::ddim::guided::GuidedSampler;
use crate::model::ddim::Ddim;
use crate::model::StableDiffusion;
use crate::rng::SplitMix64;
use crate::typicality::Progress;

#[derive(Debug)]
pub struct GenerateOptions {
    /// DDIM steps (50).
    pub steps: usize,
    /// Classifier-free guidance scale (7.5); 1 means no guidance.
    pub guidance: f64,
    /// The prompt of the unconditional rows ("").
    pub null_prompt: String,
    /// Image size in pixels (512 × 512).
    pub height: i64,
    pub width: i64,
    /// Seed of the initial noise (42).
    pub seed: u64,
    /// Explicit initial noise (N, C, h, w), replacing the generator's, so another implementation's
    /// samples can be reproduced.
    pub noise: Option<Tensor>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { steps: 50, guidance: 7.5, null_prompt: String::new(), height: 512, width: 512, seed: 42, noise: None }
    }
}

pub struct Generation {
    /// (N, 3, H, W) f32 on the CPU, about [-1, 1], unclamped.
    pub images: Tensor,
    /// The final latents (N, C, h, w), f32 on the CPU.
    pub latents: Tensor,
}

/// One image per prompt. Progress after each step: (steps done, steps).
pub fn generate(model: &StableDiffusion, prompts: &[&str], options: &GenerateOptions, progress: Progress) -> Result<Generation> {
    let _span = tracing::info_span!("generate", prompts = prompts.len(), steps = options.steps).entered();
    if prompts.is_empty() {
        return Err(Error::InvalidArgument("no prompts given".into()));
    }
    check_guidance(options.guidance)?;
    let ddim = Ddim::new(model.schedule(), options.steps)?;
    let timesteps = ddim.timesteps().to_vec();
    let (h, w) = model.latent_size(options.height, options.width)?;
    let shape = [prompts.len() as i64, model.latent_channels(), h, w];
    let noise = match &options.noise {
        Some(noise) if noise.size() == shape => noise.shallow_clone(),
        Some(noise) => return Err(Error::InvalidArgument(format!("initial noise must be {shape:?}, got {:?}", noise.size()))),
        None => SplitMix64::new(options.seed).normal_tensor(&shape),
    };
    // DDIM's initial noise scale is 1: the noise is the latent at the first timestep.
    let mut x = noise.f_to_kind(tch::Kind::Float)?.f_to_device(model.device())?;
    let sampler = GuidedSampler::new(model, ddim, prompts, &options.null_prompt, options.guidance, None)?;
    for (i, &t) in timesteps.iter().enumerate() {
        x = sampler.step(t, &x, None)?;
        if !progress(i as u64 + 1, timesteps.len() as u64) {
            return Err(Error::Cancelled);
        }
    }
    Ok(Generation { images: super::decode_to_size(model, &x, options.height, options.width)?, latents: x.f_to_device(tch::Device::Cpu)? })
}
