#!/usr/bin/env python3
"""diffusers' half of the typicality speed benchmark (benches/typicality.sh): the authors' loop.

Usage: typicality_diffusers.py MODEL_DIR IMAGE.png PROMPT NULL_PROMPT SAMPLES BATCH f32|bf16-autocast

Loads the f32 pipeline, then times one typicality map (Eq. 3) as the authors compute it: VAE encode
and a posterior sample, both prompts' text embeddings, then per batch of BATCH samples one UNet call of
2·BATCH rows (the noised latents under the label prompt and under the null prompt), the squared error
averaged over latent channels, and at the end the mean over samples of null minus label, upsampled
bilinearly to the image size. `bf16-autocast` runs the whole timed region under
torch.autocast("cpu", torch.bfloat16), as a diffusers user would speed it up. CPU,
torch.set_num_threads(2), torch.inference_mode(). One JSON line on stdout: the timed region (the same
work as the libdiffmine CLI's "typicality map ... in X s") and the load time.
"""

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = 2
T_MIN, T_MAX = 100, 700  # t in [floor(0.1 T), floor(0.7 T)) for T = 1000


def typicality_map(pipe, image, prompt: str, null_prompt: str, samples: int, batch: int, generator):
    import torch

    latent = pipe.vae.encode(image).latent_dist.sample(generator) * pipe.vae.config.scaling_factor
    ids = pipe.tokenizer([prompt, null_prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt")
    label, null = pipe.text_encoder(ids.input_ids).last_hidden_state.chunk(2)
    differences = []
    for start in range(0, samples, batch):
        b = min(batch, samples - start)
        eps = torch.randn(b, *latent.shape[1:], generator=generator)
        t = torch.randint(T_MIN, T_MAX, (b,), generator=generator)
        noisy = pipe.scheduler.add_noise(latent.expand(b, -1, -1, -1), eps, t)
        context = torch.cat([label.expand(b, -1, -1), null.expand(b, -1, -1)])
        prediction = pipe.unet(torch.cat([noisy, noisy]), torch.cat([t, t]), context).sample.float()
        loss = ((prediction - torch.cat([eps, eps])) ** 2).mean(1)
        differences.append(loss[b:] - loss[:b])
    mean = torch.cat(differences).mean(0)[None, None]
    return torch.nn.functional.interpolate(mean, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]


def main() -> int:
    if len(sys.argv) != 8:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, image_path, prompt, null_prompt = sys.argv[1:5]
    samples, batch, mode = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
    import contextlib

    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    load_seconds = time.perf_counter() - started
    pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16-autocast" else contextlib.nullcontext()
    with torch.inference_mode(), precision:
        started = time.perf_counter()
        result = typicality_map(pipe, image, prompt, null_prompt, samples, batch, torch.Generator().manual_seed(42))
        seconds = time.perf_counter() - started
    print(json.dumps({"impl": "diffusers", "mode": mode, "seconds": seconds, "load_seconds": load_seconds, "mean": float(result.float().mean())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
