//! Stable Diffusion 1.x/2.x from a diffusers folder: UNet, VAE, CLIP text encoder, tokenizer and noise
//! schedule, on CPU (f32, bf16) or CUDA (f32, f16, bf16).
pub mod attention;
pub mod autocast;
pub mod clip;
pub mod config;
pub mod ddim;
pub mod embeddings;
pub mod loading;
pub mod lora;
pub mod nn;
pub mod resnet;
pub mod scheduler;
pub mod single_file;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub(crate) mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::finite;
use clip::ClipTextModel;
use config::{read_json, ClipTextConfig, UNetConfig, VaeConfig};
use lora::{LoraState, Target};
use scheduler::NoiseSchedule;
use single_file::{Layout, SingleFileOptions};
use tokenizer::ClipTokenizer;
use unet::{Injection, UNet2DConditionModel};
use vae::{AutoencoderKL, LatentDistribution};
use weights::{MappedFile, WeightFiles, WeightPath};

/// Parses "cpu", "cuda" or "cuda:N", checking that the device exists here.
pub fn parse_device(name: &str) -> Result<Device> {
    let device = match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(index) => Device::Cuda(index),
            None => return Err(Error::Device(format!("unknown device \"{name}\" (use cpu, cuda or cuda:N)"))),
        },
    };
    if let Device::Cuda(index) = device {
        let count = tch::Cuda::device_count() as usize;
        if count == 0 {
            return Err(Error::Device(format!("device \"{name}\" asked for, but CUDA is not available on this machine")));
        }
        if index >= count {
            return Err(Error::Device(format!("device \"{name}\" asked for, but this machine has {count} CUDA device(s)")));
        }
    }
    Ok(device)
}

/// Parses a compute dtype name: float32/f32, float16/f16/half, bfloat16/bf16.
pub fn parse_dtype(name: &str) -> Result<Kind> {
    match name {
        "float32" | "f32" | "fp32" => Ok(Kind::Float),
        "float16" | "f16" | "fp16" | "half" => Ok(Kind::Half),
        "bfloat16" | "bf16" => Ok(Kind::BFloat16),
        other => Err(Error::InvalidArgument(format!("unknown dtype \"{other}\" (use float32, float16 or bfloat16)"))),
    }
}

/// The name [`parse_device`] reads back: cpu, cuda:N (other devices by their debug name).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(index) => format!("cuda:{index}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The name [`parse_dtype`] reads back (float32, float16, bfloat16; other kinds by their debug name).
pub fn dtype_name(kind: Kind) -> String {
    match kind {
        Kind::Float => "float32".into(),
        Kind::Half => "float16".into(),
        Kind::BFloat16 => "bfloat16".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Folders to take single components from instead of the pipeline folder's own (e.g. CLIP
/// ViT-L/14-336's text encoder and tokenizer, or a finetuned UNet with a base model's other parts).
/// Each points at the component folder itself (the one holding its `config.json`).
#[derive(Debug, Clone, Default)]
pub struct ComponentOverrides {
    pub unet: Option<PathBuf>,
    pub vae: Option<PathBuf>,
    pub text_encoder: Option<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    pub scheduler: Option<PathBuf>,
}

/// One part of a diffusers pipeline, stored in the subfolder its `folder_name` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
    Tokenizer,
    Scheduler,
}

impl Component {
    pub fn folder_name(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
            Component::Tokenizer => "tokenizer",
            Component::Scheduler => "scheduler",
        }
    }
}

impl ComponentOverrides {
    /// Every component the pipeline folder `root` lacks, from the pipeline folder `base` (a finetuned
    /// folder may hold only its UNet).
    pub fn from_base(root: &Path, base: &Path) -> Self {
        let missing = |component: Component| Some(base.join(component.folder_name())).filter(|_| !root.join(component.folder_name()).exists());
        ComponentOverrides {
            unet: missing(Component::Unet),
            vae: missing(Component::Vae),
            text_encoder: missing(Component::TextEncoder),
            tokenizer: missing(Component::Tokenizer),
            scheduler: missing(Component::Scheduler),
        }
    }

    /// The folder a component is read from: its override, else the pipeline folder's own subfolder.
    pub fn component_dir(&self, root: &Path, component: Component) -> PathBuf {
        let own = match component {
            Component::Unet => &self.unet,
            Component::Vae => &self.vae,
            Component::TextEncoder => &self.text_encoder,
            Component::Tokenizer => &self.tokenizer,
            Component::Scheduler => &self.scheduler,
        };
        own.clone().unwrap_or_else(|| root.join(component.folder_name()))
    }

    /// Every overridden folder's parent: where a base pipeline's `model_index.json` lies when the
    /// pipeline folder itself holds only some components.
    pub fn base_folders(&self) -> impl Iterator<Item = &Path> {
        [&self.unet, &self.vae, &self.text_encoder, &self.tokenizer, &self.scheduler].into_iter().flatten().filter_map(|dir| dir.parent())
    }
}

#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub device: Device,
    /// Compute dtype; weights are converted to it on load whatever their file dtype.
    pub dtype: Kind,
    /// Weight file variant to read (`fp16` reads `*.fp16.safetensors`); independent of `dtype`.
    pub variant: Option<String>,
    pub overrides: ComponentOverrides,
    /// How to read a single-file checkpoint.
    pub single_file: SingleFileOptions,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            device: Device::Cpu,
            dtype: Kind::Float,
            variant: None,
            overrides: ComponentOverrides::default(),
            single_file: SingleFileOptions::default(),
        }
    }
}

/// A component's tensors under diffusers' names (the very tensors its layers use) and its
/// `config.json` as read. Crate-private: where the weight files are mapped, these tensors view the
/// mapping, which only the model keeps alive (see `weights`).
pub(crate) struct ComponentWeights {
    pub(crate) parameters: Vec<(String, Tensor)>,
    pub(crate) config: serde_json::Value,
}

/// Reads a component's config both as raw JSON (kept for saving) and as its typed struct.
fn read_config<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<(serde_json::Value, T)> {
    let path = loading::component_config(dir, "config.json")?;
    let raw: serde_json::Value = read_json(&path)?;
    let typed = serde_json::from_value(raw.clone()).map_err(|e| Error::InvalidModel(format!("{}: {e}", path.display())))?;
    Ok((raw, typed))
}

/// A loaded Stable Diffusion model. All operations but loading and unloading LoRA adapters take
/// `&self`, and a model may be shared between threads: the weights are only written through `&mut self`.
pub struct StableDiffusion {
    unet: UNet2DConditionModel,
    /// The trainable components' tensors and configs: what training updates and saves.
    unet_weights: ComponentWeights,
    vae_weights: ComponentWeights,
    /// The text encoder's tensors by name: what LoRA adapters update.
    text_encoder_parameters: Vec<(String, Tensor)>,
    /// The base weights that loaded LoRA adapters replaced.
    lora: LoraState,
    vae: AutoencoderKL,
    text_encoder: ClipTextModel,
    tokenizer: ClipTokenizer,
    schedule: NoiseSchedule,
    device: Device,
    dtype: Kind,
    /// The weight files' mappings that the tensors above are views of (files already in the compute
    /// dtype, on the CPU, see `weights`). Never read: a view holds no reference to its memory, so the
    /// model keeps the mappings alive for as long as it lives, and no weight tensor may outlive it.
    _mappings: Vec<Arc<MappedFile>>,
}

// SAFETY: while a model is shared its tensors are only read: every operation takes `&self` and feeds
// them to libtorch operators that allocate new outputs and never write their inputs. The writers,
// finetuning's `Trainer` (which owns the model) and LoRA loading and unloading (`&mut self`), have it
// to themselves, so no other thread can see it then (its writes to tensors
// that view a weight file's private mapping land in copy-on-write pages of this process). libtorch tensors'
// reference counts are atomic, so concurrent shallow copies are sound as well.
unsafe impl Sync for StableDiffusion {}

/// Where each part of a model comes from: configs read, weight files opened (not yet read).
struct Sources {
    tokenizer: ClipTokenizer,
    schedule: NoiseSchedule,
    unet: (serde_json::Value, UNetConfig, WeightFiles),
    vae: (serde_json::Value, VaeConfig, WeightFiles),
    text_encoder: (ClipTextConfig, WeightFiles),
}

/// A component read whole from its diffusers folder: config and weight files.
fn folder_component<T: serde::de::DeserializeOwned>(dir: &Path, options: &ModelOptions) -> Result<(serde_json::Value, T, WeightFiles)> {
    let (json, config) = read_config(dir)?;
    let files = WeightFiles::open(&loading::weight_files(dir, options.variant.as_deref())?, options.device, options.dtype)?;
    Ok((json, config, files))
}

fn folder_text_encoder(dir: &Path, options: &ModelOptions) -> Result<(ClipTextConfig, WeightFiles)> {
    let config = ClipTextConfig::read(&loading::component_config(dir, "config.json")?)?;
    let files = WeightFiles::open(&loading::weight_files(dir, options.variant.as_deref())?, options.device, options.dtype)?;
    Ok((config, files))
}

fn read_schedule(dir: &Path) -> Result<NoiseSchedule> {
    NoiseSchedule::new(read_json(&loading::component_config(dir, "scheduler_config.json")?)?)
}

impl Sources {
    fn folder(root: &Path, options: &ModelOptions) -> Result<Self> {
        loading::check_pipeline_folder(root)?;
        let dir = |component| options.overrides.component_dir(root, component);
        Ok(Sources {
            tokenizer: ClipTokenizer::from_dir(&dir(Component::Tokenizer))?,
            schedule: read_schedule(&dir(Component::Scheduler))?,
            unet: folder_component(&dir(Component::Unet), options)?,
            vae: folder_component(&dir(Component::Vae), options)?,
            text_encoder: folder_text_encoder(&dir(Component::TextEncoder), options)?,
        })
    }

    /// A single-file checkpoint's components: configs from the config folder or the original
    /// inference configs, weights through the original layout's key maps. Overridden components come
    /// whole from their folders; the tokenizer must be given (the file holds no vocabulary).
    fn single_file(path: &Path, options: &ModelOptions) -> Result<Self> {
        single_file::check_single_file(path)?;
        let o = &options.single_file;
        let layout = Layout::detect(path, o.version)?;
        let overrides = &options.overrides;
        let config_dir = |component: Component| o.config.as_ref().map(|root| root.join(component.folder_name()));
        let tokenizer_dir = overrides.tokenizer.clone().or_else(|| config_dir(Component::Tokenizer).filter(|d| d.is_dir())).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} is a single-file checkpoint, which holds no tokenizer: give a tokenizer folder (or a config folder with a tokenizer/ subfolder)",
                path.display()
            ))
        })?;
        let mapped = |key_map| WeightFiles::open_mapped(path, options.device, options.dtype, key_map);
        let unet = match &overrides.unet {
            Some(dir) => folder_component(dir, options)?,
            None => {
                let (json, config): (_, UNetConfig) = single_file_config(config_dir(Component::Unet), single_file::builtin_unet_config(layout.version))?;
                let files = mapped(layout.unet_keys(&config, o.ema, path)?)?;
                (json, config, files)
            }
        };
        let vae = match &overrides.vae {
            Some(dir) => folder_component(dir, options)?,
            None => {
                let (json, config): (_, VaeConfig) = single_file_config(config_dir(Component::Vae), single_file::builtin_vae_config(layout.version))?;
                let files = mapped(layout.vae_keys(&config))?;
                (json, config, files)
            }
        };
        let text_encoder = match (&overrides.text_encoder, config_dir(Component::TextEncoder)) {
            (Some(dir), _) => folder_text_encoder(dir, options)?,
            (None, Some(dir)) => (ClipTextConfig::read(&loading::component_config(&dir, "config.json")?)?, mapped(layout.text_encoder_keys())?),
            (None, None) => (single_file::builtin_text_config(layout.version)?, mapped(layout.text_encoder_keys())?),
        };
        let scheduler_dir = overrides.scheduler.clone().or_else(|| config_dir(Component::Scheduler).filter(|d| d.is_dir()));
        let mut scheduler_config = match scheduler_dir {
            Some(dir) => read_json(&loading::component_config(&dir, "scheduler_config.json")?)?,
            None => single_file::builtin_scheduler_config(single_file::default_prediction(layout.version))?,
        };
        if let Some(prediction) = o.prediction {
            scheduler_config.prediction_type = single_file::builtin_scheduler_config(prediction)?.prediction_type;
        }
        Ok(Sources { tokenizer: ClipTokenizer::from_dir(&tokenizer_dir)?, schedule: NoiseSchedule::new(scheduler_config)?, unet, vae, text_encoder })
    }
}

/// A component's config for a single file: from the config folder's component folder, else built in.
fn single_file_config<T: serde::de::DeserializeOwned>(dir: Option<PathBuf>, builtin: serde_json::Value) -> Result<(serde_json::Value, T)> {
    match dir {
        Some(dir) => read_config(&dir),
        None => {
            let typed = serde_json::from_value(builtin.clone()).map_err(|e| Error::InvalidModel(format!("built-in config: {e}")))?;
            Ok((builtin, typed))
        }
    }
}

fn check_dtype_on_device(device: Device, dtype: Kind) -> Result<()> {
    if device == Device::Cpu && dtype == Kind::Half {
        return Err(Error::InvalidArgument("float16 is not supported on the CPU (use float32 or bfloat16)".into()));
    }
    Ok(())
}

impl StableDiffusion {
    /// Loads a diffusers pipeline folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, `scheduler/`), taking overridden components from their own folders; or a
    /// single-file checkpoint in the original layout (a `.safetensors` file, see [`single_file`]).
    pub fn open(root: &Path, options: &ModelOptions) -> Result<Self> {
        let started = Instant::now();
        check_dtype_on_device(options.device, options.dtype)?;
        let sources = if single_file::is_single_file(root) { Sources::single_file(root, options)? } else { Sources::folder(root, options)? };
        let model = Self::load(sources, options.device, options.dtype)?;
        tracing::info!(path = %root.display(), device = ?options.device, dtype = ?options.dtype, seconds = started.elapsed().as_secs_f64(), "model loaded");
        Ok(model)
    }

    /// Builds the networks from their weight files (tensors mapped or converted one by one).
    fn load(sources: Sources, device: Device, dtype: Kind) -> Result<Self> {
        let Sources {
            tokenizer,
            schedule,
            unet: (unet_json, unet_config, unet_files),
            vae: (vae_json, vae_config, vae_files),
            text_encoder: (text_config, text_files),
        } = sources;
        let mut mappings = Vec::new();
        let (unet, unet_weights, vae, vae_weights, text_encoder, text_encoder_parameters) = tch::no_grad(|| -> Result<_> {
            let unet = UNet2DConditionModel::load(&WeightPath::root(&unet_files), unet_config)?;
            mappings.extend(unet_files.mappings_in_use());
            let unet_weights = ComponentWeights { parameters: unet_files.into_parameters(), config: unet_json };
            let vae = AutoencoderKL::load(&WeightPath::root(&vae_files), vae_config)?;
            mappings.extend(vae_files.mappings_in_use());
            let vae_weights = ComponentWeights { parameters: vae_files.into_parameters(), config: vae_json };
            let text_encoder = ClipTextModel::load(&WeightPath::root(&text_files), text_config)?;
            mappings.extend(text_files.mappings_in_use());
            Ok((unet, unet_weights, vae, vae_weights, text_encoder, text_files.into_parameters()))
        })?;
        let lora = LoraState::default();
        Ok(StableDiffusion {
            unet,
            unet_weights,
            vae_weights,
            text_encoder_parameters,
            lora,
            vae,
            text_encoder,
            tokenizer,
            schedule,
            device,
            dtype,
            _mappings: mappings,
        })
    }

    /// Merges the LoRA adapter at `path` (a `.safetensors` file in diffusers/peft or kohya naming, for
    /// the UNet and/or the text encoder) into the weights at `scale`, on top of any adapter already
    /// loaded (see [`lora`]). An adapter that names layers this model lacks, or whose shapes do not fit,
    /// is refused with their names and leaves the model unchanged.
    pub fn load_lora(&mut self, path: &Path, scale: f64) -> Result<()> {
        if !scale.is_finite() {
            return Err(Error::InvalidArgument(format!("LoRA scale must be finite, got {scale}")));
        }
        let updates = tch::no_grad(|| {
            let parameters =
                HashMap::from([(Target::Unet, self.unet_weights.parameters.as_slice()), (Target::TextEncoder, self.text_encoder_parameters.as_slice())]);
            lora::merged_weights(path, scale, &parameters)
        })?;
        let layers = updates.len();
        let mut parameters =
            HashMap::from([(Target::Unet, self.unet_weights.parameters.as_mut_slice()), (Target::TextEncoder, self.text_encoder_parameters.as_mut_slice())]);
        tch::no_grad(|| lora::install(updates, &mut parameters, &mut self.lora))?;
        tracing::info!(path = %path.display(), scale, layers, "LoRA merged");
        Ok(())
    }

    /// Removes every loaded LoRA adapter: the weights are the base model's again, bit for bit.
    pub fn unload_lora(&mut self) {
        let mut parameters =
            HashMap::from([(Target::Unet, self.unet_weights.parameters.as_mut_slice()), (Target::TextEncoder, self.text_encoder_parameters.as_mut_slice())]);
        tch::no_grad(|| lora::uninstall(&mut parameters, &mut self.lora));
    }

    /// Whether a LoRA adapter is merged into the weights.
    pub fn has_lora(&self) -> bool {
        !self.lora.is_empty()
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn dtype(&self) -> Kind {
        self.dtype
    }

    pub fn unet(&self) -> &UNet2DConditionModel {
        &self.unet
    }

    /// The UNet's attention projections, to attach LoRA adapters to for training.
    pub(crate) fn unet_attention_projections_mut(&mut self) -> Vec<(String, &mut nn::Linear)> {
        self.unet.attention_projections_mut()
    }

    /// The UNet's own parameter tensors, for training and saving inside the crate: they may view the
    /// weight file's mapping, so they must not outlive the model.
    pub(crate) fn unet_weights(&self) -> &ComponentWeights {
        &self.unet_weights
    }

    pub(crate) fn vae_weights(&self) -> &ComponentWeights {
        &self.vae_weights
    }

    /// The UNet's parameters under diffusers' names, in load order, copied: they own their memory, so
    /// they may outlive the model (its own tensors may view a mapped weight file).
    pub fn unet_parameters(&self) -> Result<Vec<(String, Tensor)>> {
        owned_copies(&self.unet_weights.parameters)
    }

    /// The text encoder's parameters as its weight files name them, copied as [`Self::unet_parameters`].
    pub fn text_encoder_parameters(&self) -> Result<Vec<(String, Tensor)>> {
        owned_copies(&self.text_encoder_parameters)
    }

    pub fn vae(&self) -> &AutoencoderKL {
        &self.vae
    }

    pub fn text_encoder(&self) -> &ClipTextModel {
        &self.text_encoder
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// Latent channels (4 for SD 1.5).
    pub fn latent_channels(&self) -> i64 {
        self.vae.config().latent_channels
    }

    /// Width of the text embeddings (768 for SD 1.5).
    pub fn text_embedding_dim(&self) -> i64 {
        self.text_encoder.config().hidden_size
    }

    /// Latent height and width for an image of the given size: what the VAE encoder's stride-2
    /// convolutions (padded right and bottom by one) make of it. Each of them needs a side of at least
    /// 2, so images too small for the encoder are an error here rather than inside libtorch.
    pub fn latent_size(&self, height: i64, width: i64) -> Result<(i64, i64)> {
        let downsamplers = self.vae.config().block_out_channels.len() - 1;
        let shrink = |mut side: i64| {
            for _ in 0..downsamplers {
                if side < 2 {
                    return Err(Error::InvalidArgument(format!(
                        "image {height}×{width} is too small for the VAE encoder ({downsamplers} stride-2 stages need sides of at least {})",
                        1 << downsamplers
                    )));
                }
                side = (side + 1 - 3) / 2 + 1;
            }
            Ok(side)
        };
        Ok((shrink(height)?, shrink(width)?))
    }

    /// Image height and width that decoding a latent of the given size produces.
    pub fn image_size(&self, height: i64, width: i64) -> (i64, i64) {
        let factor = 1i64 << (self.vae.config().block_out_channels.len() - 1);
        (height * factor, width * factor)
    }

    /// Token ids of `text`, padded to the tokenizer's maximum length.
    pub fn tokenize(&self, text: &str) -> Vec<i64> {
        self.tokenizer.encode(text)
    }

    /// The text encoder's `last_hidden_state` for each text: (B, L, D) in the compute dtype, on the
    /// model's device.
    pub fn text_embeddings(&self, texts: &[&str]) -> Result<Tensor> {
        let ids: Vec<Tensor> = texts.iter().map(|t| Tensor::from_slice(&self.tokenize(t))).collect();
        let ids = Tensor::f_stack(&ids, 0)?.f_to_device(self.device)?;
        let embeddings = tch::no_grad(|| self.text_encoder.forward(&ids))?;
        finite::check_tensor(&embeddings, "the text encoder's output (check its weights)")?;
        Ok(embeddings)
    }

    /// Encodes images (B, 3, H, W) with values in [-1, 1] (any device and float dtype) to the VAE
    /// posterior over unscaled latents, in f32 on the model's device.
    pub fn encode(&self, images: &Tensor) -> Result<LatentDistribution> {
        let (_, channels, h, w) = images.size4().map_err(|_| Error::InvalidArgument(format!("images must be (B, C, H, W), got {:?}", images.size())))?;
        let expected = self.vae.config().in_channels;
        if channels != expected || h <= 0 || w <= 0 {
            return Err(Error::InvalidArgument(format!("images must be (B, {expected}, H, W) with H, W > 0, got {:?}", images.size())));
        }
        self.latent_size(h, w)?;
        finite::check_tensor(images, "the image")?;
        let input = self.to_compute(images)?;
        let dist = tch::no_grad(|| self.vae.encode(&input))?;
        let (mean, std) = (dist.mean.f_to_kind(Kind::Float)?, dist.std.f_to_kind(Kind::Float)?);
        finite::check_tensor(&mean.f_add(&std)?, "the VAE encoder's output (check its weights)")?;
        Ok(LatentDistribution { mean, std })
    }

    /// The posterior mean × `scaling_factor`: the latents the UNet works on.
    pub fn encode_mean(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.encode(images)?.mean.f_mul_scalar(self.vae.config().scaling_factor)?)
    }

    /// Decodes scaled latents (B, C, h, w) to images (B, 3, H, W), about [-1, 1], unclamped, f32.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.check_latents(latents, "latents")?;
        finite::check_tensor(latents, "the latents")?;
        let z = self.to_compute(latents)?.f_div_scalar(self.vae.config().scaling_factor)?;
        let images = tch::no_grad(|| self.vae.decode(&z))?.f_to_kind(Kind::Float)?;
        finite::check_tensor(&images, "the VAE decoder's output (check its weights)")?;
        Ok(images)
    }

    /// The UNet's raw output for scaled latents (B, C, h, w) at integer `timesteps` (B,) conditioned on
    /// `context` (B, L, D), in f32. For v-prediction models this is v; see [`NoiseSchedule::to_epsilon`].
    pub fn predict_noise(&self, latents: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.predict_noise_with(latents, timesteps, context, None)
    }

    /// [`StableDiffusion::predict_noise`] with Plug-and-Play's feature injection: batch row 0 is the
    /// source branch, whose features at the injection's sites replace every other row's.
    pub fn predict_noise_injected(&self, latents: &Tensor, timesteps: &Tensor, context: &Tensor, injection: &Injection) -> Result<Tensor> {
        self.unet.check_injection(injection)?;
        self.predict_noise_with(latents, timesteps, context, Some(injection))
    }

    fn predict_noise_with(&self, latents: &Tensor, timesteps: &Tensor, context: &Tensor, injection: Option<&Injection>) -> Result<Tensor> {
        self.check_latents(latents, "latents")?;
        let batch = latents.size()[0];
        let t_count = timesteps.numel() as i64;
        if timesteps.dim() != 1 || (t_count != batch && t_count != 1) {
            return Err(Error::InvalidArgument(format!("timesteps must be 1 or {batch} values, got shape {:?}", timesteps.size())));
        }
        let steps = self.schedule.train_steps();
        let (min_t, max_t) = (timesteps.f_min()?.int64_value(&[]), timesteps.f_max()?.int64_value(&[]));
        if min_t < 0 || max_t >= steps {
            return Err(Error::InvalidArgument(format!("timesteps must lie in [0, {}], got {min_t}..{max_t}", steps - 1)));
        }
        let width = self.unet.config().cross_attention_dim.first();
        let context_shape = context.size();
        if context_shape.len() != 3 || context_shape[0] != batch || context_shape[2] != width {
            return Err(Error::InvalidArgument(format!("text embeddings must be ({batch}, L, {width}), got {context_shape:?}")));
        }
        finite::check_tensor(latents, "the latents")?;
        finite::check_tensor(context, "the text embeddings")?;
        let (x, c) = (self.to_compute(latents)?, self.to_compute(context)?);
        let t = timesteps.f_to_kind(Kind::Int64)?.f_to_device(self.device)?;
        let output = tch::no_grad(|| match injection {
            Some(injection) => self.unet.forward_injected(&x, &t, &c, injection),
            None => self.unet.forward(&x, &t, &c),
        })?
        .f_to_kind(Kind::Float)?;
        finite::check_tensor(&output, "the UNet's output (check its weights)")?;
        Ok(output)
    }

    fn check_latents(&self, latents: &Tensor, what: &str) -> Result<()> {
        let size = latents.size();
        let channels = self.latent_channels();
        if size.len() != 4 || size[1] != channels || size[0] == 0 || size[2] <= 0 || size[3] <= 0 {
            return Err(Error::InvalidArgument(format!("{what} must be (B, {channels}, h, w) with B, h, w > 0, got {size:?}")));
        }
        Ok(())
    }

    fn to_compute(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.f_to_device(self.device)?.f_to_kind(self.dtype)?)
    }
}

/// Copies of named tensors that own their storage.
fn owned_copies(parameters: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
    parameters.iter().map(|(name, t)| Ok((name.clone(), t.f_detach_copy()?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_and_dtype_names_read_back() {
        assert_eq!(parse_device(&device_name(Device::Cpu)).unwrap(), Device::Cpu);
        for kind in [Kind::Float, Kind::Half, Kind::BFloat16] {
            assert_eq!(parse_dtype(&dtype_name(kind)).unwrap(), kind);
        }
        assert_eq!(device_name(Device::Cuda(1)), "cuda:1");
    }

    #[test]
    fn a_base_gives_only_the_components_the_folder_lacks() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("unet")).unwrap();
        let overrides = ComponentOverrides::from_base(root.path(), Path::new("/base"));
        assert_eq!(overrides.unet, None);
        assert_eq!(overrides.vae, Some(PathBuf::from("/base/vae")));
        assert_eq!(overrides.scheduler, Some(PathBuf::from("/base/scheduler")));
    }
}
