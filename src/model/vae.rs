//! diffusers' `AutoencoderKL` (the SD 1.x/2.x VAE): encoder to a diagonal Gaussian over latents, and
//! decoder back to pixels.
use tch::Tensor;

use super::attention::{Attention, AttentionShape};
use super::config::VaeConfig;
use super::nn::{Conv2d, GroupNorm};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetShape, Upsample2D};
use super::weights::WeightPath;
use crate::error::Result;

/// The VAE's norms all use this epsilon.
const VAE_EPS: f64 = 1e-6;

fn resnet(p: &WeightPath, c_in: i64, c_out: i64, groups: i64) -> Result<ResnetBlock2D> {
    ResnetBlock2D::load(p, &ResnetShape { c_in, c_out, temb: None, groups, eps: VAE_EPS, output_scale: 1.0 })
}

/// Single-head self-attention over pixels with its own group norm and a residual connection.
struct SpatialAttention {
    group_norm: GroupNorm,
    attention: Attention,
}

impl SpatialAttention {
    fn load(p: &WeightPath, channels: i64, groups: i64) -> Result<Self> {
        let shape = AttentionShape { query_dim: channels, context_dim: channels, heads: 1, head_dim: channels, qkv_bias: true, upcast: true };
        Ok(SpatialAttention { group_norm: GroupNorm::load(&p.sub("group_norm"), groups, channels, VAE_EPS)?, attention: Attention::load(p, &shape)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.size4()?;
        let tokens = self.group_norm.forward(x)?.f_reshape([b, c, h * w])?.f_transpose(1, 2)?;
        let out = self.attention.forward(&tokens, None)?;
        Ok(out.f_transpose(1, 2)?.f_reshape([b, c, h, w])?.f_add(x)?)
    }
}

/// `UNetMidBlock2D` as the VAE uses it: resnet, optional attention, resnet.
struct MidBlock {
    first: ResnetBlock2D,
    attention: Option<SpatialAttention>,
    second: ResnetBlock2D,
}

impl MidBlock {
    fn load(p: &WeightPath, channels: i64, groups: i64, with_attention: bool) -> Result<Self> {
        let attention = if with_attention { Some(SpatialAttention::load(&p.sub("attentions").sub(0), channels, groups)?) } else { None };
        Ok(MidBlock {
            first: resnet(&p.sub("resnets").sub(0), channels, channels, groups)?,
            attention,
            second: resnet(&p.sub("resnets").sub(1), channels, channels, groups)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.first.forward(x, None)?;
        if let Some(attention) = &self.attention {
            h = attention.forward(&h)?;
        }
        self.second.forward(&h, None)
    }
}

struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid_block: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn load(p: &WeightPath, c: &VaeConfig) -> Result<Self> {
        let channels = &c.block_out_channels;
        let groups = c.norm_num_groups;
        let mut c_prev = channels[0];
        let mut down_blocks = Vec::new();
        for (i, &c_out) in channels.iter().enumerate() {
            let bp = p.sub("down_blocks").sub(i);
            let resnets = (0..c.layers_per_block)
                .map(|j| resnet(&bp.sub("resnets").sub(j), if j == 0 { c_prev } else { c_out }, c_out, groups))
                .collect::<Result<Vec<_>>>()?;
            let is_final = i == channels.len() - 1;
            let down = if is_final { None } else { Some(Downsample2D::load(&bp.sub("downsamplers").sub(0), c_out, 0)?) };
            down_blocks.push((resnets, down));
            c_prev = c_out;
        }
        let c_last = *channels.last().expect("check_supported guarantees one block");
        Ok(Encoder {
            conv_in: Conv2d::load(&p.sub("conv_in"), c.in_channels, channels[0], 3, 1, 1)?,
            down_blocks,
            mid_block: MidBlock::load(&p.sub("mid_block"), c_last, groups, c.mid_block_add_attention)?,
            conv_norm_out: GroupNorm::load(&p.sub("conv_norm_out"), groups, c_last, VAE_EPS)?,
            conv_out: Conv2d::load(&p.sub("conv_out"), c_last, 2 * c.latent_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for (resnets, down) in &self.down_blocks {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(down) = down {
                h = down.forward(&h)?;
            }
        }
        let h = self.mid_block.forward(&h)?;
        self.conv_out.forward(&self.conv_norm_out.forward(&h)?.f_silu()?)
    }
}

struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn load(p: &WeightPath, c: &VaeConfig) -> Result<Self> {
        let reversed: Vec<i64> = c.block_out_channels.iter().rev().copied().collect();
        let groups = c.norm_num_groups;
        let mut c_prev = reversed[0];
        let mut up_blocks = Vec::new();
        for (i, &c_out) in reversed.iter().enumerate() {
            let bp = p.sub("up_blocks").sub(i);
            let resnets = (0..c.layers_per_block + 1)
                .map(|j| resnet(&bp.sub("resnets").sub(j), if j == 0 { c_prev } else { c_out }, c_out, groups))
                .collect::<Result<Vec<_>>>()?;
            let is_final = i == reversed.len() - 1;
            let up = if is_final { None } else { Some(Upsample2D::load(&bp.sub("upsamplers").sub(0), c_out)?) };
            up_blocks.push((resnets, up));
            c_prev = c_out;
        }
        let c_first = c.block_out_channels[0];
        Ok(Decoder {
            conv_in: Conv2d::load(&p.sub("conv_in"), c.latent_channels, reversed[0], 3, 1, 1)?,
            mid_block: MidBlock::load(&p.sub("mid_block"), reversed[0], groups, c.mid_block_add_attention)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(&p.sub("conv_norm_out"), groups, c_first, VAE_EPS)?,
            conv_out: Conv2d::load(&p.sub("conv_out"), c_first, c.out_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.mid_block.forward(&self.conv_in.forward(z)?)?;
        for (resnets, up) in &self.up_blocks {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(up) = up {
                h = up.forward(&h, None)?;
            }
        }
        self.conv_out.forward(&self.conv_norm_out.forward(&h)?.f_silu()?)
    }
}

/// The encoder's output distribution over (unscaled) latents.
pub struct LatentDistribution {
    pub mean: Tensor,
    pub std: Tensor,
}

impl LatentDistribution {
    /// mean + std · noise, the posterior sample diffusers' `latent_dist.sample()` draws.
    pub fn sample_with(&self, noise: &Tensor) -> Result<Tensor> {
        Ok(self.mean.f_add(&self.std.f_mul(noise)?)?)
    }
}

pub struct AutoencoderKL {
    config: VaeConfig,
    encoder: Encoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    decoder: Decoder,
}

impl AutoencoderKL {
    pub(crate) fn load(p: &WeightPath, config: VaeConfig) -> Result<Self> {
        config.check_supported()?;
        let latent = config.latent_channels;
        let quant_conv = if config.use_quant_conv { Some(Conv2d::load(&p.sub("quant_conv"), 2 * latent, 2 * latent, 1, 1, 0)?) } else { None };
        let post_quant_conv = if config.use_post_quant_conv { Some(Conv2d::load(&p.sub("post_quant_conv"), latent, latent, 1, 1, 0)?) } else { None };
        Ok(AutoencoderKL {
            encoder: Encoder::load(&p.sub("encoder"), &config)?,
            decoder: Decoder::load(&p.sub("decoder"), &config)?,
            quant_conv,
            post_quant_conv,
            config,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Encodes images (B, 3, H, W) in [-1, 1] to the latent posterior (not yet scaled).
    pub fn encode(&self, images: &Tensor) -> Result<LatentDistribution> {
        let _span = tracing::debug_span!("vae_encode").entered();
        let mut moments = self.encoder.forward(images)?;
        if let Some(conv) = &self.quant_conv {
            moments = conv.forward(&moments)?;
        }
        let halves = moments.f_chunk(2, 1)?;
        let logvar = halves[1].f_clamp(-30.0, 20.0)?;
        let std = logvar.f_mul_scalar(0.5)?.f_exp()?;
        Ok(LatentDistribution { mean: halves[0].shallow_clone(), std })
    }

    /// Decodes unscaled latents (B, C, h, w) to images in about [-1, 1] (not clamped).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let _span = tracing::debug_span!("vae_decode").entered();
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents)?,
            None => latents.shallow_clone(),
        };
        self.decoder.forward(&z)
    }
}
