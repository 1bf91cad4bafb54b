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
//!
//! Memory does not grow with N: the samples are drawn batch by batch and their loss differences summed
//! as they come; the per-sample losses are kept only when asked for.
use std::ops::Range;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::StableDiffusion;
use crate::rng::SplitMix64;
use crate::{finite, memory};

/// The most samples one map may draw. A million UNet evaluations of one image are already days of
/// work on any machine; a larger count is a caller's mistake and is refused before the work starts.
pub const MAX_SAMPLES: usize = 1 << 20;

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
    /// Number N of (ε, t) samples (default 100, at most [`MAX_SAMPLES`]).
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
    /// Return the per-sample losses too (default false: they take N times a map's memory).
    pub keep_sample_losses: bool,
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
            keep_sample_losses: false,
        }
    }
}

impl TypicalityOptions {
    /// Refuses counts and ranges out of their domain before any work is done.
    pub fn check(&self) -> Result<()> {
        if !(1..=MAX_SAMPLES).contains(&self.samples) {
            return Err(Error::InvalidArgument(format!("the number of samples N = {} must be at least 1 and at most {MAX_SAMPLES}", self.samples)));
        }
        if self.batch == 0 {
            return Err(Error::InvalidArgument("the batch size must be at least 1".into()));
        }
        check_fraction_range(self.t_min, self.t_max)
    }

    /// Samples per UNet call: the batch size, or N when that is smaller.
    fn effective_batch(&self) -> usize {
        self.batch.min(self.samples)
    }
}

pub struct TypicalityMap {
    /// H × W, f32, on the CPU.
    pub map: Tensor,
    /// With `keep_sample_losses`: N × 2 × h × w per-sample losses at latent resolution, averaged over
    /// channels, f32 on the CPU: index 0 under the label prompt, 1 under the null prompt.
    pub sample_losses: Option<Tensor>,
}

/// Progress after each UNet batch: (samples done, samples in all). Returning false cancels.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64) -> bool;

/// Receives the per-sample losses batch by batch: the batch's first sample index and its losses
/// (b, 2, h, w) as in [`TypicalityMap::sample_losses`], on the model's device.
pub type LossSink<'a> = &'a mut dyn FnMut(usize, &Tensor) -> Result<()>;

/// The typicality map of one image (1, 3, H, W) in [-1, 1] for `prompt` against `null_prompt`.
pub fn typicality(
    model: &StableDiffusion,
    image: &Tensor,
    prompt: &str,
    null_prompt: &str,
    options: &TypicalityOptions,
    progress: Progress,
) -> Result<TypicalityMap> {
    if !options.keep_sample_losses {
        let map = typicality_streamed(model, image, prompt, null_prompt, options, progress, &mut |_, _| Ok(()))?;
        return Ok(TypicalityMap { map, sample_losses: None });
    }
    options.check()?;
    let (_, lh, lw) = latent_shape_of(model, image)?;
    memory::check_fits(options.samples as u128 * 2 * (lh * lw) as u128, 4 * 2, "the per-sample losses")?;
    let mut batches = memory::vec_with_capacity::<Tensor>(options.samples.div_ceil(options.effective_batch()), "the per-sample loss batches")?;
    let map = typicality_streamed(model, image, prompt, null_prompt, options, progress, &mut |_, losses| {
        batches.push(losses.f_to_device(Device::Cpu)?);
        Ok(())
    })?;
    Ok(TypicalityMap { map, sample_losses: Some(Tensor::f_cat(&batches, 0)?) })
}

/// The latent's (C, h, w) for an image tensor (1, 3, H, W).
fn latent_shape_of(model: &StableDiffusion, image: &Tensor) -> Result<(i64, i64, i64)> {
    let (_, _, height, width) = image_size(image)?;
    let (lh, lw) = model.latent_size(height, width)?;
    Ok((model.latent_channels(), lh, lw))
}

fn image_size(image: &Tensor) -> Result<(i64, i64, i64, i64)> {
    image.size4().map_err(|_| Error::InvalidArgument(format!("image must be (1, 3, H, W), got {:?}", image.size())))
}

/// [`typicality`] with the per-sample losses handed to `losses` batch by batch instead of kept: memory
/// stays what one batch needs whatever N. Returns the map, H × W f32 on the CPU.
pub fn typicality_streamed(
    model: &StableDiffusion,
    image: &Tensor,
    prompt: &str,
    null_prompt: &str,
    options: &TypicalityOptions,
    progress: Progress,
    losses: LossSink,
) -> Result<Tensor> {
    let _span = tracing::info_span!("typicality", samples = options.samples).entered();
    options.check()?;
    if prompt.is_empty() {
        return Err(Error::InvalidArgument("the label prompt is empty".into()));
    }
    let (_, _, height, width) = image_size(image)?;
    let mut rng = SplitMix64::new(options.seed);
    let latent = encode_latent(model, image, options.latent, &mut rng)?;
    let latent_shape = latent.size()[1..].to_vec();
    let batch = options.effective_batch();
    // The batch's own tensors: its noise, the noised rows of both prompts and their targets.
    memory::check_fits(batch as u128 * 5, latent_shape.iter().product::<i64>() as u128 * 4, "one batch of samples")?;
    let mut draws = Draws::new(options, &latent_shape, model.schedule().train_steps(), rng)?;
    let contexts = model.text_embeddings(&[prompt, null_prompt])?;
    let n = options.samples;
    let mut sum = Tensor::f_zeros([latent_shape[1], latent_shape[2]], (Kind::Double, Device::Cpu))?;
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let (noise, timesteps) = draws.take(start..end)?;
        let batch_losses = batch_losses(model, &latent, &contexts, &noise, &timesteps)?;
        losses(start, &batch_losses)?;
        let difference = batch_losses.f_select(1, 1)?.f_sub(&batch_losses.f_select(1, 0)?)?;
        sum = sum.f_add(&difference.f_sum_dim_intlist(0, false, Kind::Double)?.f_to_device(Device::Cpu)?)?;
        if !progress(end as u64, n as u64) {
            return Err(Error::Cancelled);
        }
    }
    // Averaging before upsampling equals the reverse (both are linear) and upsamples once.
    let mean = sum.f_div_scalar(n as f64)?.f_to_kind(Kind::Float)?.f_reshape([1, 1, latent_shape[1], latent_shape[2]])?;
    let map = mean.f_upsample_bilinear2d([height, width], false, None, None)?.f_reshape([height, width])?;
    finite::check_tensor(&map, "the typicality map")?;
    Ok(map)
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

/// The (ε, t) of the samples, handed out batch by batch in sample order: given by the caller, or drawn
/// from the generator as they are needed.
enum Draws<'a> {
    Given { noise: &'a Tensor, timesteps: &'a [i64] },
    Drawn(Drawer),
}

impl<'a> Draws<'a> {
    fn new(options: &'a TypicalityOptions, latent_shape: &[i64], train_steps: i64, rng: SplitMix64) -> Result<Self> {
        match (&options.noise, &options.timesteps) {
            (Some(noise), Some(timesteps)) => {
                check_given(noise, timesteps, options.samples, latent_shape, train_steps)?;
                Ok(Draws::Given { noise, timesteps })
            }
            (None, None) => Ok(Draws::Drawn(Drawer::new(options, latent_shape, train_steps, rng)?)),
            _ => Err(Error::InvalidArgument("explicit noise and timesteps must be given together".into())),
        }
    }

    /// The noise (b, C, h, w), f32 on the CPU, and timesteps of samples `range`, which must follow the
    /// previous call's.
    fn take(&mut self, range: Range<usize>) -> Result<(Tensor, Vec<i64>)> {
        match self {
            Draws::Given { noise, timesteps } => {
                let noise = noise.f_narrow(0, range.start as i64, range.len() as i64)?.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?;
                Ok((noise, timesteps[range].to_vec()))
            }
            Draws::Drawn(drawer) => drawer.take(range),
        }
    }
}

fn check_given(noise: &Tensor, timesteps: &[i64], n: usize, latent_shape: &[i64], train_steps: i64) -> Result<()> {
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
    finite::check_tensor(noise, "the given noise")
}

/// Draws the samples from the image's generator in the documented order.
struct Drawer {
    rng: SplitMix64,
    latent_shape: Vec<i64>,
    /// The t range [lo, hi).
    lo: i64,
    hi: i64,
    antithetic: bool,
    stratified: bool,
    /// Samples the generator draws (the others negate one): the number of strata.
    distinct: usize,
    /// The last sample drawn, which an antithetic odd sample negates (it may end the previous batch).
    previous: Option<(Tensor, i64)>,
}

impl Drawer {
    fn new(options: &TypicalityOptions, latent_shape: &[i64], train_steps: i64, rng: SplitMix64) -> Result<Self> {
        let (lo, hi) = timestep_range(options.t_min, options.t_max, train_steps)?;
        let n = options.samples;
        Ok(Drawer {
            rng,
            latent_shape: latent_shape.to_vec(),
            lo,
            hi,
            antithetic: options.antithetic,
            stratified: options.stratified,
            distinct: if options.antithetic { n.div_ceil(2) } else { n },
            previous: None,
        })
    }

    fn take(&mut self, range: Range<usize>) -> Result<(Tensor, Vec<i64>)> {
        let mut noise = memory::vec_with_capacity::<Tensor>(range.len(), "the batch's noise")?;
        let mut timesteps = memory::vec_with_capacity(range.len(), "the batch's timesteps")?;
        for i in range {
            let (eps, t) = self.sample(i)?;
            noise.push(eps);
            timesteps.push(t);
        }
        Ok((Tensor::f_stack(&noise, 0)?, timesteps))
    }

    /// Sample `i`; samples must be asked for in order.
    fn sample(&mut self, i: usize) -> Result<(Tensor, i64)> {
        if self.antithetic && i % 2 == 1 {
            let (eps, t) = self.previous.take().ok_or_else(|| Error::InvalidArgument("antithetic samples must be drawn in order".into()))?;
            return Ok((eps.f_neg()?, t));
        }
        let eps = self.rng.normal_tensor(&self.latent_shape);
        let draw = if self.antithetic { i / 2 } else { i };
        let (start, end) = if self.stratified { stratum(self.lo, self.hi, draw, self.distinct) } else { (self.lo, self.hi) };
        let t = start + self.rng.below((end - start) as u64) as i64;
        if self.antithetic {
            self.previous = Some((eps.shallow_clone(), t));
        }
        Ok((eps, t))
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
    check_fraction_range(t_min, t_max)?;
    let lo = (t_min * train_steps as f64).floor() as i64;
    let hi = (t_max * train_steps as f64).floor() as i64;
    if lo >= hi {
        return Err(Error::InvalidArgument(format!("t range [{t_min}, {t_max}] holds no integer timestep of {train_steps}")));
    }
    Ok((lo, hi))
}

/// Refuses a t range that is not `0 <= t_min < t_max <= 1`, whatever the model.
fn check_fraction_range(t_min: f64, t_max: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&t_min) || !(0.0..=1.0).contains(&t_max) || t_min >= t_max {
        return Err(Error::InvalidArgument(format!("t range [{t_min}, {t_max}] must satisfy 0 <= t_min < t_max <= 1")));
    }
    Ok(())
}

/// Losses (b, 2, h, w) of one batch of samples, noise `eps` (b, C, h, w) on the CPU at `timesteps`:
/// both prompts in one UNet call of 2b rows.
fn batch_losses(model: &StableDiffusion, latent: &Tensor, contexts: &Tensor, eps: &Tensor, timesteps: &[i64]) -> Result<Tensor> {
    let b = timesteps.len() as i64;
    let eps = eps.f_to_device(model.device())?;
    let t = Tensor::from_slice(timesteps);
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

    /// The noise and timesteps of `samples` samples, drawn `batch` at a time.
    fn draws(samples: usize, antithetic: bool, stratified: bool, batch: usize) -> (Tensor, Vec<i64>) {
        let options = TypicalityOptions { samples, antithetic, stratified, ..TypicalityOptions::default() };
        let mut drawer = Drawer::new(&options, &[4, 3, 3], 1000, SplitMix64::new(42)).unwrap();
        let batches: Vec<(Tensor, Vec<i64>)> = (0..samples).step_by(batch).map(|start| drawer.take(start..(start + batch).min(samples)).unwrap()).collect();
        let noise = Tensor::cat(&batches.iter().map(|(n, _)| n).collect::<Vec<_>>(), 0);
        (noise, batches.into_iter().flat_map(|(_, t)| t).collect())
    }

    #[test]
    fn antithetic_samples_come_in_pairs_of_negated_noise_at_one_timestep() {
        let (noise, timesteps) = draws(7, true, false, 7);
        for pair in [0usize, 2, 4] {
            let (a, b) = (noise.get(pair as i64), noise.get(pair as i64 + 1));
            assert!(a.f_add(&b).unwrap().abs().max().double_value(&[]) == 0.0, "sample {} is −ε of sample {pair}", pair + 1);
            assert_eq!(timesteps[pair], timesteps[pair + 1]);
        }
        // The generator draws only the even samples: they equal the first draws of an i.i.d. stream.
        let (iid_noise, iid_timesteps) = draws(4, false, false, 4);
        for (k, i) in [0usize, 2, 4, 6].into_iter().enumerate() {
            assert!(noise.get(i as i64).equal(&iid_noise.get(k as i64)));
            assert_eq!(timesteps[i], iid_timesteps[k]);
        }
    }

    #[test]
    fn drawing_batch_by_batch_gives_the_samples_of_one_draw_whatever_the_batch() {
        for (antithetic, stratified) in [(false, false), (true, false), (true, true)] {
            let (noise, timesteps) = draws(7, antithetic, stratified, 7);
            for batch in [1, 2, 3] {
                let (batched_noise, batched_timesteps) = draws(7, antithetic, stratified, batch);
                assert!(batched_noise.equal(&noise) && batched_timesteps == timesteps, "batch {batch}, antithetic {antithetic}");
            }
        }
    }

    #[test]
    fn stratified_timesteps_fall_one_in_each_stratum_of_the_range() {
        let (_, timesteps) = draws(6, false, true, 6);
        for (k, &t) in timesteps.iter().enumerate() {
            let stratum_start = 100 + 100 * k as i64;
            assert!((stratum_start..stratum_start + 100).contains(&t), "t {t} of sample {k}");
        }
        let (_, paired) = draws(6, true, true, 6);
        for (k, pair) in paired.chunks(2).enumerate() {
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
