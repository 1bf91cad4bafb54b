//! diffusers' `UNet2DConditionModel` for Stable Diffusion 1.x and 2.x, built from its `config.json`.
use tch::Tensor;

use super::attention::{Transformer2D, Transformer2DShape};
use super::config::UNetConfig;
use super::embeddings::{timestep_features, TimestepEmbedding};
use super::nn::{Conv2d, GroupNorm, Linear};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetShape, Upsample2D};
use super::weights::WeightPath;
use crate::error::{Error, Result};

/// What every block of one UNet shares.
struct BlockContext {
    temb: i64,
    groups: i64,
    eps: f64,
    linear_projection: bool,
    upcast: bool,
}

impl BlockContext {
    fn resnet(&self, p: &WeightPath, c_in: i64, c_out: i64, output_scale: f64) -> Result<ResnetBlock2D> {
        let shape = ResnetShape { c_in, c_out, temb: Some(self.temb), groups: self.groups, eps: self.eps, output_scale };
        ResnetBlock2D::load(p, &shape)
    }

    fn transformer(&self, p: &WeightPath, channels: i64, heads: i64, layers: i64, context_dim: i64) -> Result<Transformer2D> {
        let shape =
            Transformer2DShape { channels, heads, layers, context_dim, groups: self.groups, linear_projection: self.linear_projection, upcast: self.upcast };
        Transformer2D::load(p, &shape)
    }
}

/// Per-block settings after expanding diffusers' "one value or a list" config keys.
struct BlockSpec {
    channels: i64,
    layers: i64,
    heads: i64,
    transformer_layers: i64,
    context_dim: i64,
}

fn block_specs(config: &UNetConfig) -> Result<Vec<BlockSpec>> {
    let n = config.block_out_channels.len();
    let layers = config.layers_per_block.expand("layers_per_block", n)?;
    let heads = config.heads_per_block()?;
    let transformer_layers = config.transformer_layers_per_block.expand("transformer_layers_per_block", n)?;
    let context = config.cross_attention_dim.expand("cross_attention_dim", n)?;
    Ok((0..n)
        .map(|i| BlockSpec {
            channels: config.block_out_channels[i],
            layers: layers[i],
            heads: heads[i],
            transformer_layers: transformer_layers[i],
            context_dim: context[i],
        })
        .collect())
}

/// Which up block is running, and the injection of the call if any.
#[derive(Clone, Copy)]
struct UpBlockSite<'a> {
    index: usize,
    injection: Option<&'a Injection>,
}

impl UpBlockSite<'_> {
    fn injects_resnet(&self, resnet: usize) -> bool {
        self.injection.is_some_and(|i| i.injects_resnet(self.index, resnet))
    }

    fn injects_attention(&self, attention: usize) -> bool {
        self.injection.is_some_and(|i| i.injects_attention(self.index, attention))
    }
}

/// A down or up block: resnets, optionally each followed by a transformer, then an optional resampler.
struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsampler: Option<Downsample2D>,
}

struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsampler: Option<Upsample2D>,
}

fn has_cross_attention(block_type: &str, plain: &str, cross: &str, which: &str) -> Result<bool> {
    match block_type {
        t if t == cross => Ok(true),
        t if t == plain => Ok(false),
        other => Err(Error::Unsupported(format!("unknown UNet {which} block type `{other}` (supported: {cross}, {plain})"))),
    }
}

struct MidBlock {
    first: ResnetBlock2D,
    layers: Vec<(Transformer2D, ResnetBlock2D)>,
}

/// Plug-and-Play feature injection for one UNet call: batch row 0 is the source branch, and at each
/// listed site of the up path its features replace those of every other row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Injection {
    /// (up block, resnet) sites: the residual branch after `conv2`, before the skip is added.
    pub resnets: Vec<(usize, usize)>,
    /// (up block, attention) sites: the self-attention (`attn1`) queries and keys of the first
    /// transformer block.
    pub attentions: Vec<(usize, usize)>,
}

impl Injection {
    fn injects_resnet(&self, block: usize, resnet: usize) -> bool {
        self.resnets.contains(&(block, resnet))
    }

    fn injects_attention(&self, block: usize, attention: usize) -> bool {
        self.attentions.contains(&(block, attention))
    }
}

/// A block of the UNet's forward between its input and output layers.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Down(usize),
    Mid,
    Up(usize),
}

/// What flows from one stage to the next: the time embedding every resnet reads, the hidden state,
/// and the skip connections the down path has pushed and the up path has not yet taken.
struct Flow {
    temb: Tensor,
    h: Tensor,
    skips: Vec<Tensor>,
}

impl Flow {
    fn shallow_clone(&self) -> Flow {
        Flow { temb: self.temb.shallow_clone(), h: self.h.shallow_clone(), skips: self.skips.iter().map(Tensor::shallow_clone).collect() }
    }

    /// The same values as new leaves of the autograd graph, so that the backward pass of a block run
    /// on them stops here and can return the gradient of each.
    fn into_leaves(self) -> Result<Flow> {
        let leaf = |t: Tensor| -> Result<Tensor> { Ok(t.f_detach()?.f_requires_grad_(true)?) };
        Ok(Flow { temb: leaf(self.temb)?, h: leaf(self.h)?, skips: self.skips.into_iter().map(leaf).collect::<Result<_>>()? })
    }

    fn tensors(&self) -> Vec<&Tensor> {
        [&self.temb, &self.h].into_iter().chain(&self.skips).collect()
    }
}

/// Back-propagates from `outputs` given the loss's gradient with respect to each (a vector-Jacobian
/// product: the backward of Σ⟨output, gradient⟩, the gradients held constant); adds what reaches
/// `parameters` into `parameter_gradients` and returns the gradients of `leaves` (undefined where a
/// block did not use one).
fn backward_from(
    outputs: &[&Tensor],
    gradients: &[Tensor],
    leaves: &[&Tensor],
    parameters: &[Tensor],
    parameter_gradients: &mut [Tensor],
) -> Result<Vec<Tensor>> {
    let mut total: Option<Tensor> = None;
    for (output, gradient) in outputs.iter().zip(gradients) {
        if !gradient.defined() || !output.requires_grad() {
            continue;
        }
        let term = output.f_mul(gradient)?.f_sum(tch::Kind::Float)?;
        total = Some(match total {
            Some(sum) => sum.f_add(&term)?,
            None => term,
        });
    }
    let Some(total) = total else {
        return Ok(leaves.iter().map(|_| Tensor::new()).collect());
    };
    let inputs: Vec<&Tensor> = leaves.iter().copied().chain(parameters).collect();
    let mut reached = Tensor::f_run_backward(&[total], &inputs, false, false)?;
    for (sum, gradient) in parameter_gradients.iter_mut().zip(reached.split_off(leaves.len())) {
        if !gradient.defined() {
            continue;
        }
        if sum.defined() {
            let _ = tch::no_grad(|| sum.f_add_(&gradient))?;
        } else {
            *sum = gradient;
        }
    }
    Ok(reached)
}

/// What every stage of one call reads besides the flow.
struct Call<'a> {
    context: &'a Tensor,
    injection: Option<&'a Injection>,
    explicit_sizes: bool,
}

pub struct UNet2DConditionModel {
    config: UNetConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    pub(crate) fn load(p: &WeightPath, config: UNetConfig) -> Result<Self> {
        config.check_supported()?;
        let specs = block_specs(&config)?;
        let c0 = config.block_out_channels[0];
        let ctx = BlockContext {
            temb: c0 * 4,
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            linear_projection: config.use_linear_projection,
            upcast: config.upcast_attention,
        };
        let (k_in, k_out) = (config.conv_in_kernel, config.conv_out_kernel);
        let conv_in = Conv2d::load(&p.sub("conv_in"), config.in_channels, c0, k_in, 1, (k_in - 1) / 2)?;
        let time_embedding = TimestepEmbedding::load(&p.sub("time_embedding"), c0, ctx.temb)?;
        let down_blocks = Self::load_down_blocks(p, &config, &specs, &ctx)?;
        let mid_block = Self::load_mid_block(p, &config, &specs, &ctx)?;
        let up_blocks = Self::load_up_blocks(p, &config, &specs, &ctx)?;
        let conv_norm_out = GroupNorm::load(&p.sub("conv_norm_out"), config.norm_num_groups, c0, config.norm_eps)?;
        let conv_out = Conv2d::load(&p.sub("conv_out"), c0, config.out_channels, k_out, 1, (k_out - 1) / 2)?;
        Ok(UNet2DConditionModel { config, conv_in, time_embedding, down_blocks, mid_block, up_blocks, conv_norm_out, conv_out })
    }

    fn load_down_blocks(p: &WeightPath, config: &UNetConfig, specs: &[BlockSpec], ctx: &BlockContext) -> Result<Vec<DownBlock>> {
        let mut c_prev = specs[0].channels;
        let mut blocks = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let bp = p.sub("down_blocks").sub(i);
            let cross = has_cross_attention(&config.down_block_types[i], "DownBlock2D", "CrossAttnDownBlock2D", "down")?;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..spec.layers {
                let c_in = if j == 0 { c_prev } else { spec.channels };
                resnets.push(ctx.resnet(&bp.sub("resnets").sub(j), c_in, spec.channels, 1.0)?);
                if cross {
                    let tp = bp.sub("attentions").sub(j);
                    attentions.push(ctx.transformer(&tp, spec.channels, spec.heads, spec.transformer_layers, spec.context_dim)?);
                }
            }
            let is_final = i == specs.len() - 1;
            let downsampler = if is_final { None } else { Some(Downsample2D::load(&bp.sub("downsamplers").sub(0), spec.channels, config.downsample_padding)?) };
            blocks.push(DownBlock { resnets, attentions, downsampler });
            c_prev = spec.channels;
        }
        Ok(blocks)
    }

    fn load_mid_block(p: &WeightPath, config: &UNetConfig, specs: &[BlockSpec], ctx: &BlockContext) -> Result<Option<MidBlock>> {
        match config.mid_block_type.as_deref() {
            None => return Ok(None),
            Some("UNetMidBlock2DCrossAttn") => {}
            Some(other) => return Err(Error::Unsupported(format!("unknown UNet mid block type `{other}` (supported: UNetMidBlock2DCrossAttn, null)"))),
        }
        let last = specs.last().expect("check_supported guarantees at least one block");
        let mp = p.sub("mid_block");
        let scale = config.mid_block_scale_factor;
        let first = ctx.resnet(&mp.sub("resnets").sub(0), last.channels, last.channels, scale)?;
        let attention = ctx.transformer(&mp.sub("attentions").sub(0), last.channels, last.heads, last.transformer_layers, last.context_dim)?;
        let second = ctx.resnet(&mp.sub("resnets").sub(1), last.channels, last.channels, scale)?;
        Ok(Some(MidBlock { first, layers: vec![(attention, second)] }))
    }

    fn load_up_blocks(p: &WeightPath, config: &UNetConfig, specs: &[BlockSpec], ctx: &BlockContext) -> Result<Vec<UpBlock>> {
        let n = specs.len();
        let reversed: Vec<&BlockSpec> = specs.iter().rev().collect();
        let mut c_prev = reversed[0].channels;
        let mut blocks = Vec::with_capacity(n);
        for (i, spec) in reversed.iter().enumerate() {
            let bp = p.sub("up_blocks").sub(i);
            let cross = has_cross_attention(&config.up_block_types[i], "UpBlock2D", "CrossAttnUpBlock2D", "up")?;
            // The skip connection of the last resnet comes from the block below (the input side of the
            // mirrored down block); the others from this level.
            let c_skip_last = reversed[(i + 1).min(n - 1)].channels;
            let layers = spec.layers + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let c_skip = if j == layers - 1 { c_skip_last } else { spec.channels };
                let c_in = if j == 0 { c_prev } else { spec.channels };
                resnets.push(ctx.resnet(&bp.sub("resnets").sub(j), c_in + c_skip, spec.channels, 1.0)?);
                if cross {
                    let tp = bp.sub("attentions").sub(j);
                    attentions.push(ctx.transformer(&tp, spec.channels, spec.heads, spec.transformer_layers, spec.context_dim)?);
                }
            }
            let upsampler = if i == n - 1 { None } else { Some(Upsample2D::load(&bp.sub("upsamplers").sub(0), spec.channels)?) };
            blocks.push(UpBlock { resnets, attentions, upsampler });
            c_prev = spec.channels;
        }
        Ok(blocks)
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Predicts the model output (noise or v, as the scheduler config says) for `sample` (B, C, h, w)
    /// at `timesteps` (B,) given text embeddings `context` (B, L, D). All in the weights' dtype/device.
    pub fn forward(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.run(sample, timesteps, context, None, None)
    }

    /// The forward with Plug-and-Play's feature injection (see [`Injection`]); sites must exist
    /// ([`UNet2DConditionModel::check_injection`]).
    pub fn forward_injected(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor, injection: &Injection) -> Result<Tensor> {
        self.run(sample, timesteps, context, None, Some(injection))
    }

    /// Refuses injection sites this UNet does not have, naming them in diffusers' module paths.
    pub fn check_injection(&self, injection: &Injection) -> Result<()> {
        for &(block, resnet) in &injection.resnets {
            if self.up_blocks.get(block).is_none_or(|b| resnet >= b.resnets.len()) {
                return Err(Error::InvalidArgument(format!("injection site up_blocks[{block}].resnets[{resnet}] does not exist in this UNet")));
            }
        }
        for &(block, attention) in &injection.attentions {
            if self.up_blocks.get(block).is_none_or(|b| attention >= b.attentions.len()) {
                return Err(Error::InvalidArgument(format!("injection site up_blocks[{block}].attentions[{attention}] does not exist in this UNet")));
            }
        }
        Ok(())
    }

    /// The output of `up_blocks[index]` (after its upsampler), where DIFT reads its features; the
    /// blocks after it are not run.
    pub fn up_block_output(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor, index: usize) -> Result<Tensor> {
        if index >= self.up_blocks.len() {
            return Err(Error::InvalidArgument(format!("up block {index} requested, the UNet has {}", self.up_blocks.len())));
        }
        self.run(sample, timesteps, context, Some(index), None)
    }

    fn run(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor, stop_after_up_block: Option<usize>, injection: Option<&Injection>) -> Result<Tensor> {
        let _span = tracing::debug_span!("unet").entered();
        let call = Call { context, injection, explicit_sizes: self.needs_explicit_upsample_sizes(sample)? };
        let mut flow = self.enter(sample, timesteps)?;
        for stage in self.stages() {
            flow = self.run_stage(stage, flow, &call)?;
            if matches!(stage, Stage::Up(i) if stop_after_up_block == Some(i)) {
                return Ok(flow.h);
            }
        }
        self.exit(&flow.h)
    }

    /// The loss `loss_of(output)` and its gradients with respect to `parameters` (this UNet's
    /// weights, in any order; undefined for any the loss does not reach), as a plain forward and
    /// backward pass would give them, but keeping only the flow between blocks instead of every
    /// activation: each block runs again, recording its graph, when the backward pass reaches it
    /// (gradient checkpointing, as diffusers' `enable_gradient_checkpointing`, here per block; it
    /// trades one more forward for the memory of SD 1.5 at 512 px).
    pub fn backward_checkpointed(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        loss_of: impl FnOnce(&Tensor) -> Result<Tensor>,
        parameters: &[Tensor],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let _span = tracing::debug_span!("unet_checkpointed").entered();
        let call = Call { context, injection: None, explicit_sizes: self.needs_explicit_upsample_sizes(sample)? };
        let stages = self.stages();
        let mut inputs = Vec::with_capacity(stages.len());
        let mut flow = tch::no_grad(|| self.enter(sample, timesteps))?;
        for &stage in &stages {
            inputs.push(flow.shallow_clone());
            flow = tch::no_grad(|| self.run_stage(stage, flow, &call))?;
        }
        let mut parameter_gradients: Vec<Tensor> = parameters.iter().map(|_| Tensor::new()).collect();
        let leaves = flow.into_leaves()?;
        let loss = loss_of(&self.exit(&leaves.h)?)?;
        let mut gradients = backward_from(&[&loss], &[Tensor::ones_like(&loss)], &leaves.tensors(), parameters, &mut parameter_gradients)?;
        for (&stage, input) in stages.iter().zip(inputs).rev() {
            let leaves = input.into_leaves()?;
            let output = self.run_stage(stage, leaves.shallow_clone(), &call)?;
            gradients = backward_from(&output.tensors(), &gradients, &leaves.tensors(), parameters, &mut parameter_gradients)?;
        }
        backward_from(&self.enter(sample, timesteps)?.tensors(), &gradients, &[], parameters, &mut parameter_gradients)?;
        Ok((loss.f_detach()?, parameter_gradients))
    }

    /// The attention projections (`to_q`, `to_k`, `to_v`, `to_out.0` of every self- and
    /// cross-attention) under their diffusers names, in diffusers' module order: where LoRA adapters go.
    pub(crate) fn attention_projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, block) in self.down_blocks.iter_mut().enumerate() {
            for (j, attention) in block.attentions.iter_mut().enumerate() {
                attention.attention_projections_mut(&format!("down_blocks.{i}.attentions.{j}"), &mut out);
            }
        }
        for (i, block) in self.up_blocks.iter_mut().enumerate() {
            for (j, attention) in block.attentions.iter_mut().enumerate() {
                attention.attention_projections_mut(&format!("up_blocks.{i}.attentions.{j}"), &mut out);
            }
        }
        if let Some(mid) = &mut self.mid_block {
            for (j, (attention, _)) in mid.layers.iter_mut().enumerate() {
                attention.attention_projections_mut(&format!("mid_block.attentions.{j}"), &mut out);
            }
        }
        out
    }

    /// The blocks between `enter` and `exit`, in order: the units gradient checkpointing recomputes.
    fn stages(&self) -> Vec<Stage> {
        let down = (0..self.down_blocks.len()).map(Stage::Down);
        let mid = self.mid_block.as_ref().map(|_| Stage::Mid);
        down.chain(mid).chain((0..self.up_blocks.len()).map(Stage::Up)).collect()
    }

    /// The time embedding and `conv_in`, whose output is the first skip connection.
    fn enter(&self, sample: &Tensor, timesteps: &Tensor) -> Result<Flow> {
        let temb = self.time_embedding(timesteps, sample)?;
        let sample = if self.config.center_input_sample { sample.f_mul_scalar(2.0)?.f_sub_scalar(1.0)? } else { sample.shallow_clone() };
        let h = self.conv_in.forward(&sample)?;
        Ok(Flow { temb, skips: vec![h.shallow_clone()], h })
    }

    fn run_stage(&self, stage: Stage, flow: Flow, call: &Call) -> Result<Flow> {
        let Flow { temb, mut h, mut skips } = flow;
        match stage {
            Stage::Down(i) => {
                let _span = tracing::trace_span!("down_block").entered();
                let block = &self.down_blocks[i];
                for (j, resnet) in block.resnets.iter().enumerate() {
                    h = resnet.forward(&h, Some(&temb))?;
                    if let Some(attention) = block.attentions.get(j) {
                        h = attention.forward(&h, call.context)?;
                    }
                    skips.push(h.shallow_clone());
                }
                if let Some(down) = &block.downsampler {
                    h = down.forward(&h)?;
                    skips.push(h.shallow_clone());
                }
            }
            Stage::Mid => {
                let _span = tracing::trace_span!("mid_block").entered();
                let mid = self.mid_block.as_ref().expect("a Mid stage exists only with a mid block");
                h = mid.first.forward(&h, Some(&temb))?;
                for (attention, resnet) in &mid.layers {
                    h = resnet.forward(&attention.forward(&h, call.context)?, Some(&temb))?;
                }
            }
            Stage::Up(i) => {
                let _span = tracing::trace_span!("up_block").entered();
                let site = UpBlockSite { index: i, injection: call.injection };
                h = Self::up_block_forward(&self.up_blocks[i], site, h, &mut skips, &temb, call.context, call.explicit_sizes)?;
            }
        }
        Ok(Flow { temb, h, skips })
    }

    /// The output norm and `conv_out`.
    fn exit(&self, h: &Tensor) -> Result<Tensor> {
        let h = self.conv_norm_out.forward(h)?.f_silu()?;
        self.conv_out.forward(&h)
    }

    /// Runs one up block, consuming its skip connections from the top of `skips`.
    fn up_block_forward(
        block: &UpBlock,
        site: UpBlockSite,
        mut h: Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        context: &Tensor,
        explicit_sizes: bool,
    ) -> Result<Tensor> {
        for (j, resnet) in block.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| Error::Torch("UNet skip connections exhausted".into()))?;
            let input = Tensor::f_cat(&[h, skip], 1)?;
            h = if site.injects_resnet(j) { resnet.forward_sharing_first_row(&input, Some(temb))? } else { resnet.forward(&input, Some(temb))? };
            if let Some(attention) = block.attentions.get(j) {
                h = if site.injects_attention(j) { attention.forward_sharing_first_row_qk(&h, context)? } else { attention.forward(&h, context)? };
            }
        }
        if let Some(up) = &block.upsampler {
            // Upsample to the size of the skip connection it will be joined with, as diffusers does
            // when a latent side is not a multiple of the total down-sampling factor.
            let size = match (explicit_sizes, skips.last()) {
                (true, Some(next)) => Some((next.size()[2], next.size()[3])),
                _ => None,
            };
            h = up.forward(&h, size)?;
        }
        Ok(h)
    }

    fn needs_explicit_upsample_sizes(&self, sample: &Tensor) -> Result<bool> {
        let upsamplers = self.up_blocks.iter().filter(|b| b.upsampler.is_some()).count() as u32;
        let factor = 2i64.pow(upsamplers);
        let (_, _, h, w) = sample.size4()?;
        Ok(h % factor != 0 || w % factor != 0)
    }

    fn time_embedding(&self, timesteps: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let batch = sample.size()[0];
        let timesteps = timesteps.f_to_device(sample.device())?.f_expand([batch], false)?;
        let c0 = self.config.block_out_channels[0];
        let features = timestep_features(&timesteps, c0, self.config.flip_sin_to_cos, self.config.freq_shift as f64)?;
        self.time_embedding.forward(&features.f_to_kind(sample.kind())?)
    }
}
