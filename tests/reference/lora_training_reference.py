#!/usr/bin/env python3
"""References for LoRA training, computed with peft and torch as diffusers' train_text_to_image_lora.py
trains: the UNet frozen (requires_grad_(False)), peft's LoraConfig on to_q, to_k, to_v and to_out.0
added with unet.add_adapter, torch.optim.AdamW over the adapters' parameters only, the epsilon MSE loss,
gradients clipped, here to norm MAX_GRAD_NORM (below the gradients' norm, so clipping is exercised).

Usage: lora_training_reference.py FIXTURES_DIR OUT_DIR

FIXTURES_DIR is make_fixtures.py's output; the batches (latents, noise, timesteps, text embeddings) are
the full-finetuning reference's (sd15_tiny/reference.safetensors, train.<step>.*), so both trainings
see the same data. Into OUT_DIR/reference.safetensors go, with names as peft's parameters without the
adapter name (`<module>.lora_A.weight`, `<module>.lora_B.weight`):

- init.<name>: the adapters' starting values. Both A and B are random (peft starts B at zero, which
  would let a trainer that never applies the adapter pass the gradient check of A).
- step.<i>.loss, step.<i>.grad_norm (before clipping) for each of the STEPS AdamW steps;
- grad.<name>: every clipped gradient of the first step;
- delta.<name>: every adapter parameter's change after the last step;
- bf16.loss, bf16.grad_norm, bf16.grad.<name>: the first step again under
  torch.autocast("cpu", dtype=torch.bfloat16) (diffusers' mixed_precision="bf16").

reference.json gives RANK, ALPHA, STEPS and MAX_GRAD_NORM. ALPHA != RANK, so the adapters' scale alpha / rank is
exercised. OUT_DIR/.stamp (a hash of this file and of the fixtures' stamp) makes reruns free.
"""

import json
import os
import sys
from pathlib import Path

RANK = 4
ALPHA = 8.0
STEPS = 3
MAX_GRAD_NORM = 0.1
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]

from fixture_stamps import exit_if_current, stamp_for  # noqa: E402  (this folder is on sys.path when run as a script)

if __name__ == "__main__":
    exit_if_current(__file__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import DDPMScheduler, UNet2DConditionModel  # noqa: E402
from peft import LoraConfig  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def lora_unet(folder: Path, init: dict):
    """The fixture's UNet, frozen, with the adapters added and set to `init` (filled on first use)."""
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS))
    unet.train()
    generator = torch.Generator().manual_seed(23)
    for name, p in adapter_parameters(unet):
        if name not in init:
            init[name] = torch.randn(p.shape, generator=generator) * 0.2
        with torch.no_grad():
            p.copy_(init[name])
    return unet


def adapter_parameters(unet):
    """The trainable parameters by name without peft's adapter name, in the module order."""
    return [(name.replace(".default.", "."), p) for name, p in unet.named_parameters() if p.requires_grad]


def batch(reference: dict, step: int):
    return [reference[f"train.{step}.{key}"] for key in ("latents", "noise", "timesteps", "context")]


def step_loss(unet, scheduler, latents, noise, timesteps, context):
    noisy = scheduler.add_noise(latents, noise, timesteps)
    return torch.nn.functional.mse_loss(unet(noisy, timesteps, context).sample.float(), noise.float())


def training(folder: Path, reference: dict, tensors: dict, init: dict):
    unet = lora_unet(folder, init)
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    parameters = adapter_parameters(unet)
    projections = [n for n, _ in unet.named_modules() if n.rsplit(".", 2)[-2:] in (["attn1", "to_q"], ["attn2", "to_q"])]
    assert len(parameters) == 2 * 4 * len(projections), "A and B of the four projections of every attention"
    trainable = [p for _, p in parameters]
    assert sum(p.numel() for p in unet.parameters() if p.requires_grad) == sum(p.numel() for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    for step in range(STEPS):
        loss = step_loss(unet, scheduler, *batch(reference, step))
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        if step == 0:
            for name, p in parameters:
                tensors[f"grad.{name}"] = p.grad.detach().clone()
        optimizer.step()
        tensors[f"step.{step}.loss"] = loss.detach().reshape(1)
        tensors[f"step.{step}.grad_norm"] = norm.detach().reshape(1)
    for name, p in parameters:
        tensors[f"delta.{name}"] = p.detach() - init[name]


def autocast_step(folder: Path, reference: dict, tensors: dict, init: dict):
    unet = lora_unet(folder, init)
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    parameters = adapter_parameters(unet)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = step_loss(unet, scheduler, *batch(reference, 0))
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_([p for _, p in parameters], MAX_GRAD_NORM)
    tensors["bf16.loss"] = loss.detach().reshape(1)
    tensors["bf16.grad_norm"] = norm.detach().reshape(1)
    for name, p in parameters:
        tensors[f"bf16.grad.{name}"] = p.grad.detach().clone()


def main():
    fixtures, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    folder = fixtures / "sd15_tiny"
    reference = load_file(folder / "reference.safetensors")
    init, tensors = {}, {}
    training(folder, reference, tensors, init)
    autocast_step(folder, reference, tensors, init)
    tensors.update({f"init.{name}": value for name, value in init.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / "reference.safetensors")
    (out / "reference.json").write_text(json.dumps({"rank": RANK, "alpha": ALPHA, "steps": STEPS, "max_grad_norm": MAX_GRAD_NORM, "targets": TARGETS}))
    (out / ".stamp").write_text(stamp_for(__file__, fixtures / ".stamp"))


if __name__ == "__main__":
    main()
