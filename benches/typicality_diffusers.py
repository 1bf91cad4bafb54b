#!/usr/bin/env python3
"""diffusers' half of the typicality speed benchmarks (benches/typicality.sh, benches/gpu.sh): the
authors' loop.

Usage: typicality_diffusers.py MODEL_DIR IMAGE.png PROMPT NULL_PROMPT SAMPLES BATCH MODE [DEVICE [REPEATS]]
  MODE: f32 | bf16-autocast | fp16 | bf16

Loads the pipeline, then times one typicality map (Eq. 3) as the authors compute it: VAE encode
and a posterior sample, both prompts' text embeddings, then per batch of BATCH samples one UNet call of
2·BATCH rows (the noised latents under the label prompt and under the null prompt), the squared error
averaged over latent channels, and at the end the mean over samples of null minus label, upsampled
bilinearly to the image size. `f32` and `bf16-autocast` load the pipeline in float32, the latter
running the whole timed region under torch.autocast(bfloat16), as a diffusers user would speed it up;
`fp16` (the authors' setting: the pipeline loaded in float16, attention through torch's
scaled-dot-product attention, which current diffusers uses where they used xformers) and `bf16` load
it in that dtype. DEVICE: cpu (default; torch.set_num_threads(2)) or cuda. With REPEATS (default 1)
above 1, one untimed warm-up map comes first and the median of REPEATS maps is reported.
torch.inference_mode(). One JSON line on stdout: the timed region (the same work as the libdiffmine
CLI's "typicality map ... in X s") and the load time.
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = 2
# Each mode's pipeline dtype, and the dtype name benches/gpu.sh pairs it with libdiffmine's under.
MODES = {"f32": ("float32", "float32"), "bf16-autocast": ("float32", "bfloat16-autocast"), "fp16": ("float16", "float16"), "bf16": ("bfloat16", "bfloat16")}
T_MIN, T_MAX = 100, 700  # t in [floor(0.1 T), floor(0.7 T)) for T = 1000


def typicality_map(pipe, image, prompt: str, null_prompt: str, samples: int, batch: int, generator):
    import torch

    latent = pipe.vae.encode(image).latent_dist.sample(generator) * pipe.vae.config.scaling_factor
    ids = pipe.tokenizer([prompt, null_prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt")
    label, null = pipe.text_encoder(ids.input_ids).last_hidden_state.chunk(2)
    differences = []
    for start in range(0, samples, batch):
        b = min(batch, samples - start)
        eps = torch.randn(b, *latent.shape[1:], generator=generator, device=latent.device, dtype=latent.dtype)
        t = torch.randint(T_MIN, T_MAX, (b,), generator=generator, device=latent.device)
        noisy = pipe.scheduler.add_noise(latent.expand(b, -1, -1, -1), eps, t)
        context = torch.cat([label.expand(b, -1, -1), null.expand(b, -1, -1)])
        prediction = pipe.unet(torch.cat([noisy, noisy]), torch.cat([t, t]), context).sample.float()
        loss = ((prediction - torch.cat([eps, eps])) ** 2).mean(1)
        differences.append(loss[b:] - loss[:b])
    mean = torch.cat(differences).mean(0)[None, None]
    return torch.nn.functional.interpolate(mean, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]


def main() -> int:
    if not 8 <= len(sys.argv) <= 10 or sys.argv[7] not in MODES:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, image_path, prompt, null_prompt = sys.argv[1:5]
    samples, batch, mode = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
    device = sys.argv[8] if len(sys.argv) > 8 else "cpu"
    repeats = int(sys.argv[9]) if len(sys.argv) > 9 else 1
    import contextlib

    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    if device == "cpu":
        torch.set_num_threads(THREADS)
    load_dtype, dtype_name = MODES[mode]
    dtype = getattr(torch, load_dtype)
    started = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=dtype, safety_checker=None, requires_safety_checker=False).to(device)
    load_seconds = time.perf_counter() - started
    pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device, dtype)
    precision = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if mode == "bf16-autocast" else contextlib.nullcontext()

    def one_map():
        with torch.inference_mode(), precision:
            started = time.perf_counter()
            result = typicality_map(pipe, image, prompt, null_prompt, samples, batch, torch.Generator(device).manual_seed(42))
            mean = float(result.float().mean())  # waits for the device
            return time.perf_counter() - started, mean

    warmup = one_map()[0] if repeats > 1 else None
    runs = [one_map() for _ in range(repeats)]
    seconds = statistics.median(s for s, _ in runs)
    print(json.dumps({"kind": "typicality", "impl": "diffusers", "mode": mode, "dtype": dtype_name, "device": device, "samples": samples,
                      "batch": batch, "seconds": seconds, "all": [s for s, _ in runs], "warmup_seconds": warmup,
                      "images_per_second": 1.0 / seconds, "load_seconds": load_seconds, "mean": runs[-1][1]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
