//! Typicality maps, the paper's Eq. 3: how much better the model predicts the noise added to an image's
//! latent when told the label than when told nothing,
//!
//!   T(x | c) = mean over (ε, t) of [ L(x, ε, t, null prompt) − L(x, ε, t, label prompt) ],
//!
//! with L = (ε_pred − ε)² averaged over the latent channels, and the map upsampled bilinearly
//! (align_corners = false) to the image size. Positive means typical of the label. The same ε and t go
//! to both prompts.
//!
//! Randomness: one generator per image ([`SplitMix64`], seeded with `seed`), drawn in this order:
//! the posterior sample's noise (C·h·w normals, when `latent` is `Sample`), then for each sample its ε
//! (C·h·w normals, row-major) followed by its t (uniform integer in [floor(t_min·T), floor(t_max·T))).
//! A map is thus the same on any device, batch size and thread count, up to float rounding.
//!
//! Two variance reductions are options (the authors drew i.i.d.): with `antithetic`, every odd sample
//! reuses the previous sample's t with its noise negated (−ε), so the generator draws only the even
//! samples, in the order above; with `stratified`, the k-th drawn t is uniform within the k-th of
//! equal strata of the t range (one stratum per drawn sample) instead of over the whole range.
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::StableDiffusion;
use crate::rng::SplitMix64;

/// Which latent of the VAE posterior is noised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatentMode {
    /// A sample of the posterior, as the authors' code draws it.
    Sample,
    /// The posterior mean.
    Mean,
}

#[derive(Debug)]
pub struct TypicalityOptions {
    /// Number N of (ε, t) samples (default 100).
    pub samples: usize,
    /// Range of t as fractions of the training steps T (default 0.1 .. 0.7, i.e. t in [100, 699]).
    pub t_min: f64,
    pub t_max: f64,
    /// Seed of the per-image generator (default 42).
    pub seed: u64,
    /// Samples per UNet call; each call runs 2·batch rows, both prompts (default 10).
    pub batch: usize,
    pub latent: LatentMode,
    /// Explicit timesteps (N integers) and noise (N × C × h × w), both or neither: they replace the
    /// generator's draws so another implementation's result can be reproduced.
    pub timesteps: Option<Vec<i64>>,
    pub noise: Option<Tensor>,
    /// Pairs of samples (ε, t) and (−ε, t) instead of independent draws (default false).
    pub antithetic: bool,
    /// Each drawn t in its own stratum of the t range instead of over the whole range (default false).
    pub stratified: bool,
}

impl Default for TypicalityOptions {
    fn default() -> Self {
        TypicalityOptions {
            samples: 100,
            t_min: 0.1,
            t_max: 0.7,
            seed: 42,
            batch: 10,
            latent: LatentMode::Sample,
            timesteps: None,
            noise: None,
            antithetic: false,
            stratified: false,
        }
    }
}

pub struct TypicalityMap {
    /// H × W, f32, on the CPU.
    pub map: Tensor,
    /// N × 2 × h × w per-sample losses at latent resolution, averaged over channels:
    /// index 0 under the label prompt, 1 under the null prompt.
    pub sample_losses: Tensor,
}

/// Progress after each UNet batch: (samples done, samples in all). Returning false cancels.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64) -> bool;

/// The typicality map of one image (1, 3, H, W) in [-1, 1] for `prompt` against `null_prompt`.
pub fn typicality(
    model: &StableDiffusion,
    image: &Tensor,
    prompt: &str,
    null_prompt: &str,
    options: &TypicalityOptions,
    progress: Progress,
) -> Result<TypicalityMap> {
    let _span = tracing::info_span!("typicality", samples = options.samples).entered();
    if prompt.is_empty() {
        return Err(Error::InvalidArgument("the label prompt is empty".into()));
    }
    let (_, _, height, width) = image.size4().map_err(|_| Error::InvalidArgument(format!("image must be (1, 3, H, W), got {:?}", image.size())))?;
    let mut rng = SplitMix64::new(options.seed);
    let latent = encode_latent(model, image, options.latent, &mut rng)?;
    let draws = Draws::new(options, &latent, model.schedule().train_steps(), &mut rng)?;
    let contexts = model.text_embeddings(&[prompt, null_prompt])?;
    let mut losses = Vec::with_capacity(options.samples);
    let total = options.samples as u64;
    for start in (0..options.samples).step_by(options.batch.max(1)) {
        let end = (start + options.batch).min(options.samples);
        losses.push(batch_losses(model, &latent, &contexts, &draws, start..end)?);
        if !progress(end as u64, total) {
            return Err(Error::Cancelled);
        }
    }
    let sample_losses = Tensor::f_cat(&losses, 0)?;
    let difference = sample_losses.f_select(1, 1)?.f_sub(&sample_losses.f_select(1, 0)?)?;
    // Averaging before upsampling equals the reverse (both are linear) and upsamples once.
    let mean = difference.f_mean_dim(0, true, Kind::Float)?.f_unsqueeze(0)?;
    let map = mean.f_upsample_bilinear2d([height, width], false, None, None)?.f_squeeze()?.f_reshape([height, width])?;
    Ok(TypicalityMap { map: map.f_to_device(tch::Device::Cpu)?, sample_losses: sample_losses.f_to_device(tch::Device::Cpu)? })
}

/// The scaled latent (1, C, h, w), f32, on the model's device.
fn encode_latent(model: &StableDiffusion, image: &Tensor, mode: LatentMode, rng: &mut SplitMix64) -> Result<Tensor> {
    let posterior = model.encode(image)?;
    let unscaled = match mode {
        LatentMode::Mean => posterior.mean,
        LatentMode::Sample => {
            let noise = rng.normal_tensor(&posterior.mean.size()).f_to_device(model.device())?;
            posterior.sample_with(&noise)?
        }
    };
    Ok(unscaled.f_mul_scalar(model.vae().config().scaling_factor)?)
}

/// The (ε, t) of every sample: drawn from the generator, or given by the caller.
struct Draws {
    noise: Tensor,
    timesteps: Vec<i64>,
}

impl Draws {
    fn new(options: &TypicalityOptions, latent: &Tensor, train_steps: i64, rng: &mut SplitMix64) -> Result<Self> {
        let n = options.samples;
        if n == 0 {
            return Err(Error::InvalidArgument("the number of samples N must be at least 1".into()));
        }
        if options.batch == 0 {
            return Err(Error::InvalidArgument("the batch size must be at least 1".into()));
        }
        let latent_shape = latent.size()[1..].to_vec();
        match (&options.noise, &options.timesteps) {
            (Some(noise), Some(timesteps)) => Self::given(noise, timesteps, n, &latent_shape, train_steps),
            (None, None) => Self::drawn(options, &latent_shape, train_steps, rng),
            _ => Err(Error::InvalidArgument("explicit noise and timesteps must be given together".into())),
        }
    }

    fn given(noise: &Tensor, timesteps: &[i64], n: usize, latent_shape: &[i64], train_steps: i64) -> Result<Self> {
        let expected: Vec<i64> = std::iter::once(n as i64).chain(latent_shape.iter().copied()).collect();
        if noise.size() != expected {
            return Err(Error::InvalidArgument(format!("noise must be {expected:?} (N × latent), got {:?}", noise.size())));
        }
        if timesteps.len() != n {
            return Err(Error::InvalidArgument(format!("{} timesteps given for N = {n} samples", timesteps.len())));
        }
        if let Some(t) = timesteps.iter().find(|&&t| !(0..train_steps).contains(&t)) {
            return Err(Error::InvalidArgument(format!("timestep {t} is outside [0, {}]", train_steps - 1)));
        }
        Ok(Draws { noise: noise.f_to_kind(Kind::Float)?.f_to_device(tch::Device::Cpu)?, timesteps: timesteps.to_vec() })
    }

    fn drawn(options: &TypicalityOptions, latent_shape: &[i64], train_steps: i64, rng: &mut SplitMix64) -> Result<Self> {
        let (lo, hi) = timestep_range(options.t_min, options.t_max, train_steps)?;
        let n = options.samples;
        let distinct = if options.antithetic { n.div_ceil(2) } else { n };
        let mut noise: Vec<Tensor> = Vec::with_capacity(n);
        let mut timesteps = Vec::with_capacity(n);
        for i in 0..n {
            if options.antithetic && i % 2 == 1 {
                noise.push(noise[i - 1].f_neg()?);
                timesteps.push(timesteps[i - 1]);
                continue;
            }
            noise.push(rng.normal_tensor(latent_shape));
            let draw = if options.antithetic { i / 2 } else { i };
            let (start, end) = if options.stratified { stratum(lo, hi, draw, distinct) } else { (lo, hi) };
            timesteps.push(start + rng.below((end - start) as u64) as i64);
        }
        Ok(Draws { noise: Tensor::f_stack(&noise, 0)?, timesteps })
    }
}

/// The k-th of `strata` near-equal integer strata of [lo, hi); never empty (a range shorter than the
/// number of strata repeats timesteps rather than leaving a stratum without one).
fn stratum(lo: i64, hi: i64, k: usize, strata: usize) -> (i64, i64) {
    let width = (hi - lo) as u128;
    let start = lo + (k as u128 * width / strata as u128) as i64;
    let end = lo + ((k as u128 + 1) * width / strata as u128) as i64;
    (start.min(hi - 1), end.max(start + 1).min(hi))
}

/// [floor(t_min·T), floor(t_max·T)): the integer timesteps a fraction range covers.
pub fn timestep_range(t_min: f64, t_max: f64, train_steps: i64) -> Result<(i64, i64)> {
    if !(0.0..=1.0).contains(&t_min) || !(0.0..=1.0).contains(&t_max) || t_min >= t_max {
        return Err(Error::InvalidArgument(format!("t range [{t_min}, {t_max}] must satisfy 0 <= t_min < t_max <= 1")));
    }
    let lo = (t_min * train_steps as f64).floor() as i64;
    let hi = (t_max * train_steps as f64).floor() as i64;
    if lo >= hi {
        return Err(Error::InvalidArgument(format!("t range [{t_min}, {t_max}] holds no integer timestep of {train_steps}")));
    }
    Ok((lo, hi))
}

/// Losses (b, 2, h, w) of samples `range`: both prompts in one UNet call of 2b rows.
fn batch_losses(model: &StableDiffusion, latent: &Tensor, contexts: &Tensor, draws: &Draws, range: std::ops::Range<usize>) -> Result<Tensor> {
    let b = range.len() as i64;
    let device = model.device();
    let eps = draws.noise.f_narrow(0, range.start as i64, b)?.f_to_device(device)?;
    let t = Tensor::from_slice(&draws.timesteps[range]);
    let schedule = model.schedule();
    let noisy = schedule.add_noise(&latent.f_expand([b, -1, -1, -1], false)?, &eps, &t)?;
    let rows = Tensor::f_cat(&[&noisy, &noisy], 0)?;
    let t2 = Tensor::f_cat(&[&t, &t], 0)?;
    let (_, tokens, dim) = contexts.size3()?;
    let label = contexts.f_narrow(0, 0, 1)?.f_expand([b, tokens, dim], false)?;
    let null = contexts.f_narrow(0, 1, 1)?.f_expand([b, tokens, dim], false)?;
    let context = Tensor::f_cat(&[label, null], 0)?;
    let output = model.predict_noise(&rows, &t2, &context)?;
    let predicted = schedule.to_epsilon(&output, &rows, &t2)?;
    let target = Tensor::f_cat(&[&eps, &eps], 0)?;
    let loss = predicted.f_sub(&target)?.f_square()?.f_mean_dim(1, false, Kind::Float)?;
    let (_, h, w) = loss.size3()?;
    Ok(loss.f_reshape([2, b, h, w])?.f_transpose(0, 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(samples: usize, antithetic: bool, stratified: bool) -> Draws {
        let options = TypicalityOptions { samples, antithetic, stratified, ..TypicalityOptions::default() };
        Draws::drawn(&options, &[4, 3, 3], 1000, &mut SplitMix64::new(42)).unwrap()
    }

    #[test]
    fn antithetic_samples_come_in_pairs_of_negated_noise_at_one_timestep() {
        let d = draws(7, true, false);
        for pair in [0usize, 2, 4] {
            let (a, b) = (d.noise.get(pair as i64), d.noise.get(pair as i64 + 1));
            assert!(a.f_add(&b).unwrap().abs().max().double_value(&[]) == 0.0, "sample {} is −ε of sample {pair}", pair + 1);
            assert_eq!(d.timesteps[pair], d.timesteps[pair + 1]);
        }
        // The generator draws only the even samples: they equal the first draws of an i.i.d. stream.
        let iid = draws(4, false, false);
        for (k, i) in [0usize, 2, 4, 6].into_iter().enumerate() {
            assert!(d.noise.get(i as i64).equal(&iid.noise.get(k as i64)));
            assert_eq!(d.timesteps[i], iid.timesteps[k]);
        }
    }

    #[test]
    fn stratified_timesteps_fall_one_in_each_stratum_of_the_range() {
        let d = draws(6, false, true);
        for (k, &t) in d.timesteps.iter().enumerate() {
            let stratum_start = 100 + 100 * k as i64;
            assert!((stratum_start..stratum_start + 100).contains(&t), "t {t} of sample {k}");
        }
        let paired = draws(6, true, true);
        for (k, pair) in paired.timesteps.chunks(2).enumerate() {
            let stratum_start = 100 + 200 * k as i64;
            assert!(pair[0] == pair[1] && (stratum_start..stratum_start + 200).contains(&pair[0]), "pair {k}: {pair:?}");
        }
    }

    #[test]
    fn strata_cover_the_range_without_gaps_and_are_never_empty() {
        let strata: Vec<(i64, i64)> = (0..7).map(|k| stratum(100, 700, k, 7)).collect();
        assert_eq!(strata[0].0, 100);
        assert_eq!(strata[6].1, 700);
        assert!(strata.windows(2).all(|w| w[0].1 == w[1].0));
        assert!((0..10).map(|k| stratum(5, 8, k, 10)).all(|(a, b)| 5 <= a && a < b && b <= 8));
    }
}
