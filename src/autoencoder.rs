//! Training a model's VAE as an autoencoder, for models built from scratch (the embedded demo model):
//! reconstruction MSE of decoded posterior samples plus a small KL term toward N(0, 1), AdamW. The
//! latent `scaling_factor` is then measured as 1 / std of the posterior samples of the training
//! images, as Stable Diffusion's was, and written to the saved VAE config.
use std::path::Path;

use tch::{Kind, Tensor};

use crate::dataset::{center_crop, LabelledSet};
use crate::error::{Error, Result};
use crate::finetune::{require_f32, save_component, ComponentSources, Optimization, TrainOptions, TrainProgress};
use crate::model::{Component, ModelOptions, StableDiffusion};
use crate::rng::SplitMix64;

#[derive(Debug, Clone)]
pub struct AutoencoderOptions {
    pub train: TrainOptions,
    /// Weight of the KL divergence (per latent element) against the reconstruction MSE (per pixel).
    pub kl_weight: f64,
    pub batch_size: usize,
    pub steps: usize,
    pub seed: u64,
    pub resolution: usize,
}

impl Default for AutoencoderOptions {
    fn default() -> Self {
        AutoencoderOptions {
            train: TrainOptions { learning_rate: 1e-3, ..TrainOptions::default() },
            kl_weight: 1e-4,
            batch_size: 8,
            steps: 1000,
            seed: 0,
            resolution: 64,
        }
    }
}

/// Trains the VAE of the model at `model_dir` on the images of `set` (labels unused) and writes the
/// model with the trained VAE and its measured scaling factor to `out`. Returns the scaling factor.
pub fn train_autoencoder(model_dir: &Path, set: &LabelledSet, options: &AutoencoderOptions, out: &Path, progress: TrainProgress) -> Result<f64> {
    if options.batch_size == 0 || options.steps == 0 {
        return Err(Error::InvalidArgument("batch size and steps must be at least 1".into()));
    }
    let model_options = ModelOptions::default();
    let sources =
        ComponentSources::resolve(model_dir, &model_options.overrides, &[Component::Unet, Component::TextEncoder, Component::Tokenizer, Component::Scheduler])?;
    let model = StableDiffusion::open(model_dir, &model_options)?;
    require_f32(&model)?;
    let images = load_images(set, options.resolution)?;
    let mut optimization = Optimization::new(&model.vae_weights().parameters, options.train.clone())?;
    let mut rng = SplitMix64::new(options.seed);
    for step in 0..options.steps {
        let indices: Vec<i64> = (0..options.batch_size).map(|_| rng.below(images.size()[0] as u64) as i64).collect();
        let batch = images.f_index_select(0, &Tensor::from_slice(&indices))?;
        let loss = autoencoder_loss(&model, &batch, options.kl_weight, &mut rng)?;
        let report = optimization.step(&loss)?;
        if !progress(step as u64 + 1, options.steps as u64, report.loss) {
            return Err(Error::Cancelled);
        }
    }
    optimization.release();
    let scaling_factor = measure_scaling_factor(&model, &images, &mut rng)?;
    let vae = model.vae_weights();
    let mut config = vae.config.clone();
    config["scaling_factor"] = serde_json::json!(scaling_factor);
    sources.copy_to(out)?;
    save_component(&vae.parameters, &config, &out.join("vae"))?;
    Ok(scaling_factor)
}

fn load_images(set: &LabelledSet, resolution: usize) -> Result<Tensor> {
    let images: Vec<Tensor> = set.items.iter().map(|item| center_crop(&item.load(Some(resolution))?, resolution as i64)).collect::<Result<_>>()?;
    Ok(Tensor::f_cat(&images, 0)?)
}

/// MSE(decode(z), x) + kl_weight · mean KL(q(z|x) ‖ N(0, 1)), z a posterior sample.
fn autoencoder_loss(model: &StableDiffusion, images: &Tensor, kl_weight: f64, rng: &mut SplitMix64) -> Result<Tensor> {
    let posterior = model.vae().encode(images)?;
    let noise = rng.normal_tensor(&posterior.mean.size());
    let z = posterior.sample_with(&noise)?;
    let reconstruction = model.vae().decode(&z)?;
    let mse = reconstruction.f_mse_loss(images, tch::Reduction::Mean)?;
    let variance = posterior.std.f_square()?;
    let kl = posterior.mean.f_square()?.f_add(&variance)?.f_sub_scalar(1.0)?.f_sub(&variance.f_log()?)?.f_mean(Kind::Float)?.f_mul_scalar(0.5)?;
    Ok(mse.f_add(&kl.f_mul_scalar(kl_weight)?)?)
}

/// 1 / std of posterior samples of the images: what makes the UNet's inputs unit-variance.
fn measure_scaling_factor(model: &StableDiffusion, images: &Tensor, rng: &mut SplitMix64) -> Result<f64> {
    let posterior = tch::no_grad(|| model.vae().encode(images))?;
    let samples = posterior.sample_with(&rng.normal_tensor(&posterior.mean.size()))?;
    Ok(1.0 / samples.f_std(true)?.f_double_value(&[])?)
}
