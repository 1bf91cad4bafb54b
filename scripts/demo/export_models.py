#!/usr/bin/env python3
"""Copy the trained demo models into the repository in their shipped form: float16 weights; the
pretrained folder complete, the finetuned folder with its UNet only (the rest is the pretrained one's).

Usage: export_models.py PRETRAINED_DIR FINETUNED_DIR OUT_DIR
"""

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def copy_component(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix == ".safetensors":
            tensors = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(path).items()}
            save_file(tensors, target / path.name)
        else:
            shutil.copy(path, target / path.name)


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    pretrained, finetuned, out = (Path(a) for a in sys.argv[1:])
    # Only the two model folders are replaced: the measurements (EVALUATION.md) beside them stay.
    for folder in ("pretrained", "finetuned"):
        shutil.rmtree(out / folder, ignore_errors=True)
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        copy_component(pretrained / component, out / "pretrained" / component)
    shutil.copy(pretrained / "model_index.json", out / "pretrained" / "model_index.json")
    copy_component(finetuned / "unet", out / "finetuned" / "unet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
