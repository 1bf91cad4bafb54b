//! The `config.json` files of a diffusers folder as typed structs. Defaults are diffusers' and
//! transformers' own, so a config that omits a key means what it means there. Keys whose non-default
//! values select architectures this library does not implement are checked and refused by name.
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A config value that diffusers accepts either as one number for all blocks or as a list per block.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(i64),
    Each(Vec<i64>),
}

impl PerBlock {
    /// The value of the first block (SD's blocks share one cross-attention width).
    pub fn first(&self) -> i64 {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.first().copied().unwrap_or(0),
        }
    }

    /// The value for each of `blocks` blocks.
    pub fn expand(&self, key: &str, blocks: usize) -> Result<Vec<i64>> {
        match self {
            PerBlock::One(v) => Ok(vec![*v; blocks]),
            PerBlock::Each(v) if v.len() == blocks => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::InvalidModel(format!("`{key}` lists {} values but the model has {blocks} blocks", v.len()))),
        }
    }
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::InvalidModel(format!("{}: {e}", path.display())))
}

fn d_true() -> bool {
    true
}

/// `InvalidModel` naming `component`'s `key` unless `value` is a finite number above 0 (an epsilon, a
/// scale): anything else makes the model compute NaN or infinity, or divide by zero.
fn check_positive(component: &str, key: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        return Ok(());
    }
    Err(Error::InvalidModel(format!("{component} config `{key}` = {value} must be a finite number above 0")))
}

/// `InvalidModel` naming `component`'s `key` unless every one of `values` (channel or group counts) is
/// at least 1, and there is at least one.
fn check_counts(component: &str, key: &str, values: &[i64]) -> Result<()> {
    if values.is_empty() || values.iter().any(|&v| v < 1) {
        return Err(Error::InvalidModel(format!("{component} config `{key}` = {values:?} must list at least one value, each at least 1")));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "unet_defaults::in_channels")]
    pub in_channels: i64,
    #[serde(default = "unet_defaults::in_channels")]
    pub out_channels: i64,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: i64,
    #[serde(default = "unet_defaults::down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "unet_defaults::mid_block_type")]
    pub mid_block_type: Option<String>,
    #[serde(default = "unet_defaults::up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "unet_defaults::block_out_channels")]
    pub block_out_channels: Vec<i64>,
    #[serde(default = "unet_defaults::layers_per_block")]
    pub layers_per_block: PerBlock,
    #[serde(default = "unet_defaults::downsample_padding")]
    pub downsample_padding: i64,
    #[serde(default = "unet_defaults::mid_block_scale_factor")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "unet_defaults::act_fn")]
    pub act_fn: String,
    #[serde(default = "unet_defaults::norm_num_groups")]
    pub norm_num_groups: i64,
    #[serde(default = "unet_defaults::norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "unet_defaults::cross_attention_dim")]
    pub cross_attention_dim: PerBlock,
    #[serde(default = "unet_defaults::transformer_layers_per_block")]
    pub transformer_layers_per_block: PerBlock,
    #[serde(default = "unet_defaults::attention_head_dim")]
    pub attention_head_dim: PerBlock,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "unet_defaults::conv_kernel")]
    pub conv_in_kernel: i64,
    #[serde(default = "unet_defaults::conv_kernel")]
    pub conv_out_kernel: i64,
    #[serde(default)]
    pub sample_size: Option<i64>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

mod unet_defaults {
    use super::PerBlock;
    pub fn in_channels() -> i64 {
        4
    }
    pub fn down_block_types() -> Vec<String> {
        ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"].map(String::from).to_vec()
    }
    pub fn mid_block_type() -> Option<String> {
        Some("UNetMidBlock2DCrossAttn".into())
    }
    pub fn up_block_types() -> Vec<String> {
        ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"].map(String::from).to_vec()
    }
    pub fn block_out_channels() -> Vec<i64> {
        vec![320, 640, 1280, 1280]
    }
    pub fn layers_per_block() -> PerBlock {
        PerBlock::One(2)
    }
    pub fn downsample_padding() -> i64 {
        1
    }
    pub fn mid_block_scale_factor() -> f64 {
        1.0
    }
    pub fn act_fn() -> String {
        "silu".into()
    }
    pub fn norm_num_groups() -> i64 {
        32
    }
    pub fn norm_eps() -> f64 {
        1e-5
    }
    pub fn cross_attention_dim() -> PerBlock {
        PerBlock::One(1280)
    }
    pub fn transformer_layers_per_block() -> PerBlock {
        PerBlock::One(1)
    }
    pub fn attention_head_dim() -> PerBlock {
        PerBlock::One(8)
    }
    pub fn conv_kernel() -> i64 {
        3
    }
}

impl UNetConfig {
    /// Refuses configurations whose extra features (beyond Stable Diffusion 1.x/2.x text-to-image)
    /// this implementation does not have, rather than silently ignoring them.
    pub fn check_supported(&self) -> Result<()> {
        let unsupported_if_set = [
            "class_embed_type",
            "addition_embed_type",
            "encoder_hid_dim",
            "time_cond_proj_dim",
            "num_class_embeds",
            "projection_class_embeddings_input_dim",
            "reverse_transformer_layers_per_block",
        ];
        for key in unsupported_if_set {
            if self.rest.get(key).is_some_and(|v| !v.is_null()) {
                return Err(Error::Unsupported(format!("UNet config `{key}` is not supported (only null)")));
            }
        }
        let must_equal = [("resnet_time_scale_shift", "default"), ("time_embedding_type", "positional")];
        for (key, value) in must_equal {
            if let Some(v) = self.rest.get(key) {
                if v.as_str() != Some(value) {
                    return Err(Error::Unsupported(format!("UNet config `{key}` = {v} is not supported (only \"{value}\")")));
                }
            }
        }
        for key in ["only_cross_attention", "dual_cross_attention"] {
            if self.rest.get(key).is_some_and(|v| v.as_bool() == Some(true)) {
                return Err(Error::Unsupported(format!("UNet config `{key}` = true is not supported")));
            }
        }
        if self.act_fn != "silu" {
            return Err(Error::Unsupported(format!("UNet config `act_fn` = \"{}\" is not supported (only \"silu\")", self.act_fn)));
        }
        check_counts("UNet", "block_out_channels", &self.block_out_channels)?;
        check_counts("UNet", "norm_num_groups", &[self.norm_num_groups])?;
        check_positive("UNet", "norm_eps", self.norm_eps)?;
        if self.down_block_types.len() != self.block_out_channels.len() || self.up_block_types.len() != self.block_out_channels.len() {
            return Err(Error::InvalidModel(format!(
                "UNet config lists {} down blocks, {} up blocks and {} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len(),
                self.block_out_channels.len()
            )));
        }
        Ok(())
    }

    /// Heads per block. diffusers' `attention_head_dim` is, for SD 1.x/2.x, really the number of heads
    /// (a naming slip kept for compatibility); `num_attention_heads`, when given, takes precedence.
    pub fn heads_per_block(&self) -> Result<Vec<i64>> {
        let blocks = self.block_out_channels.len();
        let (key, heads) = match &self.num_attention_heads {
            Some(heads) => ("num_attention_heads", heads.expand("num_attention_heads", blocks)?),
            None => ("attention_head_dim", self.attention_head_dim.expand("attention_head_dim", blocks)?),
        };
        check_counts("UNet", key, &heads)?;
        Ok(heads)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "vae_defaults::channels")]
    pub in_channels: i64,
    #[serde(default = "vae_defaults::channels")]
    pub out_channels: i64,
    #[serde(default = "vae_defaults::down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "vae_defaults::up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "vae_defaults::block_out_channels")]
    pub block_out_channels: Vec<i64>,
    #[serde(default = "vae_defaults::layers_per_block")]
    pub layers_per_block: i64,
    #[serde(default = "unet_defaults::act_fn")]
    pub act_fn: String,
    #[serde(default = "vae_defaults::latent_channels")]
    pub latent_channels: i64,
    #[serde(default = "unet_defaults::norm_num_groups")]
    pub norm_num_groups: i64,
    #[serde(default = "vae_defaults::scaling_factor")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
}

mod vae_defaults {
    pub fn channels() -> i64 {
        3
    }
    pub fn down_block_types() -> Vec<String> {
        vec!["DownEncoderBlock2D".into()]
    }
    pub fn up_block_types() -> Vec<String> {
        vec!["UpDecoderBlock2D".into()]
    }
    pub fn block_out_channels() -> Vec<i64> {
        vec![64]
    }
    pub fn layers_per_block() -> i64 {
        1
    }
    pub fn latent_channels() -> i64 {
        4
    }
    pub fn scaling_factor() -> f64 {
        0.18215
    }
}

impl VaeConfig {
    pub fn check_supported(&self) -> Result<()> {
        for t in &self.down_block_types {
            if t != "DownEncoderBlock2D" {
                return Err(Error::Unsupported(format!("VAE down block type `{t}` is not supported (only DownEncoderBlock2D)")));
            }
        }
        for t in &self.up_block_types {
            if t != "UpDecoderBlock2D" {
                return Err(Error::Unsupported(format!("VAE up block type `{t}` is not supported (only UpDecoderBlock2D)")));
            }
        }
        if self.act_fn != "silu" {
            return Err(Error::Unsupported(format!("VAE `act_fn` = \"{}\" is not supported (only \"silu\")", self.act_fn)));
        }
        if self.down_block_types.len() != self.block_out_channels.len() || self.up_block_types.len() != self.block_out_channels.len() {
            return Err(Error::InvalidModel("VAE config: block type lists and block_out_channels differ in length".into()));
        }
        check_counts("VAE", "block_out_channels", &self.block_out_channels)?;
        check_counts("VAE", "norm_num_groups", &[self.norm_num_groups])?;
        check_counts("VAE", "latent_channels", &[self.latent_channels])?;
        check_positive("VAE", "scaling_factor", self.scaling_factor)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "clip_defaults::vocab_size")]
    pub vocab_size: i64,
    #[serde(default = "clip_defaults::hidden_size")]
    pub hidden_size: i64,
    #[serde(default = "clip_defaults::intermediate_size")]
    pub intermediate_size: i64,
    #[serde(default = "clip_defaults::num_hidden_layers")]
    pub num_hidden_layers: i64,
    #[serde(default = "clip_defaults::num_attention_heads")]
    pub num_attention_heads: i64,
    #[serde(default = "clip_defaults::max_position_embeddings")]
    pub max_position_embeddings: i64,
    #[serde(default = "clip_defaults::hidden_act")]
    pub hidden_act: String,
    #[serde(default = "clip_defaults::layer_norm_eps")]
    pub layer_norm_eps: f64,
}

mod clip_defaults {
    pub fn vocab_size() -> i64 {
        49408
    }
    pub fn hidden_size() -> i64 {
        512
    }
    pub fn intermediate_size() -> i64 {
        2048
    }
    pub fn num_hidden_layers() -> i64 {
        12
    }
    pub fn num_attention_heads() -> i64 {
        8
    }
    pub fn max_position_embeddings() -> i64 {
        77
    }
    pub fn hidden_act() -> String {
        "quick_gelu".into()
    }
    pub fn layer_norm_eps() -> f64 {
        1e-5
    }
}

impl ClipTextConfig {
    /// Reads a text encoder's config: a `CLIPTextModel` config, or a full `CLIPModel` config (as
    /// openai/clip-vit-large-patch14-336 ships) whose `text_config` is taken.
    pub fn read(path: &Path) -> Result<Self> {
        let value: serde_json::Value = read_json(path)?;
        let text = value.get("text_config").cloned().unwrap_or(value);
        let config: Self = serde_json::from_value(text).map_err(|e| Error::InvalidModel(format!("{}: {e}", path.display())))?;
        check_positive("text encoder", "layer_norm_eps", config.layer_norm_eps)?;
        check_counts("text encoder", "num_attention_heads", &[config.num_attention_heads])?;
        Ok(config)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "sched_defaults::num_train_timesteps")]
    pub num_train_timesteps: i64,
    #[serde(default = "sched_defaults::beta_start")]
    pub beta_start: f64,
    #[serde(default = "sched_defaults::beta_end")]
    pub beta_end: f64,
    #[serde(default = "sched_defaults::beta_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "sched_defaults::prediction_type")]
    pub prediction_type: String,
    #[serde(default)]
    pub steps_offset: i64,
    #[serde(default = "sched_defaults::timestep_spacing")]
    pub timestep_spacing: String,
    #[serde(default = "d_true")]
    pub set_alpha_to_one: bool,
}

mod sched_defaults {
    pub fn num_train_timesteps() -> i64 {
        1000
    }
    pub fn beta_start() -> f64 {
        0.0001
    }
    pub fn beta_end() -> f64 {
        0.02
    }
    pub fn beta_schedule() -> String {
        "linear".into()
    }
    pub fn prediction_type() -> String {
        "epsilon".into()
    }
    pub fn timestep_spacing() -> String {
        "leading".into()
    }
}
