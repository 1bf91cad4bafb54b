//! Options several commands share (the model to open, Plug-and-Play settings, the latent), and the
//! small conversions from command-line values to the library's types. Every default shown in `--help`
//! is read from the library's `Default` implementations, so the two cannot drift apart.
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use diffmine::model::single_file::SingleFileOptions;
use diffmine::model::{device_name, dtype_name, parse_device, parse_dtype, ComponentOverrides, ModelOptions, StableDiffusion};
use diffmine::translate::TranslateOptions;
use diffmine::typicality::LatentMode;
use diffmine::Result;

/// Where the model is and how it runs.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// The diffusers model folder, or a single-file checkpoint (MODEL.safetensors in the original
    /// layout; --base then names the folder with its configs and tokenizer).
    #[arg(long, value_name = "DIR|FILE", help_heading = "Model")]
    pub model: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value_t = device_name(ModelOptions::default().device), help_heading = "Model")]
    pub device: String,
    /// float32, float16 or bfloat16 (inference weights and compute).
    #[arg(long, default_value_t = dtype_name(ModelOptions::default().dtype), help_heading = "Model")]
    pub dtype: String,
    /// Weight file variant, e.g. fp16 (diffusion_pytorch_model.fp16.safetensors).
    #[arg(long, help_heading = "Model")]
    pub variant: Option<String>,
    /// Components the model folder lacks (a finetuned folder may hold only its UNet) come from DIR;
    /// for a single-file checkpoint, DIR gives its configs, tokenizer and scheduler.
    #[arg(long, value_name = "DIR", help_heading = "Model")]
    pub base: Option<PathBuf>,
    /// A LoRA adapter (diffusers/peft or kohya naming) merged into the model's weights.
    #[arg(long, value_name = "FILE", help_heading = "Model")]
    pub lora: Option<PathBuf>,
    /// The adapter's scale.
    #[arg(long, default_value_t = 1.0, requires = "lora", help_heading = "Model")]
    pub lora_scale: f64,
}

impl ModelArgs {
    pub fn options(&self) -> Result<ModelOptions> {
        let (device, dtype, variant) = (parse_device(&self.device)?, parse_dtype(&self.dtype)?, self.variant.clone());
        if self.model.is_file() {
            // A single-file checkpoint: --base describes it, as diffusers' `from_single_file(config=DIR)`.
            let single_file = SingleFileOptions { config: self.base.clone(), ..SingleFileOptions::default() };
            return Ok(ModelOptions { device, dtype, variant, single_file, ..ModelOptions::default() });
        }
        let overrides = self.base.as_deref().map(|base| ComponentOverrides::from_base(&self.model, base)).unwrap_or_default();
        Ok(ModelOptions { device, dtype, variant, overrides, ..ModelOptions::default() })
    }

    pub fn open(&self) -> Result<StableDiffusion> {
        let mut model = StableDiffusion::open(&self.model, &self.options()?)?;
        if let Some(lora) = &self.lora {
            model.load_lora(lora, self.lora_scale)?;
        }
        Ok(model)
    }

    /// Another model folder (and its base) on this one's device and dtype, without this one's adapter.
    pub fn other(&self, model: &Path, base: Option<&Path>) -> Self {
        ModelArgs { model: model.to_path_buf(), base: base.map(Path::to_path_buf), lora: None, ..self.clone() }
    }
}

/// Which latent of the VAE posterior is used.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latent {
    /// A sample of the posterior.
    Sample,
    /// The posterior mean.
    Mean,
}

impl From<LatentMode> for Latent {
    fn from(mode: LatentMode) -> Self {
        match mode {
            LatentMode::Sample => Latent::Sample,
            LatentMode::Mean => Latent::Mean,
        }
    }
}

impl From<Latent> for LatentMode {
    fn from(latent: Latent) -> Self {
        match latent {
            Latent::Sample => LatentMode::Sample,
            Latent::Mean => LatentMode::Mean,
        }
    }
}

/// Plug-and-Play translation settings (the prompts and seed are the command's own).
#[derive(Args, Debug, Clone)]
pub struct PnpArgs {
    /// DDIM sampling steps.
    #[arg(long, default_value_t = TranslateOptions::default().steps, help_heading = "Translation")]
    pub steps: usize,
    /// DDIM inversion steps (every sampling timestep must be one of the inversion's).
    #[arg(long, default_value_t = TranslateOptions::default().inversion_steps, help_heading = "Translation")]
    pub inversion_steps: usize,
    /// Classifier-free guidance scale (1: none).
    #[arg(long, default_value_t = TranslateOptions::default().guidance, help_heading = "Translation")]
    pub guidance: f64,
    /// Fraction of the sampling steps, from the first, that inject the residual hidden state.
    #[arg(long, default_value_t = TranslateOptions::default().resnet_injection, help_heading = "Translation")]
    pub resnet_injection: f64,
    /// Fraction of the sampling steps, from the first, that inject self-attention queries and keys.
    #[arg(long, default_value_t = TranslateOptions::default().attention_injection, help_heading = "Translation")]
    pub attention_injection: f64,
    /// Which latent of the VAE posterior is inverted.
    #[arg(long, value_enum, default_value_t = TranslateOptions::default().latent.into(), help_heading = "Translation")]
    pub latent: Latent,
}

impl PnpArgs {
    pub fn options(&self, null_prompt: &str, seed: u64) -> TranslateOptions {
        TranslateOptions {
            steps: self.steps,
            inversion_steps: self.inversion_steps,
            guidance: self.guidance,
            resnet_injection: self.resnet_injection,
            attention_injection: self.attention_injection,
            null_prompt: null_prompt.to_string(),
            latent: self.latent.into(),
            seed,
            ..TranslateOptions::default()
        }
    }
}
