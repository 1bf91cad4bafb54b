#!/usr/bin/env python3
"""Quality half of the typicality time-to-quality benchmark: how many samples N each way of
drawing needs to reach the quality of the authors' default (N = 100, f32, i.i.d. noise and t).

Quality of a map = its Pearson correlation with a converged map of the same image: N = CONVERGED
samples, f32, i.i.d. draws, on a model small enough to make that affordable (the embedded demo model,
finetuned, 64 px held-out images). Every mode is run with several seeds per image; the correlation is
averaged over images and seeds.

Modes: i.i.d. (the authors'), antithetic noise pairs, stratified t, both; each in f32 and in bf16
(the compute dtype of the whole model, as `Model(dtype="bfloat16")` loads it).

Usage: typicality_quality.py PRETRAINED_DIR FINETUNED_DIR HELD_OUT_DIR OUT.json
       [--images-per-label 2] [--seeds 2] [--converged 2000]
Prints a table and writes the curves and the N each mode needs to OUT.json.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

import diffmine

LABEL_PROMPT, NULL_PROMPT = "Chest X-Ray with {label}.", "Chest X-Ray."
SAMPLE_COUNTS = [10, 20, 30, 50, 70, 100, 150]
MODES = {
    "iid": {},
    "antithetic": {"antithetic": True},
    "stratified": {"stratified": True},
    "antithetic+stratified": {"antithetic": True, "stratified": True},
}
REFERENCE_N = 100


def held_out_images(root: Path, per_label: int):
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(label_dir.glob("*.png"))[:per_label]:
            yield label_dir.name, np.asarray(Image.open(path).convert("RGB"))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def needed_samples(curve: dict, target: float):
    """The smallest N whose mean correlation reaches `target`, linearly interpolated between the
    measured counts; None when even the largest count falls short."""
    counts = sorted(curve)
    for low, high in zip([None] + counts, counts):
        if curve[high] >= target:
            if low is None:
                return float(high)
            fraction = (target - curve[low]) / (curve[high] - curve[low])
            return low + fraction * (high - low)
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("pretrained")
    parser.add_argument("finetuned")
    parser.add_argument("held_out", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--images-per-label", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--converged", type=int, default=2000)
    args = parser.parse_args()
    base = args.pretrained
    components = dict(vae=f"{base}/vae", text_encoder=f"{base}/text_encoder", tokenizer=f"{base}/tokenizer", scheduler=f"{base}/scheduler")
    models = {dtype: diffmine.Model(args.finetuned, dtype=dtype, **components) for dtype in ("float32", "bfloat16")}
    images = list(held_out_images(args.held_out, args.images_per_label))

    correlations = {}  # (dtype, mode, N) -> list over images and seeds
    bf16_against_f32 = []  # the same draws (N = REFERENCE_N, seed 0) in both dtypes: bf16's own error
    for index, (label, image) in enumerate(images):
        prompt = LABEL_PROMPT.format(label=label)
        converged = models["float32"].typicality(image, prompt, NULL_PROMPT, samples=args.converged, seed=10_000 + index, batch=50)
        for dtype, model in models.items():
            for mode, flags in MODES.items():
                for n in SAMPLE_COUNTS:
                    for seed in range(args.seeds):
                        t = model.typicality(image, prompt, NULL_PROMPT, samples=n, seed=seed, **flags)
                        correlations.setdefault((dtype, mode, n), []).append(correlation(t, converged))
        same_draws = [model.typicality(image, prompt, NULL_PROMPT, samples=REFERENCE_N, seed=0) for model in models.values()]
        bf16_against_f32.append(correlation(*same_draws))
        print(f"image {index + 1}/{len(images)} done", flush=True)

    curves = {f"{dtype} {mode}": {n: float(np.mean(correlations[(dtype, mode, n)])) for n in SAMPLE_COUNTS} for dtype in models for mode in MODES}
    target = curves["float32 iid"][REFERENCE_N]
    needed = {name: needed_samples(curve, target) for name, curve in curves.items()}
    print(f"bf16 map against the f32 map of the same draws (N = {REFERENCE_N}): mean correlation {np.mean(bf16_against_f32):.4f}, lowest {np.min(bf16_against_f32):.4f}")
    print(f"target: the mean correlation of the authors' default (f32, i.i.d., N = {REFERENCE_N}) = {target:.4f}")
    print("| mode | " + " | ".join(f"N={n}" for n in SAMPLE_COUNTS) + " | N to reach the target |")
    print("|---|" + "---|" * (len(SAMPLE_COUNTS) + 1))
    for name, curve in curves.items():
        reach = "not reached" if needed[name] is None else f"{needed[name]:.0f}"
        print(f"| {name} | " + " | ".join(f"{curve[n]:.4f}" for n in SAMPLE_COUNTS) + f" | {reach} |")
    args.out.write_text(
        json.dumps(
            {
                "images": len(images),
                "seeds": args.seeds,
                "converged_samples": args.converged,
                "target": target,
                "curves": curves,
                "samples_needed": needed,
                "bf16_against_f32_same_draws": bf16_against_f32,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
