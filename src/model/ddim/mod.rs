//! DDIM (Song et al. 2021) with eta = 0 over the model's noise schedule, as diffusers' `DDIMScheduler`
//! and `DDIMInverseScheduler` compute it: the timestep spacing of the scheduler config (`leading` +
//! `steps_offset`, `trailing`, `linspace`), the deterministic step towards less noise, and its exact
//! inverse towards more noise (DDIM inversion).
//!
//! Both directions move between the same pairs of noise levels: a sampling step goes from timestep t to
//! t − T/n (integer division, as diffusers has it even where the spacing is not exactly T/n), and an
//! inversion step from t − T/n up to t. Below timestep 0 the level is ᾱ = 1 when the config sets
//! `set_alpha_to_one`, else ᾱ_0.
//!
//! `guided` holds the denoising step built on it that translation and text-to-image share.
pub(crate) mod guided;

use tch::Tensor;

use super::scheduler::{NoiseSchedule, PredictionType};
use crate::error::{Error, Result};

pub struct Ddim<'a> {
    schedule: &'a NoiseSchedule,
    /// Sampling order: descending.
    timesteps: Vec<i64>,
    /// T / n in integers: how far below t a sampling step lands.
    step_ratio: i64,
    /// ᾱ_t for t = 0..T-1, read once from the schedule's f32 table.
    alphas_cumprod: Vec<f32>,
    /// ᾱ of the level below timestep 0.
    final_alpha_cumprod: f32,
}

impl<'a> Ddim<'a> {
    /// The DDIM sampler with `steps` inference steps over the model's schedule.
    pub fn new(schedule: &'a NoiseSchedule, steps: usize) -> Result<Self> {
        let config = schedule.config();
        let train_steps = schedule.train_steps();
        let timesteps = timesteps(&config.timestep_spacing, steps, train_steps, config.steps_offset)?;
        let alphas_cumprod = Vec::<f32>::try_from(schedule.alphas_cumprod())?;
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        Ok(Ddim { schedule, timesteps, step_ratio: train_steps / steps as i64, alphas_cumprod, final_alpha_cumprod })
    }

    /// The timesteps of sampling, in the order it visits them (descending); inversion visits them in
    /// reverse.
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// The timestep a sampling step from `t` lands on (negative below the schedule's start).
    pub fn previous_timestep(&self, t: i64) -> i64 {
        t - self.step_ratio
    }

    /// ᾱ at `t`, or the level below the schedule's start for negative `t`.
    fn alpha_cumprod(&self, t: i64) -> Result<f32> {
        if t < 0 {
            return Ok(self.final_alpha_cumprod);
        }
        self.alphas_cumprod
            .get(t as usize)
            .copied()
            .ok_or_else(|| Error::InvalidArgument(format!("timestep {t} is outside the schedule's [0, {}]", self.alphas_cumprod.len() - 1)))
    }

    /// One sampling step from timestep `t` (diffusers' `DDIMScheduler.step`, eta = 0): the sample at
    /// `t − T/n` from `sample` at `t` and the UNet's raw output there.
    pub fn step(&self, model_output: &Tensor, t: i64, sample: &Tensor) -> Result<Tensor> {
        self.move_between(model_output, sample, self.alpha_cumprod(t)?, self.alpha_cumprod(self.previous_timestep(t))?)
    }

    /// One inversion step to timestep `t` (diffusers' `DDIMInverseScheduler.step`): the sample at `t`
    /// from `sample` at `t − T/n` and the UNet's output for it, which inversion evaluates at `t` (the
    /// usual approximation: the noise prediction at the target level stands in for the one at the
    /// source level).
    pub fn inversion_step(&self, model_output: &Tensor, t: i64, sample: &Tensor) -> Result<Tensor> {
        self.move_between(model_output, sample, self.alpha_cumprod(self.previous_timestep(t))?, self.alpha_cumprod(t)?)
    }

    /// Splits `sample` at level ᾱ_from into its predicted clean sample and noise, then recombines them
    /// at level ᾱ_to. The coefficients are rounded to f32 as diffusers' 0-d f32 tensors are.
    fn move_between(&self, model_output: &Tensor, sample: &Tensor, from: f32, to: f32) -> Result<Tensor> {
        let (a_from, b_from) = (from.sqrt() as f64, (1.0 - from).sqrt() as f64);
        let (a_to, b_to) = (to.sqrt() as f64, (1.0 - to).sqrt() as f64);
        let (clean, noise) = match self.schedule.prediction_type() {
            PredictionType::Epsilon => {
                let clean = sample.f_sub(&model_output.f_mul_scalar(b_from)?)?.f_div_scalar(a_from)?;
                (clean, model_output.shallow_clone())
            }
            PredictionType::VPrediction => {
                let clean = sample.f_mul_scalar(a_from)?.f_sub(&model_output.f_mul_scalar(b_from)?)?;
                let noise = model_output.f_mul_scalar(a_from)?.f_add(&sample.f_mul_scalar(b_from)?)?;
                (clean, noise)
            }
        };
        Ok(clean.f_mul_scalar(a_to)?.f_add(&noise.f_mul_scalar(b_to)?)?)
    }
}

/// The inference timesteps (descending) for `steps` steps over `train_steps`, as diffusers'
/// `DDIMScheduler.set_timesteps` spaces them.
pub fn timesteps(spacing: &str, steps: usize, train_steps: i64, steps_offset: i64) -> Result<Vec<i64>> {
    let n = steps as i64;
    if n == 0 || n > train_steps {
        return Err(Error::InvalidArgument(format!("DDIM steps must lie in [1, {train_steps}], got {steps}")));
    }
    let list: Vec<i64> = match spacing {
        "leading" => {
            let ratio = train_steps / n;
            (0..n).rev().map(|i| i * ratio + steps_offset).collect()
        }
        "trailing" => {
            // numpy's arange(T, 0, -T/n): its length and values computed as numpy does, in f64.
            let ratio = train_steps as f64 / n as f64;
            let len = (-(train_steps as f64) / -ratio).ceil() as i64;
            (0..len).map(|i| (train_steps as f64 - i as f64 * ratio).round_ties_even() as i64 - 1).collect()
        }
        "linspace" => linspace(0.0, (train_steps - 1) as f64, n).into_iter().rev().map(|v| v.round_ties_even() as i64).collect(),
        other => return Err(Error::Unsupported(format!("scheduler `timestep_spacing` = \"{other}\" is not supported (leading, trailing, linspace)"))),
    };
    if let Some(&t) = list.iter().find(|&&t| !(0..train_steps).contains(&t)) {
        return Err(Error::InvalidArgument(format!(
            "{steps} steps with timestep spacing \"{spacing}\" and steps_offset {steps_offset} put timestep {t} outside [0, {}]",
            train_steps - 1
        )));
    }
    Ok(list)
}

/// numpy's `linspace(start, stop, n)`: start + i·step, with the last value exactly `stop`.
fn linspace(start: f64, stop: f64, n: i64) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut values: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    values[(n - 1) as usize] = stop;
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_spacing_with_offset_is_sd15s_schedule() {
        let t = timesteps("leading", 50, 1000, 1).unwrap();
        assert_eq!((t.len(), t[0], t[1], t[49]), (50, 981, 961, 1));
        assert_eq!(timesteps("leading", 999, 1000, 1).unwrap()[..2], [999, 998]);
    }

    #[test]
    fn trailing_and_linspace_end_at_the_last_training_step() {
        assert_eq!(timesteps("trailing", 3, 1000, 0).unwrap(), vec![999, 666, 332]);
        assert_eq!(timesteps("linspace", 3, 1000, 0).unwrap(), vec![999, 500, 0]);
    }

    fn sd15_schedule() -> NoiseSchedule {
        let config = serde_json::json!({
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "steps_offset": 1, "set_alpha_to_one": false
        });
        NoiseSchedule::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    /// For data x₀ ~ N(0, s²) the best noise prediction is exact: ε(x, t) = √(1-ᾱ_t) x / (ᾱ_t s² + 1 - ᾱ_t).
    fn exact_noise_prediction(ddim: &Ddim, x: &Tensor, t: i64, variance: f64) -> Tensor {
        let a = ddim.alpha_cumprod(t).unwrap() as f64;
        x * ((1.0 - a).sqrt() / (a * variance + 1.0 - a))
    }

    /// DDIM inversion then sampling, each step's noise predicted at its timestep as the translation
    /// code does (inversion thus evaluates it at the target level); the relative reconstruction error.
    fn round_trip_error(steps: usize) -> f64 {
        let schedule = sd15_schedule();
        let ddim = Ddim::new(&schedule, steps).unwrap();
        let variance: f64 = 0.25;
        let x0 = crate::rng::SplitMix64::new(3).normal_tensor(&[1, 4, 8, 8]) * variance.sqrt();
        let mut x = x0.shallow_clone();
        for &t in ddim.timesteps().iter().rev() {
            x = ddim.inversion_step(&exact_noise_prediction(&ddim, &x, t, variance), t, &x).unwrap();
        }
        for &t in ddim.timesteps() {
            x = ddim.step(&exact_noise_prediction(&ddim, &x, t, variance), t, &x).unwrap();
        }
        (&x - &x0).abs().max().double_value(&[]) / x0.abs().max().double_value(&[])
    }

    #[test]
    fn inversion_then_sampling_reconstructs_with_an_exact_denoiser() {
        let errors: Vec<f64> = [10, 50, 999].map(round_trip_error).to_vec();
        eprintln!("DDIM round trip with an exact denoiser, 10/50/999 steps: relative errors {errors:?}");
        // The approximation's error is of first order: about 0.20, 0.037 and 0.0018, shrinking as 1/steps.
        assert!(errors[0] > errors[1] && errors[1] > 10.0 * errors[2], "{errors:?}");
        assert!(errors[1] < 0.05 && errors[2] < 0.005, "{errors:?}");
    }

    #[test]
    fn zero_or_too_many_steps_are_refused() {
        assert!(matches!(timesteps("leading", 0, 1000, 1), Err(Error::InvalidArgument(_))));
        assert!(matches!(timesteps("leading", 1001, 1000, 1), Err(Error::InvalidArgument(_))));
        assert!(matches!(timesteps("karras", 10, 1000, 1), Err(Error::Unsupported(_))));
    }
}
