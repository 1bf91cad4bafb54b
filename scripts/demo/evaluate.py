#!/usr/bin/env python3
"""Measure the demo models against the planted ground truth of a held-out generated set: per label,
the average precision of each model's typicality map against the planted box (pixels whose centre lies
inside it are positive), the box area fraction (what a random map scores), and the sign test (the
map's mean inside the box against outside). Writes a Markdown table.

Usage: evaluate.py PRETRAINED_DIR FINETUNED_DIR HELD_OUT_DIR OUT.md [--per-label N] [--samples N] [--lora FILE [--lora-only]]
  --lora FILE: measure a third model too, "lora": the pretrained model with this LoRA adapter;
  --lora-only: that model alone (the maps are seeded, so the other two models' rows do not change).
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import average_precision_score

import diffmine
from ground_truth import LABEL_PROMPT, NULL_PROMPT, box_mask, planted_boxes


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("pretrained")
    parser.add_argument("finetuned")
    parser.add_argument("held_out", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-label", type=int, default=10)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--lora", type=Path)
    parser.add_argument("--lora-only", action="store_true")
    args = parser.parse_args()
    base = args.pretrained
    models = {
        "pretrained": diffmine.Model(base),
        "finetuned": diffmine.Model(
            args.finetuned, vae=f"{base}/vae", text_encoder=f"{base}/text_encoder", tokenizer=f"{base}/tokenizer", scheduler=f"{base}/scheduler"
        ),
    }
    if args.lora is not None:
        models["lora"] = diffmine.Model(base)
        models["lora"].load_lora(args.lora)
        if args.lora_only:
            models = {"lora": models["lora"]}
    boxes = planted_boxes(args.held_out)
    results = {}
    for label_dir in sorted(p for p in args.held_out.iterdir() if p.is_dir()):
        label = label_dir.name
        for path in sorted(label_dir.glob("*.png"))[: args.per_label]:
            image = np.asarray(Image.open(path).convert("RGB"))
            mask = box_mask(image.shape[:2], boxes[path.name][1])
            for name, model in models.items():
                t = model.typicality(image, LABEL_PROMPT.format(label=label), NULL_PROMPT, samples=args.samples)
                entry = results.setdefault((label, name), {"ap": [], "inside": [], "outside": [], "area": []})
                entry["ap"].append(average_precision_score(mask.ravel(), t.ravel()))
                entry["inside"].append(float(t[mask].mean()))
                entry["outside"].append(float(t[~mask].mean()))
                entry["area"].append(float(mask.mean()))
    lines = [
        f"Held-out images: {args.per_label} per label, typicality with N = {args.samples} (other settings default).",
        "",
        "| label | model | average precision (mean ± std) | box area fraction | mean inside box | mean outside | inside > outside |",
        "|---|---|---|---|---|---|---|",
    ]
    for (label, name), e in sorted(results.items()):
        ap = np.array(e["ap"])
        wins = sum(i > o for i, o in zip(e["inside"], e["outside"]))
        lines.append(
            f"| {label} | {name} | {ap.mean():.3f} ± {ap.std():.3f} | {np.mean(e['area']):.3f} | {np.mean(e['inside']):.2e} | "
            f"{np.mean(e['outside']):.2e} | {wins}/{len(ap)} |"
        )
    for name in models:
        aps = [a for (l, n), e in results.items() if n == name for a in e["ap"]]
        lines.append(f"\nMean average precision, {name}: {np.mean(aps):.3f}")
    area = np.mean([a for e in results.values() for a in e["area"]])
    lines.append(f"\nMean box area fraction (a random map's average precision): {area:.3f}")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
