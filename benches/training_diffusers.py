#!/usr/bin/env python3
"""The diffusers side of benches/training.sh and of benches/gpu.sh's finetuning step: what `diffmine finetune` does, in diffusers' text-to-image
training recipe (epsilon MSE at t uniform, AdamW lr 1e-4 with weight decay 1e-2, gradient clipping 1.0,
VAE and text encoder frozen), from the same folder on the same images. A mode prefixed with `lora-`
follows diffusers' train_text_to_image_lora.py instead: the UNet frozen, peft's LoraConfig(r=RANK,
lora_alpha=RANK, init_lora_weights="gaussian") on to_k, to_q, to_v and to_out.0 added with
unet.add_adapter, AdamW and clipping over the adapters' parameters only.

Usage: training_diffusers.py MODEL_DIR DATA_DIR STEPS BATCH RESOLUTION MODE [RANK [DEVICE]]
  MODE: [lora-]f32 | [lora-]f32-checkpointing | [lora-]bf16-autocast | [lora-]bf16-autocast-checkpointing
  RANK: the LoRA rank (4)
  DEVICE: cpu (default) or cuda
Prints JSON: the mean time of the steps after the first (as the CLI's "steps after the first"; on CUDA
each step ends when the device has finished it); the peak memory of both sides is measured by
benches/training.sh.
"""

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer


def load_images(data: Path, resolution: int) -> tuple[torch.Tensor, list[str]]:
    """Each image of a folder-per-label set, shorter side resized and centre-cropped, in [-1, 1]."""
    pixels, labels = [], []
    for path in sorted(data.glob("*/*.png")):
        image = Image.open(path).convert("RGB")
        scale = resolution / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        pixels.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
        labels.append(path.parent.name)
    return torch.stack(pixels), labels


def main() -> int:
    model, data, steps, batch, resolution, mode = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    rank = int(sys.argv[7]) if len(sys.argv) > 7 else 4
    device = torch.device(sys.argv[8] if len(sys.argv) > 8 else "cpu")
    lora = mode.startswith("lora-")
    mode = mode.removeprefix("lora-")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").to(device)
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae").to(device)
    text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder").to(device)
    tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler")
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    if lora:
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    trained = [p for p in unet.parameters() if p.requires_grad]
    unet.train()
    if mode.endswith("checkpointing"):
        unet.enable_gradient_checkpointing()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if mode.startswith("bf16") else nullcontext()

    images, labels = load_images(data, resolution)
    with torch.no_grad():
        posterior = vae.encode(images.to(device)).latent_dist
        ids = tokenizer([f"Image of {label}." for label in labels], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids.to(device)
        context = text_encoder(ids)[0]
    optimizer = torch.optim.AdamW(trained, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)

    step_ends = []
    for _ in range(steps):
        members = torch.randint(0, len(labels), (batch,), device=device)
        latents = posterior.sample()[members] * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with autocast:
            prediction = unet(noisy, timesteps, context[members]).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_ends.append(time.perf_counter())
    seconds = (step_ends[-1] - step_ends[0]) / (steps - 1)
    print(json.dumps({"kind": "finetune", "impl": "diffusers", "mode": ("lora-" if lora else "") + mode, "device": device.type, "batch": batch, "resolution": resolution,
                      "steps": steps, "seconds_per_step": seconds, "last_loss": loss.item()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
