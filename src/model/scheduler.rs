//! The training noise schedule read from `scheduler/scheduler_config.json`: betas, cumulative alphas,
//! the forward process and the conversion of a v-prediction to a noise prediction. Samplers (DDIM,
//! DDPM) build on this.
use tch::{Device, Kind, Tensor};

use super::config::SchedulerConfig;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
}

pub struct NoiseSchedule {
    config: SchedulerConfig,
    prediction: PredictionType,
    /// ᾱ_t for t = 0..T-1, in f32 on the CPU as diffusers keeps it.
    alphas_cumprod: Tensor,
}

impl NoiseSchedule {
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        let prediction = match config.prediction_type.as_str() {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            other => return Err(Error::Unsupported(format!("scheduler `prediction_type` = \"{other}\" is not supported (epsilon, v_prediction)"))),
        };
        let betas = betas(&config)?;
        let alphas_cumprod = betas.f_neg()?.f_add_scalar(1.0)?.f_cumprod(0, Kind::Float)?;
        Ok(NoiseSchedule { config, prediction, alphas_cumprod })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn prediction_type(&self) -> PredictionType {
        self.prediction
    }

    pub fn train_steps(&self) -> i64 {
        self.config.num_train_timesteps
    }

    pub fn alphas_cumprod(&self) -> &Tensor {
        &self.alphas_cumprod
    }

    /// √ᾱ_t and √(1-ᾱ_t) for each timestep, shaped (B, 1, 1, 1) to broadcast over latents.
    fn coefficients(&self, timesteps: &Tensor, like: &Tensor) -> Result<(Tensor, Tensor)> {
        let abar = self.alphas_cumprod.f_index_select(0, &timesteps.f_to_device(Device::Cpu)?)?;
        let shape = [-1i64, 1, 1, 1];
        let to = |t: Tensor| -> Result<Tensor> { Ok(t.f_reshape(shape)?.f_to_device(like.device())?.f_to_kind(like.kind())?) };
        Ok((to(abar.f_sqrt()?)?, to(abar.f_neg()?.f_add_scalar(1.0)?.f_sqrt()?)?))
    }

    /// The forward process: √ᾱ_t x₀ + √(1-ᾱ_t) ε (diffusers' `add_noise`).
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let (a, s) = self.coefficients(timesteps, x0)?;
        Ok(x0.f_mul(&a)?.f_add(&noise.f_mul(&s)?)?)
    }

    /// The v-prediction target √ᾱ_t ε − √(1-ᾱ_t) x₀ (diffusers' `get_velocity`).
    pub fn velocity(&self, x0: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let (a, s) = self.coefficients(timesteps, x0)?;
        Ok(noise.f_mul(&a)?.f_sub(&x0.f_mul(&s)?)?)
    }

    /// The one-step estimate of x₀ from z_t and a noise prediction ε: (z_t − √(1-ᾱ_t) ε) / √ᾱ_t, the
    /// inverse of [`Self::add_noise`].
    pub fn clean_estimate(&self, noisy: &Tensor, epsilon: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let (a, s) = self.coefficients(timesteps, noisy)?;
        Ok(noisy.f_sub(&epsilon.f_mul(&s)?)?.f_div(&a)?)
    }

    /// Turns the UNet's raw output into a noise prediction: unchanged for ε-models, and
    /// ε = √ᾱ_t v + √(1-ᾱ_t) z_t for v-models (SD 2.x 768 px).
    pub fn to_epsilon(&self, output: &Tensor, noisy: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        match self.prediction {
            PredictionType::Epsilon => Ok(output.shallow_clone()),
            PredictionType::VPrediction => {
                let (a, s) = self.coefficients(timesteps, noisy)?;
                Ok(output.f_mul(&a)?.f_add(&noisy.f_mul(&s)?)?)
            }
        }
    }
}

/// The most training steps a schedule may have: diffusion models train with about a thousand, and
/// the schedule's tables take memory in proportion.
pub const MAX_TRAIN_STEPS: i64 = 1_000_000;

/// The betas, each of which must lie in (0, 1): 0 or less would make ᾱ grow, 1 or more zero or negative,
/// and every step divides by √ᾱ or √(1 − ᾱ).
fn betas(config: &SchedulerConfig) -> Result<Tensor> {
    let betas = unchecked_betas(config)?;
    let in_domain = betas.f_gt(0.0)?.f_logical_and(&betas.f_lt(1.0)?)?.f_all()?.int64_value(&[]) != 0;
    if !in_domain {
        let keys = if config.trained_betas.is_some() {
            "`trained_betas`".to_string()
        } else {
            format!("`beta_start` = {}, `beta_end` = {}", config.beta_start, config.beta_end)
        };
        return Err(Error::InvalidModel(format!("scheduler config {keys}: every beta must lie strictly between 0 and 1")));
    }
    Ok(betas)
}

fn unchecked_betas(config: &SchedulerConfig) -> Result<Tensor> {
    let steps = config.num_train_timesteps;
    if !(1..=MAX_TRAIN_STEPS).contains(&steps) {
        return Err(Error::InvalidModel(format!("scheduler config `num_train_timesteps` = {steps} must be between 1 and {MAX_TRAIN_STEPS}")));
    }
    let options = (Kind::Float, Device::Cpu);
    if let Some(trained) = &config.trained_betas {
        if trained.len() != steps as usize {
            return Err(Error::InvalidModel(format!("scheduler config `trained_betas` lists {} values for {steps} `num_train_timesteps`", trained.len())));
        }
        let values: Vec<f32> = trained.iter().map(|&b| b as f32).collect();
        return Ok(Tensor::from_slice(&values));
    }
    Ok(match config.beta_schedule.as_str() {
        "linear" => Tensor::f_linspace(config.beta_start, config.beta_end, steps, options)?,
        "scaled_linear" => Tensor::f_linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), steps, options)?.f_square()?,
        "squaredcos_cap_v2" => squared_cosine_betas(steps),
        other => {
            return Err(Error::Unsupported(format!("scheduler `beta_schedule` = \"{other}\" is not supported (linear, scaled_linear, squaredcos_cap_v2)")))
        }
    })
}

/// The cosine schedule (Nichol & Dhariwal), computed in f64 and stored in f32 as diffusers does.
fn squared_cosine_betas(steps: i64) -> Tensor {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    let betas: Vec<f32> = (0..steps)
        .map(|i| {
            let (t1, t2) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect();
    Tensor::from_slice(&betas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clean_estimate_undoes_add_noise() {
        let schedule = NoiseSchedule::new(serde_json::from_str("{}").unwrap()).unwrap();
        let x0 = Tensor::f_randn([2, 4, 3, 3], (Kind::Float, Device::Cpu)).unwrap();
        let noise = Tensor::f_randn([2, 4, 3, 3], (Kind::Float, Device::Cpu)).unwrap();
        let timesteps = Tensor::from_slice(&[10i64, 900]);
        let noisy = schedule.add_noise(&x0, &noise, &timesteps).unwrap();
        let estimate = schedule.clean_estimate(&noisy, &noise, &timesteps).unwrap();
        let error = (estimate - &x0).abs().max().double_value(&[]);
        assert!(error < 1e-4, "largest error {error}");
    }
}
