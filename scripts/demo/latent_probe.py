#!/usr/bin/env python3
"""Do a VAE's latents still say which label an image has? A linear classifier (logistic regression,
5-fold cross-validation) is fitted on the VAE's posterior means around each planted element (4 × 4
latent cells centred on the box) and, for comparison, on the pixels of the same window (16 × 16 at
the 4× downsampling of the demo VAE). If the latents score about as well as the pixels, the VAE keeps
what tells the labels apart and a UNet that does not read the label is limited elsewhere.

Usage: latent_probe.py VAE_DIR IMAGE_SET_DIR
(IMAGE_SET_DIR: a `diffmine synth` folder of 64 px images.)
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from ground_truth import planted_boxes

WINDOW_CELLS = 4
DOWNSAMPLING = 4


def window_origin(box, cells_per_side: int) -> tuple[int, int]:
    """Top-left latent cell of the window centred on the box, kept inside the latent grid."""
    x, y, w, h = box
    half = WINDOW_CELLS // 2
    clamp = lambda c: min(max(int(c / DOWNSAMPLING), half), cells_per_side - half) - half
    return clamp(x + w / 2), clamp(y + h / 2)


def probe_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    standardised = (features - features.mean(0)) / (features.std(0) + 1e-6)
    return float(cross_val_score(LogisticRegression(max_iter=3000), standardised, labels, cv=5).mean())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("vae")
    parser.add_argument("images", type=Path)
    args = parser.parse_args()
    vae = AutoencoderKL.from_pretrained(args.vae).float().eval()
    boxes = planted_boxes(args.images)
    names = sorted({label for label, _ in boxes.values()})
    latent_windows, pixel_windows, targets = [], [], []
    for image_name, (label, box) in sorted(boxes.items()):
        pixels = np.asarray(Image.open(args.images / label / image_name).convert("RGB"))
        image = torch.tensor(pixels).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            latents = vae.encode(image).latent_dist.mean[0]
        cx, cy = window_origin(box, latents.shape[-1])
        latent_windows.append(latents[:, cy : cy + WINDOW_CELLS, cx : cx + WINDOW_CELLS].flatten().numpy())
        px, py, side = cx * DOWNSAMPLING, cy * DOWNSAMPLING, WINDOW_CELLS * DOWNSAMPLING
        pixel_windows.append(image[0, 0, py : py + side, px : px + side].flatten().numpy())
        targets.append(names.index(label))
    targets = np.array(targets)
    latent = probe_accuracy(np.array(latent_windows), targets)
    pixel = probe_accuracy(np.array(pixel_windows), targets)
    print(f"{len(targets)} images, {len(names)} labels (chance {1 / len(names):.2f}): latent probe {latent:.3f}, pixel probe {pixel:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
