#!/usr/bin/env python3
"""Does a finetuned demo model know which label an image has? For each image, its typicality map is
computed under every label's prompt (same noise and timesteps for all: N samples, seed 42), and the
label whose map stands out most inside the planted box (mean inside minus mean outside) is the model's
guess. Prints the confusion matrix (rows: true label, columns: guess) and the accuracy, then the mean
contrast (×1e3) of each prompt's map on each label's images, which shows a prompt that wins by a gain
of its own on every label. A model that reads its caption gets a diagonal; one that does not, chance.

Usage: confusion.py BASE_DIR FINETUNED_DIR IMAGE_SET_DIR [--per-label N] [--samples N]
(IMAGE_SET_DIR: a `diffmine synth` folder, training or held-out.)
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import diffmine
from ground_truth import LABEL_PROMPT, NULL_PROMPT, box_mask, planted_boxes


def box_contrast(typicality: np.ndarray, inside: np.ndarray) -> float:
    """The map's mean inside the box minus its mean outside: what the label adds at the element,
    without the offset a prompt adds everywhere (which would make the prompt that differs most from
    the null prompt win on every image)."""
    return float(typicality[inside].mean() - typicality[~inside].mean())


def print_table(labels: list[str], values: np.ndarray, cell: str) -> None:
    width = max(map(len, labels))
    print(" " * width + " | " + " ".join(f"{l[:6]:>6}" for l in labels))
    for label, row in zip(labels, values):
        print(f"{label:>{width}} | " + " ".join(cell.format(v) for v in row))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("finetuned")
    parser.add_argument("images", type=Path)
    parser.add_argument("--per-label", type=int, default=4)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    base = args.base
    model = diffmine.Model(
        args.finetuned, vae=f"{base}/vae", text_encoder=f"{base}/text_encoder", tokenizer=f"{base}/tokenizer", scheduler=f"{base}/scheduler"
    )
    boxes = planted_boxes(args.images)
    labels = sorted(p.name for p in args.images.iterdir() if p.is_dir())
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    contrast_sums = np.zeros((len(labels), len(labels)))
    for row, true_label in enumerate(labels):
        for path in sorted((args.images / true_label).glob("*.png"))[: args.per_label]:
            image = np.asarray(Image.open(path).convert("RGB"))
            inside = box_mask(image.shape[:2], boxes[path.name][1])
            contrasts = [box_contrast(model.typicality(image, LABEL_PROMPT.format(label=l), NULL_PROMPT, samples=args.samples), inside) for l in labels]
            confusion[row, int(np.argmax(contrasts))] += 1
            contrast_sums[row] += contrasts
    print_table(labels, confusion, "{:>6}")
    print(f"accuracy {np.trace(confusion) / confusion.sum():.2f} (chance {1 / len(labels):.2f})")
    print("mean box contrast ×1e3 (rows: true label, columns: prompt)")
    print_table(labels, 1e3 * contrast_sums / confusion.sum(axis=1, keepdims=True), "{:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
