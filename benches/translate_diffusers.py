#!/usr/bin/env python3
"""diffusers' half of the translation benchmark (benches/translate.sh).

Usage: translate_diffusers.py MODEL_DIR IMAGE.png SOURCE_PROMPT TARGETS(comma-separated) INVERSION_STEPS STEPS GUIDANCE

Runs the Plug-and-Play reference of tests/reference/translate_reference.py (its `invert`,
`register_injection`, `plug_and_play` and `embed`, imported, with the step counts and guidance set on
the module) on the f32 pipeline in MODEL_DIR: VAE encode (posterior mean), DDIM inversion under the
source prompt, one sampling loop per target (the authors' batch [source, unconditional, conditional]),
then a VAE decode of each result and of the source latent, one at a time, as libdiffmine's `translate`
does. CPU, torch.set_num_threads(2). One JSON line on stdout: the timed region (the same work as the
libdiffmine CLI's "N translations in X s") and the load time.
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = 2


def main() -> int:
    if len(sys.argv) != 8:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, image_path, source, targets = sys.argv[1], sys.argv[2], sys.argv[3], [t.strip() for t in sys.argv[4].split(",")]
    inversion_steps, steps, guidance = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))
    import diffusers
    import numpy as np
    import torch
    import transformers
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    import translate_reference as ref

    ref.INVERSION_STEPS, ref.SAMPLING_STEPS, ref.GUIDANCE = inversion_steps, steps, guidance
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(THREADS)

    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(
        model_dir, dtype=torch.float32, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    load_seconds = time.perf_counter() - t0
    rgb = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None] / 127.5 - 1.0

    with torch.no_grad():
        t0 = time.perf_counter()
        scale = pipe.vae.config.scaling_factor
        latent = pipe.vae.encode(image).latent_dist.mean * scale
        timesteps, latents = ref.invert(pipe, latent, ref.embed(pipe, source))
        inverted = dict(zip(timesteps, latents))
        inversion_seconds = time.perf_counter() - t0
        switches = ref.register_injection(pipe.unet)
        finals = [ref.plug_and_play(pipe, inverted, target, switches) for target in targets]
        images = [pipe.vae.decode(x / scale).sample for x in finals + [latent]]
        seconds = time.perf_counter() - t0
    assert all(i.shape == image.shape for i in images)
    print(json.dumps(dict(impl="diffusers", seconds=seconds, inversion_seconds=inversion_seconds, load_seconds=load_seconds,
                          threads=torch.get_num_threads(), targets=len(targets), size=list(image.shape[2:]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
