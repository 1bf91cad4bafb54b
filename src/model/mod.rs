//! Stable Diffusion 1.x/2.x from a diffusers folder: UNet, VAE, CLIP text encoder, tokenizer and noise
//! schedule, on CPU (f32, bf16) or CUDA (f32, f16, bf16).
pub mod attention;
pub mod autocast;
pub mod clip;
pub mod config;
pub mod ddim;
pub mod embeddings;
pub mod loading;
pub mod nn;
pub mod resnet;
pub mod scheduler;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub(crate) mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use clip::ClipTextModel;
use config::{read_json, ClipTextConfig, SchedulerConfig, UNetConfig, VaeConfig};
use scheduler::NoiseSchedule;
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
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions { device: Device::Cpu, dtype: Kind::Float, variant: None, overrides: ComponentOverrides::default() }
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

/// A loaded Stable Diffusion model. All operations take `&self`, and a model may be shared between
/// threads: the weights are never written after loading.
pub struct StableDiffusion {
    unet: UNet2DConditionModel,
    /// The trainable components' tensors and configs: what training updates and saves.
    unet_weights: ComponentWeights,
    vae_weights: ComponentWeights,
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
// them to libtorch operators that allocate new outputs and never write their inputs. The one writer,
// finetuning's `Trainer`, owns the model, so no other thread can see it then (its writes to tensors
// that view a weight file's private mapping land in copy-on-write pages of this process). libtorch tensors'
// reference counts are atomic, so concurrent shallow copies are sound as well.
unsafe impl Sync for StableDiffusion {}

fn check_dtype_on_device(device: Device, dtype: Kind) -> Result<()> {
    if device == Device::Cpu && dtype == Kind::Half {
        return Err(Error::InvalidArgument("float16 is not supported on the CPU (use float32 or bfloat16)".into()));
    }
    Ok(())
}

impl StableDiffusion {
    /// Loads a diffusers pipeline folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, `scheduler/`), taking overridden components from their own folders.
    pub fn open(root: &Path, options: &ModelOptions) -> Result<Self> {
        let started = Instant::now();
        loading::check_pipeline_folder(root)?;
        check_dtype_on_device(options.device, options.dtype)?;
        let dir = |component| options.overrides.component_dir(root, component);
        let (unet_dir, vae_dir, text_dir) = (dir(Component::Unet), dir(Component::Vae), dir(Component::TextEncoder));
        let tokenizer = ClipTokenizer::from_dir(&dir(Component::Tokenizer))?;
        let scheduler_config: SchedulerConfig = read_json(&loading::component_config(&dir(Component::Scheduler), "scheduler_config.json")?)?;
        let schedule = NoiseSchedule::new(scheduler_config)?;
        let (unet_json, unet_config): (_, UNetConfig) = read_config(&unet_dir)?;
        let (vae_json, vae_config): (_, VaeConfig) = read_config(&vae_dir)?;
        let text_config = ClipTextConfig::read(&loading::component_config(&text_dir, "config.json")?)?;
        let (device, dtype, variant) = (options.device, options.dtype, options.variant.as_deref());
        let load_weights = |dir: &Path| -> Result<WeightFiles> { WeightFiles::open(&loading::weight_files(dir, variant)?, device, dtype) };
        let mut mappings = Vec::new();
        let (unet, unet_weights, vae, vae_weights, text_encoder) = tch::no_grad(|| -> Result<_> {
            let files = load_weights(&unet_dir)?;
            let unet = UNet2DConditionModel::load(&WeightPath::root(&files), unet_config)?;
            mappings.extend(files.mappings_in_use());
            let unet_weights = ComponentWeights { parameters: files.into_parameters(), config: unet_json };
            let files = load_weights(&vae_dir)?;
            let vae = AutoencoderKL::load(&WeightPath::root(&files), vae_config)?;
            mappings.extend(files.mappings_in_use());
            let vae_weights = ComponentWeights { parameters: files.into_parameters(), config: vae_json };
            let files = load_weights(&text_dir)?;
            let text_encoder = ClipTextModel::load(&WeightPath::root(&files), text_config)?;
            mappings.extend(files.mappings_in_use());
            Ok((unet, unet_weights, vae, vae_weights, text_encoder))
        })?;
        tracing::info!(path = %root.display(), ?device, ?dtype, seconds = started.elapsed().as_secs_f64(), "model loaded");
        Ok(StableDiffusion { unet, unet_weights, vae_weights, vae, text_encoder, tokenizer, schedule, device, dtype, _mappings: mappings })
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
        self.unet_weights.parameters.iter().map(|(name, t)| Ok((name.clone(), t.f_detach_copy()?))).collect()
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
        tch::no_grad(|| self.text_encoder.forward(&ids))
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
        let input = self.to_compute(images)?;
        let dist = tch::no_grad(|| self.vae.encode(&input))?;
        Ok(LatentDistribution { mean: dist.mean.f_to_kind(Kind::Float)?, std: dist.std.f_to_kind(Kind::Float)? })
    }

    /// The posterior mean × `scaling_factor`: the latents the UNet works on.
    pub fn encode_mean(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.encode(images)?.mean.f_mul_scalar(self.vae.config().scaling_factor)?)
    }

    /// Decodes scaled latents (B, C, h, w) to images (B, 3, H, W), about [-1, 1], unclamped, f32.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.check_latents(latents, "latents")?;
        let z = self.to_compute(latents)?.f_div_scalar(self.vae.config().scaling_factor)?;
        Ok(tch::no_grad(|| self.vae.decode(&z))?.f_to_kind(Kind::Float)?)
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
        let (x, c) = (self.to_compute(latents)?, self.to_compute(context)?);
        let t = timesteps.f_to_kind(Kind::Int64)?.f_to_device(self.device)?;
        let output = tch::no_grad(|| match injection {
            Some(injection) => self.unet.forward_injected(&x, &t, &c, injection),
            None => self.unet.forward(&x, &t, &c),
        })?;
        Ok(output.f_to_kind(Kind::Float)?)
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
