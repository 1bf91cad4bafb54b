//! Single-file checkpoints in the original (CompVis / Stability "LDM") layout: one safetensors file with
//! the UNet under `model.diffusion_model.*`, the VAE under `first_stage_model.*` and the text encoder
//! under `cond_stage_model.transformer.*` (SD 1.x, OpenAI CLIP) or `cond_stage_model.model.*` (SD 2.x,
//! OpenCLIP, with each layer's query, key and value fused in one `in_proj`).
//!
//! Nothing is converted ahead: each component reads the file through a key map that turns the
//! diffusers name a layer asks for into the file's key (and slice, for the fused projections), so the
//! tensors are mapped and converted exactly as from a diffusers folder. The maps follow diffusers'
//! `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint` and `convert_open_clip_checkpoint`, run
//! backwards. The configs come from a diffusers folder given with the file, else from the original
//! inference configs (SD 1.x's v1-inference, SD 2.x's v2-inference-v), told apart by the width of the
//! cross-attention context (1024 for SD 2.x) or the OpenCLIP text encoder's keys.
use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use super::config::{ClipTextConfig, SchedulerConfig, UNetConfig, VaeConfig};
use super::scheduler::PredictionType;
use super::weights::{KeyMap, SourceKey, WeightFiles};
use crate::error::{Error, Result};

const UNET_PREFIX: &str = "model.diffusion_model.";
const EMA_PREFIX: &str = "model_ema.";
const VAE_PREFIX: &str = "first_stage_model.";
const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// The UNet key whose last dimension is the cross-attention context width, as diffusers detects SD 2.x.
const CONTEXT_KEY: &str = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";

/// Which original model family a single file is: it decides the built-in configs and the default
/// prediction type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdVersion {
    /// SD 1.x: CLIP ViT-L/14 text encoder, ε-prediction.
    V1,
    /// SD 2.x: OpenCLIP ViT-H/14 text encoder, v-prediction unless told otherwise (SD 2.x-base is ε).
    V2,
}

/// How to read a single-file checkpoint (ignored for diffusers folders).
#[derive(Debug, Clone, Default)]
pub struct SingleFileOptions {
    /// A diffusers folder whose `unet/`, `vae/`, `text_encoder/` configs (and `tokenizer/`,
    /// `scheduler/` when there) describe the file, as diffusers' `from_single_file(config=...)`.
    pub config: Option<PathBuf>,
    /// The model family; detected from the weights when None.
    pub version: Option<SdVersion>,
    /// The prediction type, overriding the scheduler's and the version's default.
    pub prediction: Option<PredictionType>,
    /// Read the UNet's EMA weights (`model_ema.*`) instead of the plain ones.
    pub ema: bool,
}

/// PyTorch pickle checkpoints: executing code on load, they are refused with a way to convert them.
const PICKLE_EXTENSIONS: [&str; 4] = ["ckpt", "pt", "pth", "bin"];

/// Whether `path` is meant as a single file: it is one, or it is named like a checkpoint file (so that
/// a missing `model.safetensors` or a `.ckpt` gets a message about files, not folders).
pub fn is_single_file(path: &Path) -> bool {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    path.is_file() || (!path.is_dir() && (extension == "safetensors" || PICKLE_EXTENSIONS.contains(&extension.as_str())))
}

/// Refuses a file that is not a safetensors single-file checkpoint, saying how to make one.
pub fn check_single_file(path: &Path) -> Result<()> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if PICKLE_EXTENSIONS.contains(&extension.as_str()) {
        return Err(Error::Unsupported(format!(
            "{} is a PyTorch pickle checkpoint, which libdiffmine does not read (unpickling runs code from the file). Convert it to safetensors once, in Python: \
             `import torch, safetensors.torch; sd = torch.load(\"{0}\", map_location=\"cpu\", weights_only=True); sd = sd.get(\"state_dict\", sd); \
             safetensors.torch.save_file({{k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}}, \"model.safetensors\")`, then open the .safetensors file",
            path.display()
        )));
    }
    if extension != "safetensors" {
        return Err(Error::Unsupported(format!("{}: a single-file checkpoint must be a .safetensors file (or give a diffusers folder)", path.display())));
    }
    Ok(())
}

/// What the file's keys say about it.
pub struct Layout {
    pub version: SdVersion,
    open_clip: bool,
    has_ema: bool,
}

impl Layout {
    /// Reads the file's header and tells its model family (unless given) and text-encoder layout.
    pub fn detect(path: &Path, version: Option<SdVersion>) -> Result<Self> {
        let files = WeightFiles::open(&[path.to_path_buf()], Device::Cpu, Kind::Float)?;
        if !files.has_key_prefix(UNET_PREFIX) {
            return Err(Error::InvalidModel(format!(
                "{} is not a Stable Diffusion single-file checkpoint: it has no `{UNET_PREFIX}*` keys (a diffusers component's own file belongs in its folder)",
                path.display()
            )));
        }
        let open_clip = files.has_key_prefix(OPEN_CLIP_PREFIX);
        let wide_context = files.shape_of(CONTEXT_KEY).and_then(|s| s.last()) == Some(&1024);
        let detected = if open_clip || wide_context { SdVersion::V2 } else { SdVersion::V1 };
        Ok(Layout { version: version.unwrap_or(detected), open_clip, has_ema: files.has_key_prefix(EMA_PREFIX) })
    }

    /// The UNet's key map for the given config, reading the EMA weights when asked.
    pub fn unet_keys(&self, config: &UNetConfig, ema: bool, path: &Path) -> Result<KeyMap> {
        if ema && !self.has_ema {
            return Err(Error::InvalidArgument(format!("{} holds no EMA weights (`{EMA_PREFIX}*` keys)", path.display())));
        }
        let blocks = UNetBlocks::new(config)?;
        Ok(Box::new(move |name| {
            let key = format!("{UNET_PREFIX}{}", blocks.original_name(name)?);
            Some(SourceKey::whole(if ema { ema_key(&key) } else { key }))
        }))
    }

    pub fn vae_keys(&self, config: &VaeConfig) -> KeyMap {
        let levels = config.block_out_channels.len();
        Box::new(move |name| Some(SourceKey::whole(format!("{VAE_PREFIX}{}", vae_original_name(name, levels)?))))
    }

    pub fn text_encoder_keys(&self) -> KeyMap {
        if self.open_clip {
            Box::new(open_clip_source)
        } else {
            Box::new(|name| Some(SourceKey::whole(format!("{CLIP_PREFIX}{name}"))))
        }
    }
}

/// The flat key under which the original training code kept a UNet weight's EMA: the module path with
/// its dots removed (`model_ema.diffusion_modelinput_blocks00weight`).
fn ema_key(key: &str) -> String {
    let rest: String = key.split('.').skip(1).collect();
    format!("{EMA_PREFIX}{rest}")
}

/// Where each diffusers block of the UNet lies among the original `input_blocks` and `output_blocks`.
struct UNetBlocks {
    /// Index of each down block's first entry in `input_blocks` (entry 0 is `conv_in`).
    down_start: Vec<usize>,
    down_layers: Vec<usize>,
    up_start: Vec<usize>,
    up_layers: Vec<usize>,
    /// Whether each up block has attentions, which push its upsampler from `.1` to `.2`.
    up_attention: Vec<bool>,
}

impl UNetBlocks {
    fn new(config: &UNetConfig) -> Result<Self> {
        let n = config.down_block_types.len();
        let layers: Vec<usize> = config.layers_per_block.expand("layers_per_block", n)?.iter().map(|&l| l as usize).collect();
        // Each down level holds its resnets plus a downsampler (none after the last, and nothing
        // follows it); each up level its resnets, one more than the down level's.
        let starts = |sizes: &mut dyn Iterator<Item = usize>, first: usize| -> Vec<usize> {
            sizes.scan(first, |next, size| Some(std::mem::replace(next, *next + size))).collect()
        };
        let down_start = starts(&mut layers.iter().map(|l| l + 1), 1);
        let up_layers: Vec<usize> = layers.iter().rev().map(|l| l + 1).collect();
        let up_start = starts(&mut up_layers.iter().copied(), 0);
        let up_attention = config.up_block_types.iter().map(|t| t.contains("CrossAttn")).collect();
        Ok(UNetBlocks { down_start, down_layers: layers, up_start, up_layers, up_attention })
    }

    /// The original name of the UNet tensor diffusers calls `name`.
    fn original_name(&self, name: &str) -> Option<String> {
        const TOP: [(&str, &str); 5] = [
            ("time_embedding.linear_1.", "time_embed.0."),
            ("time_embedding.linear_2.", "time_embed.2."),
            ("conv_in.", "input_blocks.0.0."),
            ("conv_norm_out.", "out.0."),
            ("conv_out.", "out.2."),
        ];
        if let Some(found) = replace_prefix(name, &TOP) {
            return Some(found);
        }
        let parts: Vec<&str> = name.splitn(5, '.').collect();
        match parts.as_slice() {
            ["mid_block", "resnets", index, rest @ ..] => {
                let block = if *index == "0" { 0 } else { 2 };
                Some(format!("middle_block.{block}.{}", resnet_original_name(&rest.join("."))?))
            }
            ["mid_block", "attentions", "0", rest @ ..] => Some(format!("middle_block.1.{}", rest.join("."))),
            ["down_blocks", block, kind, index, rest] => self.down_name(block.parse().ok()?, kind, index.parse().ok()?, rest),
            ["up_blocks", block, kind, index, rest] => self.up_name(block.parse().ok()?, kind, index.parse().ok()?, rest),
            _ => None,
        }
    }

    fn down_name(&self, block: usize, kind: &str, index: usize, rest: &str) -> Option<String> {
        let start = *self.down_start.get(block)?;
        match kind {
            "resnets" => Some(format!("input_blocks.{}.0.{}", start + index, resnet_original_name(rest)?)),
            "attentions" => Some(format!("input_blocks.{}.1.{rest}", start + index)),
            "downsamplers" if index == 0 => Some(format!("input_blocks.{}.0.op.{}", start + self.down_layers[block], rest.strip_prefix("conv.")?)),
            _ => None,
        }
    }

    fn up_name(&self, block: usize, kind: &str, index: usize, rest: &str) -> Option<String> {
        let start = *self.up_start.get(block)?;
        match kind {
            "resnets" => Some(format!("output_blocks.{}.0.{}", start + index, resnet_original_name(rest)?)),
            "attentions" => Some(format!("output_blocks.{}.1.{rest}", start + index)),
            "upsamplers" if index == 0 => {
                let position = if self.up_attention[block] { 2 } else { 1 };
                Some(format!("output_blocks.{}.{position}.{rest}", start + self.up_layers[block] - 1))
            }
            _ => None,
        }
    }
}

/// `rest` with the first matching prefix of `table` (diffusers → original) replaced.
fn replace_prefix(rest: &str, table: &[(&str, &str)]) -> Option<String> {
    table.iter().find_map(|(new, old)| rest.strip_prefix(new).map(|tail| format!("{old}{tail}")))
}

/// A UNet resnet's tensor under its original name.
fn resnet_original_name(rest: &str) -> Option<String> {
    const NAMES: [(&str, &str); 6] = [
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("conv_shortcut.", "skip_connection."),
    ];
    replace_prefix(rest, &NAMES)
}

/// The original name of the VAE tensor diffusers calls `name`, for a VAE of `levels` resolutions
/// (the original decoder numbers its levels from the lowest resolution up, diffusers from the top).
fn vae_original_name(name: &str, levels: usize) -> Option<String> {
    let (side, rest) = name.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return Some(name.to_string());
    }
    const TOP: [(&str, &str); 3] = [("conv_in.", "conv_in."), ("conv_out.", "conv_out."), ("conv_norm_out.", "norm_out.")];
    if let Some(found) = replace_prefix(rest, &TOP) {
        return Some(format!("{side}.{found}"));
    }
    let parts: Vec<&str> = rest.splitn(5, '.').collect();
    let original = match parts.as_slice() {
        ["mid_block", "resnets", index, rest @ ..] => format!("mid.block_{}.{}", index.parse::<usize>().ok()? + 1, vae_resnet_name(&rest.join("."))),
        ["mid_block", "attentions", "0", rest @ ..] => format!("mid.attn_1.{}", vae_attention_name(&rest.join("."))?),
        ["down_blocks", level, "resnets", index, rest] => format!("down.{level}.block.{index}.{}", vae_resnet_name(rest)),
        ["down_blocks", level, "downsamplers", "0", rest] => format!("down.{level}.downsample.{rest}"),
        ["up_blocks", level, "resnets", index, rest] => {
            format!("up.{}.block.{index}.{}", levels.checked_sub(1 + level.parse::<usize>().ok()?)?, vae_resnet_name(rest))
        }
        ["up_blocks", level, "upsamplers", "0", rest] => format!("up.{}.upsample.{rest}", levels.checked_sub(1 + level.parse::<usize>().ok()?)?),
        _ => return None,
    };
    Some(format!("{side}.{original}"))
}

fn vae_resnet_name(rest: &str) -> String {
    replace_prefix(rest, &[("conv_shortcut.", "nin_shortcut.")]).unwrap_or_else(|| rest.to_string())
}

/// The VAE attention's tensors: 1×1 convolutions in the original, linear layers in diffusers (the
/// weight files' loader takes one for the other).
fn vae_attention_name(rest: &str) -> Option<String> {
    const NAMES: [(&str, &str); 5] = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")];
    replace_prefix(rest, &NAMES)
}

/// Where the OpenCLIP text encoder keeps the CLIP text model tensor diffusers calls `name`.
fn open_clip_source(name: &str) -> Option<SourceKey> {
    let rest = name.strip_prefix("text_model.")?;
    const TOP: [(&str, &str); 3] = [
        ("embeddings.position_embedding.weight", "positional_embedding"),
        ("embeddings.token_embedding.", "token_embedding."),
        ("final_layer_norm.", "ln_final."),
    ];
    if let Some(found) = replace_prefix(rest, &TOP) {
        return Some(SourceKey::whole(format!("{OPEN_CLIP_PREFIX}{found}")));
    }
    let layer_rest = rest.strip_prefix("encoder.layers.")?;
    let (layer, inner) = layer_rest.split_once('.')?;
    let block = format!("{OPEN_CLIP_PREFIX}transformer.resblocks.{layer}");
    for (index, projection) in ["self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."].iter().enumerate() {
        if let Some(leaf) = inner.strip_prefix(projection) {
            return Some(SourceKey { key: format!("{block}.attn.in_proj_{leaf}"), slice: Some((index as u64, 3)) });
        }
    }
    const NAMES: [(&str, &str); 5] = [
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
        ("self_attn.out_proj.", "attn.out_proj."),
    ];
    Some(SourceKey::whole(format!("{block}.{}", replace_prefix(inner, &NAMES)?)))
}

/// The original inference configs as diffusers configs, for a file given without a config folder.
pub fn builtin_unet_config(version: SdVersion) -> serde_json::Value {
    let (head_dim, context, linear, size) = match version {
        SdVersion::V1 => (serde_json::json!(8), 768, false, 64),
        SdVersion::V2 => (serde_json::json!([5, 10, 20, 20]), 1024, true, 96),
    };
    serde_json::json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": head_dim,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": false,
        "cross_attention_dim": context,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": size,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "upcast_attention": version == SdVersion::V2,
        "use_linear_projection": linear,
    })
}

pub fn builtin_vae_config(version: SdVersion) -> serde_json::Value {
    serde_json::json!({
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": if version == SdVersion::V1 { 512 } else { 768 },
        "scaling_factor": 0.18215,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    })
}

/// CLIP ViT-L/14's text tower (SD 1.x) or OpenCLIP ViT-H/14's without its last layer (SD 2.x uses the
/// penultimate layer's output).
pub fn builtin_text_config(version: SdVersion) -> Result<ClipTextConfig> {
    let value = match version {
        SdVersion::V1 => {
            serde_json::json!({"hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12})
        }
        SdVersion::V2 => {
            serde_json::json!({"hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23})
        }
    };
    let defaults = serde_json::json!({"vocab_size": 49408, "max_position_embeddings": 77, "layer_norm_eps": 1e-5});
    let mut merged = defaults.as_object().cloned().unwrap_or_default();
    merged.extend(value.as_object().cloned().unwrap_or_default());
    serde_json::from_value(serde_json::Value::Object(merged)).map_err(|e| Error::InvalidModel(format!("built-in text encoder config: {e}")))
}

/// The scheduler SD 1.x and 2.x were trained with (scaled-linear betas 0.00085..0.012 over 1000
/// steps), as diffusers' `DDIMScheduler` config of those models, with the given prediction type.
pub fn builtin_scheduler_config(prediction: PredictionType) -> Result<SchedulerConfig> {
    let prediction = match prediction {
        PredictionType::Epsilon => "epsilon",
        PredictionType::VPrediction => "v_prediction",
    };
    serde_json::from_value(serde_json::json!({
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": prediction,
        "steps_offset": 1,
        "set_alpha_to_one": false,
        "timestep_spacing": "leading",
    }))
    .map_err(|e| Error::InvalidModel(format!("built-in scheduler config: {e}")))
}

/// The version's default prediction type (diffusers' for a file without a scheduler config).
pub fn default_prediction(version: SdVersion) -> PredictionType {
    match version {
        SdVersion::V1 => PredictionType::Epsilon,
        SdVersion::V2 => PredictionType::VPrediction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15_blocks() -> UNetBlocks {
        let config: UNetConfig = serde_json::from_value(builtin_unet_config(SdVersion::V1)).unwrap();
        UNetBlocks::new(&config).unwrap()
    }

    #[test]
    fn unet_names_follow_the_original_block_numbering() {
        let blocks = sd15_blocks();
        let cases = [
            ("conv_in.weight", "input_blocks.0.0.weight"),
            ("down_blocks.0.resnets.1.conv2.weight", "input_blocks.2.0.out_layers.3.weight"),
            ("down_blocks.0.attentions.1.proj_in.weight", "input_blocks.2.1.proj_in.weight"),
            ("down_blocks.0.downsamplers.0.conv.bias", "input_blocks.3.0.op.bias"),
            ("down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.4.0.skip_connection.weight"),
            ("down_blocks.3.resnets.1.time_emb_proj.weight", "input_blocks.11.0.emb_layers.1.weight"),
            ("mid_block.resnets.1.norm1.bias", "middle_block.2.in_layers.0.bias"),
            ("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", "middle_block.1.transformer_blocks.0.attn2.to_k.weight"),
            ("up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"),
            ("up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"),
            ("up_blocks.3.attentions.2.proj_out.weight", "output_blocks.11.1.proj_out.weight"),
            ("conv_out.bias", "out.2.bias"),
            ("time_embedding.linear_2.weight", "time_embed.2.weight"),
        ];
        for (diffusers, original) in cases {
            assert_eq!(blocks.original_name(diffusers).as_deref(), Some(original), "{diffusers}");
        }
        assert_eq!(ema_key("model.diffusion_model.input_blocks.0.0.weight"), "model_ema.diffusion_modelinput_blocks00weight");
    }

    #[test]
    fn vae_and_open_clip_names() {
        assert_eq!(vae_original_name("decoder.up_blocks.0.resnets.2.conv1.weight", 4).as_deref(), Some("decoder.up.3.block.2.conv1.weight"));
        assert_eq!(vae_original_name("encoder.mid_block.attentions.0.to_out.0.weight", 4).as_deref(), Some("encoder.mid.attn_1.proj_out.weight"));
        assert_eq!(vae_original_name("post_quant_conv.bias", 4).as_deref(), Some("post_quant_conv.bias"));
        let k = open_clip_source("text_model.encoder.layers.3.self_attn.k_proj.bias").unwrap();
        assert_eq!((k.key.as_str(), k.slice), ("cond_stage_model.model.transformer.resblocks.3.attn.in_proj_bias", Some((1, 3))));
    }
}
