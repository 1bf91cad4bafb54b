//! Attention as diffusers' `Attention` with `AttnProcessor2_0`, and the transformer blocks of the UNet.
//! The product itself goes through libtorch's fused scaled-dot-product attention.
use tch::{Kind, Tensor};

use super::nn::{merge_heads, share_first_row, split_heads, Conv2d, GroupNorm, LayerNorm, Linear};
use super::weights::WeightPath;
use crate::error::Result;

/// Multi-head attention: self-attention when no context is given, cross-attention otherwise.
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
    /// Compute the product in f32 when the weights are f16/bf16 (diffusers' `upcast_attention`).
    upcast: bool,
}

/// The projection names: diffusers' current ones, or the pre-0.14 VAE names that SD 1.x checkpoints
/// converted long ago still carry.
const CURRENT_NAMES: [&str; 4] = ["to_q", "to_k", "to_v", "to_out.0"];
const LEGACY_NAMES: [&str; 4] = ["query", "key", "value", "proj_attn"];

pub struct AttentionShape {
    pub query_dim: i64,
    pub context_dim: i64,
    pub heads: i64,
    pub head_dim: i64,
    pub qkv_bias: bool,
    pub upcast: bool,
}

impl Attention {
    pub(crate) fn load(p: &WeightPath, s: &AttentionShape) -> Result<Self> {
        let names = if !p.contains("to_q.weight") && p.contains("query.weight") { LEGACY_NAMES } else { CURRENT_NAMES };
        let inner = s.heads * s.head_dim;
        Ok(Attention {
            to_q: Linear::load(&p.sub(names[0]), s.query_dim, inner, s.qkv_bias)?,
            to_k: Linear::load(&p.sub(names[1]), s.context_dim, inner, s.qkv_bias)?,
            to_v: Linear::load(&p.sub(names[2]), s.context_dim, inner, s.qkv_bias)?,
            to_out: Linear::load(&p.sub(names[3]), inner, s.query_dim, true)?,
            heads: s.heads,
            upcast: s.upcast,
        })
    }

    /// The four projections under their diffusers names below `prefix`.
    fn projections_mut<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Linear)>) {
        let layers = [&mut self.to_q, &mut self.to_k, &mut self.to_v, &mut self.to_out];
        out.extend(CURRENT_NAMES.iter().zip(layers).map(|(name, layer)| (format!("{prefix}.{name}"), layer)));
    }

    /// `x`: (B, L, query_dim); `context`: (B, S, context_dim) or None for self-attention.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with(x, context, false)
    }

    /// `share_first_row_qk`: batch row 0's queries and keys replace every row's (values stay each
    /// row's own): Plug-and-Play's self-attention injection.
    fn forward_with(&self, x: &Tensor, context: Option<&Tensor>, share_first_row_qk: bool) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let mut q = self.to_q.forward(x)?;
        let mut k = self.to_k.forward(context)?;
        if share_first_row_qk {
            q = share_first_row(&q)?;
            k = share_first_row(&k)?;
        }
        let q = split_heads(&q, self.heads)?;
        let k = split_heads(&k, self.heads)?;
        let v = split_heads(&self.to_v.forward(context)?, self.heads)?;
        let out = if self.upcast && x.kind() != Kind::Float {
            let f = |t: &Tensor| t.f_to_kind(Kind::Float);
            sdpa(&f(&q)?, &f(&k)?, &f(&v)?, false)?.f_to_kind(x.kind())?
        } else {
            sdpa(&q, &k, &v, false)?
        };
        self.to_out.forward(&merge_heads(&out)?)
    }
}

/// Scaled dot-product attention over (B, H, L, D) tensors with the default 1/sqrt(D) scale.
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    Ok(Tensor::f_scaled_dot_product_attention::<Tensor>(q, k, v, None, 0.0, causal, None, false)?)
}

/// GEGLU feed-forward (`ff.net.0.proj`, `ff.net.2`), four times wider inside.
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn load(p: &WeightPath, dim: i64) -> Result<Self> {
        let inner = dim * 4;
        Ok(FeedForward { proj: Linear::load(&p.sub("net.0.proj"), dim, inner * 2, true)?, out: Linear::load(&p.sub("net.2"), inner, dim, true)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let projected = self.proj.forward(x)?;
        let halves = projected.f_chunk(2, -1)?;
        let gated = halves[0].f_mul(&halves[1].f_gelu("none")?)?;
        self.out.forward(&gated)
    }
}

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention, feed-forward, each pre-normed
/// and residual.
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl TransformerBlock {
    fn load(p: &WeightPath, dim: i64, heads: i64, context_dim: i64, upcast: bool) -> Result<Self> {
        let head_dim = dim / heads;
        let self_attn = AttentionShape { query_dim: dim, context_dim: dim, heads, head_dim, qkv_bias: false, upcast };
        let cross_attn = AttentionShape { context_dim, ..self_attn };
        Ok(TransformerBlock {
            norm1: LayerNorm::load(&p.sub("norm1"), dim, 1e-5)?,
            attn1: Attention::load(&p.sub("attn1"), &self_attn)?,
            norm2: LayerNorm::load(&p.sub("norm2"), dim, 1e-5)?,
            attn2: Attention::load(&p.sub("attn2"), &cross_attn)?,
            norm3: LayerNorm::load(&p.sub("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(&p.sub("ff"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor, share_first_row_qk: bool) -> Result<Tensor> {
        let x = self.attn1.forward_with(&self.norm1.forward(x)?, None, share_first_row_qk)?.f_add(x)?;
        let x = self.attn2.forward(&self.norm2.forward(&x)?, Some(context))?.f_add(&x)?;
        Ok(self.ff.forward(&self.norm3.forward(&x)?)?.f_add(&x)?)
    }
}

/// The projection in and out of a spatial transformer: a 1×1 convolution (SD 1.x) or a linear layer
/// over tokens (`use_linear_projection`, SD 2.x).
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn load(p: &WeightPath, c_in: i64, c_out: i64, linear: bool) -> Result<Self> {
        Ok(if linear { Projection::Linear(Linear::load(p, c_in, c_out, true)?) } else { Projection::Conv(Conv2d::load(p, c_in, c_out, 1, 1, 0)?) })
    }
}

pub struct Transformer2DShape {
    pub channels: i64,
    pub heads: i64,
    pub layers: i64,
    pub context_dim: i64,
    pub groups: i64,
    pub linear_projection: bool,
    pub upcast: bool,
}

/// diffusers' `Transformer2DModel` (continuous input): group norm, projection to tokens, transformer
/// blocks, projection back, residual.
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

impl Transformer2D {
    pub(crate) fn load(p: &WeightPath, s: &Transformer2DShape) -> Result<Self> {
        let c = s.channels;
        let blocks =
            (0..s.layers).map(|i| TransformerBlock::load(&p.sub("transformer_blocks").sub(i), c, s.heads, s.context_dim, s.upcast)).collect::<Result<_>>()?;
        Ok(Transformer2D {
            norm: GroupNorm::load(&p.sub("norm"), s.groups, c, 1e-6)?,
            proj_in: Projection::load(&p.sub("proj_in"), c, c, s.linear_projection)?,
            blocks,
            proj_out: Projection::load(&p.sub("proj_out"), c, c, s.linear_projection)?,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.forward_with(x, context, false)
    }

    /// The attention projections of every transformer block (self- and cross-attention), under their
    /// diffusers names below `prefix`.
    pub(crate) fn attention_projections_mut<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Linear)>) {
        for (i, block) in self.blocks.iter_mut().enumerate() {
            block.attn1.projections_mut(&format!("{prefix}.transformer_blocks.{i}.attn1"), out);
            block.attn2.projections_mut(&format!("{prefix}.transformer_blocks.{i}.attn2"), out);
        }
    }

    /// The forward with batch row 0's self-attention queries and keys given to every row in the first
    /// transformer block (where the Plug-and-Play authors inject them).
    pub fn forward_sharing_first_row_qk(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.forward_with(x, context, true)
    }

    fn forward_with(&self, x: &Tensor, context: &Tensor, share_first_row_qk: bool) -> Result<Tensor> {
        let (b, c, h, w) = x.size4()?;
        let normed = self.norm.forward(x)?;
        let to_tokens = |t: &Tensor| t.f_permute([0, 2, 3, 1])?.f_reshape([b, h * w, c]);
        let to_map = |t: &Tensor| t.f_reshape([b, h, w, c])?.f_permute([0, 3, 1, 2]);
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(linear) => linear.forward(&to_tokens(&normed)?)?,
        };
        for (i, block) in self.blocks.iter().enumerate() {
            tokens = block.forward(&tokens, context, share_first_row_qk && i == 0)?;
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(&tokens)?.f_contiguous()?)?,
            Projection::Linear(linear) => to_map(&linear.forward(&tokens)?)?,
        };
        Ok(out.f_add(x)?)
    }
}
