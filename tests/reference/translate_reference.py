#!/usr/bin/env python3
"""References for DDIM and Plug-and-Play translation, computed with diffusers.

Usage: translate_reference.py SD15_TINY_DIR OUT_DIR

SD15_TINY_DIR is make_fixtures.py's sd15_tiny pipeline. Its UNet has two blocks, too few for the
Plug-and-Play injection sites, so OUT_DIR/sd15_pnp/ becomes a pipeline with that folder's VAE, text
encoder, tokenizer and scheduler and a random-weight UNet of Stable Diffusion 1.5's layout (four
blocks, two layers each, cross-attention in all but the lowest), only narrow. Next to it go
reference.json and reference.safetensors:

- DDIM timestep lists for several spacings and step counts, and single DDIMScheduler /
  DDIMInverseScheduler steps on random tensors for several scheduler configs;
- a Plug-and-Play run written over diffusers: the authors' DDIM inversion of the image's posterior mean
  under the source prompt, then their sampling loop from the last inverted latent, one target per
  batch [source, unconditional, conditional] (the library batches all targets: the same result), with a forward hook on up_blocks[1].resnets[1].conv2 and an attention processor on the
  attn1 of the injected transformer blocks;
- text-to-image latents from StableDiffusionPipeline with given initial noise.

OUT_DIR/.stamp (a hash of this file and of the sd15_tiny fixtures' stamp) makes reruns free.
"""

import json
import os
import shutil
import sys
from pathlib import Path

from fixture_stamps import exit_if_current, stamp_for  # noqa: E402  (this folder is on sys.path when run as a script)

if __name__ == "__main__":
    exit_if_current(__file__, lambda tiny_dir: tiny_dir.parent / ".stamp")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import DDIMInverseScheduler, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from make_fixtures import pattern_image  # noqa: E402  (this folder is on sys.path when run as a script)

# Source image size (the tiny VAE halves it): a latent of 8 × 12, whose width is not a multiple of the
# UNet's factor 8, so the upsamplers take explicit sizes.
IMAGE_SIZE = (16, 24)
SOURCE_PROMPT = "A car from the 1950s."
TARGET_PROMPTS = ["A car from the 2020s.", "a photo of a cat"]
INVERSION_STEPS = 20
SAMPLING_STEPS = 10
GUIDANCE = 7.5
RESNET_FRACTION = 0.8
ATTENTION_FRACTION = 0.5
RESNET_SITES = [(1, 1)]
ATTENTION_SITES = [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)]

TIMESTEP_CASES = [
    (spacing, offset, steps)
    for spacing, offset in (("leading", 1), ("leading", 0), ("trailing", 0), ("linspace", 0))
    for steps in (1, 3, 7, 10, 50, 333, 999)
]
# Scheduler configs whose DDIM steps are compared: SD 1.5's, and ones exercising ᾱ = 1 below t = 0,
# v-prediction and the other spacings.
STEP_CONFIGS = [
    dict(timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False, prediction_type="epsilon", steps=10),
    dict(timestep_spacing="leading", steps_offset=1, set_alpha_to_one=True, prediction_type="epsilon", steps=999),
    dict(timestep_spacing="trailing", steps_offset=0, set_alpha_to_one=True, prediction_type="v_prediction", steps=7),
    dict(timestep_spacing="linspace", steps_offset=0, set_alpha_to_one=False, prediction_type="epsilon", steps=10),
]
BASE_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)


def timestep_references(tensors: dict) -> list:
    cases = []
    for k, (spacing, offset, steps) in enumerate(TIMESTEP_CASES):
        scheduler = DDIMScheduler(**BASE_SCHEDULER, timestep_spacing=spacing, steps_offset=offset)
        scheduler.set_timesteps(steps)
        tensors[f"timesteps.{k}"] = scheduler.timesteps.to(torch.int64)
        cases.append(dict(spacing=spacing, steps_offset=offset, steps=steps))
    return cases


def step_references(generator: torch.Generator, tensors: dict) -> list:
    """Per config: one sampling step from every inference timestep and one inversion step to every one,
    each on its own random sample and model output."""
    cases = []
    for k, case in enumerate(STEP_CONFIGS):
        config = {**BASE_SCHEDULER, **{key: v for key, v in case.items() if key != "steps"}}
        schedulers = [("step", DDIMScheduler(**config))]
        # DDIMInverseScheduler has no linspace spacing.
        if config["timestep_spacing"] != "linspace":
            schedulers.append(("inversion_step", DDIMInverseScheduler(**config)))
        for name, scheduler in schedulers:
            scheduler.set_timesteps(case["steps"])
            timesteps = scheduler.timesteps.to(torch.int64)
            shape = (len(timesteps), 1, 4, 3, 5)
            samples, outputs = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
            results = torch.stack([scheduler.step(o, int(t), s).prev_sample for o, t, s in zip(outputs, timesteps, samples)])
            for key, value in (("timesteps", timesteps), ("samples", samples), ("outputs", outputs), ("results", results)):
                tensors[f"ddim.{k}.{name}.{key}"] = value
        cases.append(config | {"steps": case["steps"], "inversion": len(schedulers) == 2})
    return cases


def build_pipeline(tiny_dir: Path, folder: Path) -> StableDiffusionPipeline:
    for name in ("vae", "text_encoder", "tokenizer", "scheduler"):
        shutil.copytree(tiny_dir / name, folder / name, ignore=shutil.ignore_patterns("*.fp16.safetensors"))
    shutil.copy(tiny_dir / "model_index.json", folder / "model_index.json")
    torch.manual_seed(1515)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
        attention_head_dim=2,
        cross_attention_dim=32,
        norm_num_groups=8,
    ).eval()
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    return StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def embed(pipe, prompt: str) -> torch.Tensor:
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt")
    return pipe.text_encoder(ids.input_ids).last_hidden_state


class Switch:
    """Whether an injection is on in the current step."""

    def __init__(self):
        self.on = False


def share_first_row(x: torch.Tensor) -> torch.Tensor:
    return x[:1].expand_as(x)


class SharedQueryKeyProcessor:
    """Self-attention whose queries and keys come from batch row 0 (the source branch) when on."""

    def __init__(self, switch: Switch):
        self.switch = switch

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert encoder_hidden_states is None and attention_mask is None
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        if self.switch.on:
            q, k = share_first_row(q), share_first_row(k)
        b, n, _ = hidden_states.shape
        heads = lambda t: t.view(b, n, attn.heads, -1).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        out = out.transpose(1, 2).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


def register_injection(unet) -> tuple[Switch, Switch]:
    resnet_switch, attention_switch = Switch(), Switch()
    for block, resnet in RESNET_SITES:
        conv2 = unet.up_blocks[block].resnets[resnet].conv2
        conv2.register_forward_hook(lambda module, args, output: share_first_row(output) if resnet_switch.on else output)
    for block, attention in ATTENTION_SITES:
        unet.up_blocks[block].attentions[attention].transformer_blocks[0].attn1.set_processor(SharedQueryKeyProcessor(attention_switch))
    return resnet_switch, attention_switch


@torch.no_grad()
def invert(pipe, latent: torch.Tensor, context: torch.Tensor) -> tuple[list, list]:
    """The Plug-and-Play authors' DDIM inversion: from the previous inversion timestep's level (or the
    final ᾱ at the start) to t, with the UNet evaluated at t."""
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(INVERSION_STEPS)
    timesteps = list(reversed(scheduler.timesteps.tolist()))
    abar = scheduler.alphas_cumprod
    latents = []
    for i, t in enumerate(timesteps):
        a_t = abar[t]
        a_prev = abar[timesteps[i - 1]] if i > 0 else scheduler.final_alpha_cumprod
        eps = pipe.unet(latent, t, encoder_hidden_states=context).sample
        clean = (latent - (1 - a_prev) ** 0.5 * eps) / a_prev**0.5
        latent = a_t**0.5 * clean + (1 - a_t) ** 0.5 * eps
        latents.append(latent)
    return timesteps, latents


@torch.no_grad()
def plug_and_play(pipe, inverted: dict, start: torch.Tensor, target: str, switches) -> torch.Tensor:
    """The authors' sampling loop for one target: rows [source, unconditional, conditional], from
    `start`, the last inverted latent (as the paper's authors; the original Plug-and-Play code starts
    from the inverted latent at the first sampling timestep)."""
    resnet_switch, attention_switch = switches
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(SAMPLING_STEPS)
    null, cond = embed(pipe, ""), embed(pipe, target)
    context = torch.cat([null, null, cond])
    resnet_steps, attention_steps = int(SAMPLING_STEPS * RESNET_FRACTION), int(SAMPLING_STEPS * ATTENTION_FRACTION)
    x = start
    for i, t in enumerate(scheduler.timesteps):
        resnet_switch.on, attention_switch.on = i < resnet_steps, i < attention_steps
        rows = torch.cat([inverted[int(t)], x, x])
        _, unconditional, conditional = pipe.unet(rows, t, encoder_hidden_states=context).sample.chunk(3)
        guided = unconditional + GUIDANCE * (conditional - unconditional)
        x = scheduler.step(guided, t, x).prev_sample
    resnet_switch.on = attention_switch.on = False
    return x


@torch.no_grad()
def pnp_reference(pipe, generator: torch.Generator, tensors: dict) -> None:
    image = pattern_image(generator, *IMAGE_SIZE)
    latent = pipe.vae.encode(image).latent_dist.mean * pipe.vae.config.scaling_factor
    timesteps, latents = invert(pipe, latent, embed(pipe, SOURCE_PROMPT))
    switches = register_injection(pipe.unet)
    inverted = dict(zip(timesteps, latents))
    finals = torch.cat([plug_and_play(pipe, inverted, latents[-1], target, switches) for target in TARGET_PROMPTS])
    tensors["pnp.image"] = image
    tensors["pnp.latent"] = latent
    tensors["pnp.inversion.timesteps"] = torch.tensor(timesteps, dtype=torch.int64)
    tensors["pnp.inversion.latents"] = torch.cat(latents)
    tensors["pnp.latents"] = finals
    tensors["pnp.images"] = pipe.vae.decode(finals / pipe.vae.config.scaling_factor).sample


@torch.no_grad()
def text_to_image_reference(folder: Path, generator: torch.Generator, tensors: dict) -> None:
    """StableDiffusionPipeline (DDIM, guidance 7.5) from given initial noise, on a clean pipeline."""
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    height, width = IMAGE_SIZE
    noise = torch.randn(len(TARGET_PROMPTS), 4, height // 2, width // 2, generator=generator)
    latents = pipe(
        TARGET_PROMPTS,
        height=height,
        width=width,
        num_inference_steps=SAMPLING_STEPS,
        guidance_scale=GUIDANCE,
        latents=noise,
        output_type="latent",
    ).images
    tensors["generate.noise"] = noise
    tensors["generate.latents"] = latents


def build(tiny_dir: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    folder = out_dir / "sd15_pnp"
    folder.mkdir(parents=True)
    tensors, generator = {}, torch.Generator().manual_seed(8)
    summary = {
        "timestep_cases": timestep_references(tensors),
        "step_cases": step_references(generator, tensors),
        "source_prompt": SOURCE_PROMPT,
        "target_prompts": TARGET_PROMPTS,
        "inversion_steps": INVERSION_STEPS,
        "sampling_steps": SAMPLING_STEPS,
        "guidance": GUIDANCE,
        "resnet_fraction": RESNET_FRACTION,
        "attention_fraction": ATTENTION_FRACTION,
    }
    pipe = build_pipeline(tiny_dir, folder)
    pnp_reference(pipe, generator, tensors)
    text_to_image_reference(folder, generator, tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "reference.safetensors")
    (folder / "reference.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / ".stamp").write_text(stamp_for(__file__, tiny_dir.parent / ".stamp"))


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    diffusers.utils.logging.disable_progress_bar()
    build(Path(sys.argv[1]).absolute(), Path(sys.argv[2]).absolute())
    return 0


if __name__ == "__main__":
    sys.exit(main())
