//! transformers' `CLIPTextModel` (the text tower of CLIP), any size, `quick_gelu` or `gelu`.
use tch::{Device, Kind, Tensor};

use super::attention::sdpa;
use super::config::ClipTextConfig;
use super::nn::{merge_heads, split_heads, Embedding, LayerNorm, Linear};
use super::weights::WeightPath;
use crate::error::{Error, Result};

#[derive(Clone, Copy)]
enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::Unsupported(format!("CLIP `hidden_act` = \"{other}\" is not supported (quick_gelu, gelu)"))),
        }
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::QuickGelu => x.f_mul(&x.f_mul_scalar(1.702)?.f_sigmoid()?)?,
            Activation::Gelu => x.f_gelu("none")?,
        })
    }
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl EncoderLayer {
    fn load(p: &WeightPath, c: &ClipTextConfig) -> Result<Self> {
        let (d, eps) = (c.hidden_size, c.layer_norm_eps);
        let a = p.sub("self_attn");
        Ok(EncoderLayer {
            layer_norm1: LayerNorm::load(&p.sub("layer_norm1"), d, eps)?,
            q_proj: Linear::load(&a.sub("q_proj"), d, d, true)?,
            k_proj: Linear::load(&a.sub("k_proj"), d, d, true)?,
            v_proj: Linear::load(&a.sub("v_proj"), d, d, true)?,
            out_proj: Linear::load(&a.sub("out_proj"), d, d, true)?,
            layer_norm2: LayerNorm::load(&p.sub("layer_norm2"), d, eps)?,
            fc1: Linear::load(&p.sub("mlp").sub("fc1"), d, c.intermediate_size, true)?,
            fc2: Linear::load(&p.sub("mlp").sub("fc2"), c.intermediate_size, d, true)?,
        })
    }

    fn forward(&self, x: &Tensor, heads: i64, act: Activation) -> Result<Tensor> {
        let h = self.layer_norm1.forward(x)?;
        let q = split_heads(&self.q_proj.forward(&h)?, heads)?;
        let k = split_heads(&self.k_proj.forward(&h)?, heads)?;
        let v = split_heads(&self.v_proj.forward(&h)?, heads)?;
        let attended = self.out_proj.forward(&merge_heads(&sdpa(&q, &k, &v, true)?)?)?;
        let x = x.f_add(&attended)?;
        let h = self.fc2.forward(&act.apply(&self.fc1.forward(&self.layer_norm2.forward(&x)?)?)?)?;
        Ok(x.f_add(&h)?)
    }
}

pub struct ClipTextModel {
    config: ClipTextConfig,
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    activation: Activation,
}

impl ClipTextModel {
    /// `p` points at the model root. Tensors live under `text_model.` in CLIPModel checkpoints and in
    /// CLIPTextModel files saved by transformers 4 (SD 1.5's own); transformers 5 saves CLIPTextModel
    /// without that prefix. Both load.
    pub(crate) fn load(p: &WeightPath, config: ClipTextConfig) -> Result<Self> {
        let activation = Activation::parse(&config.hidden_act)?;
        let prefixed = p.sub("text_model");
        let t = if prefixed.contains("final_layer_norm.weight") { prefixed } else { p.clone() };
        let e = t.sub("embeddings");
        let layers = (0..config.num_hidden_layers).map(|i| EncoderLayer::load(&t.sub("encoder").sub("layers").sub(i), &config)).collect::<Result<_>>()?;
        Ok(ClipTextModel {
            token_embedding: Embedding::load(&e.sub("token_embedding"), config.vocab_size, config.hidden_size)?,
            position_embedding: Embedding::load(&e.sub("position_embedding"), config.max_position_embeddings, config.hidden_size)?,
            layers,
            final_layer_norm: LayerNorm::load(&t.sub("final_layer_norm"), config.hidden_size, config.layer_norm_eps)?,
            activation,
            config,
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// `last_hidden_state` for token ids (B, L), L at most `max_position_embeddings`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let _span = tracing::debug_span!("text_encoder").entered();
        let (_, len) = ids.size2()?;
        if len > self.config.max_position_embeddings {
            return Err(Error::InvalidArgument(format!("{len} tokens exceed the text encoder's {} positions", self.config.max_position_embeddings)));
        }
        let device: Device = ids.device();
        let positions = Tensor::f_arange(len, (Kind::Int64, device))?.f_unsqueeze(0)?;
        let mut x = self.token_embedding.forward(ids)?.f_add(&self.position_embedding.forward(&positions)?)?;
        for layer in &self.layers {
            x = layer.forward(&x, self.config.num_attention_heads, self.activation)?;
        }
        self.final_layer_norm.forward(&x)
    }
}
