"""The library's mining stages as the pipeline's workers and driver call them: opening the model as
``diffmine mine`` opens it, and converting the library's results to and from the plain rows that Ray
Data moves between machines."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import diffmine

# The model's components, as the library names its folders.
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def open_model(model: Dict[str, Any]) -> "diffmine.Model":
    """The model as ``diffmine mine --model M [--base B] [--lora L]`` opens it: a folder's missing
    components come from ``base``; a single file is described by ``base``."""
    path, base = model["model"], model.get("base")
    keywords: Dict[str, Any] = {"device": model["device"], "dtype": model["dtype"], "variant": model.get("variant")}
    if os.path.isfile(path):
        keywords["config"] = base
    elif base is not None:
        keywords.update({part: os.path.join(base, part) for part in COMPONENTS if not os.path.exists(os.path.join(path, part))})
    opened = diffmine.Model(path, **keywords)
    if model.get("lora"):
        opened.load_lora(model["lora"], model.get("lora_scale", 1.0))
    return opened


def model_identity(model: Dict[str, Any]) -> Dict[str, Any]:
    """What of the model changes results: its files (by relative path and size, which a copy keeps)
    and how it is computed; the device is left out, so a run may resume on other hardware."""
    files = {}
    for role in ("model", "base", "lora"):
        root = model.get(role)
        if not root:
            continue
        if os.path.isfile(root):
            files[role] = os.path.getsize(root)
            continue
        for folder, _, names in os.walk(root):
            for name in names:
                full = os.path.join(folder, name)
                files[f"{role}/{os.path.relpath(full, root)}"] = os.path.getsize(full)
    return {"files": files, "dtype": model["dtype"], "variant": model.get("variant"),
            "lora_scale": model.get("lora_scale") if model.get("lora") else None}


def unreadable(error: BaseException) -> Optional[str]:
    """The reason an image cannot be mined when ``error`` says the image itself is at fault (its
    bytes or format), else None: other errors (the model, memory) must fail the run."""
    if isinstance(error, (diffmine.InvalidData, diffmine.Unsupported, diffmine.FileError, OSError)):
        return str(error)
    return None


# --- provisional: until the library exposes its stages -------------------------------------------------
from typing import List, NamedTuple  # noqa: E402

import ctypes  # noqa: E402

import numpy as np  # noqa: E402

from .. import _lib  # noqa: E402


class Candidate(NamedTuple):
    label: str
    path: str
    key: str
    x: int
    y: int
    size: int
    score: float


_FIELDS = {"samples": "samples", "batch": "batch", "seed": "seed", "resize": "resize_short_side", "patch": "patch_size",
           "per_image": "per_image", "top": "top", "ensemble": "dift_ensemble", "clusters": "clusters", "restarts": "restarts"}


def default(name: str) -> Any:
    options = _lib.CMinerOptions()
    _lib.check(_lib.lib().dm_miner_options_default(ctypes.byref(options)))
    return getattr(options, _FIELDS[name])


class _Candidates(NamedTuple):
    height: int
    width: int
    boxes: list
    map: np.ndarray


def image_candidates(model: Any, image: bytes, path: str, label: str, mining: Dict[str, Any]) -> _Candidates:
    pixels = diffmine.read_image(image).pixels
    prompt = mining.get("prompt_template", "Image of {label}.").replace("{label}", label)
    typicality = model.typicality(pixels, prompt, mining.get("null_prompt", ""), samples=mining.get("samples"),
                                  seed=mining.get("seed"), batch=mining.get("batch"), resize=mining.get("resize"))
    h, w = typicality.shape
    patch = min(mining.get("patch", default("patch")), h, w)
    boxes = diffmine.select_patches(typicality, patch, mining.get("per_image", default("per_image")))
    return _Candidates(h, w, boxes, typicality)


def top_per_label(candidates: List[Candidate], top: int) -> List[Candidate]:
    by_label: Dict[str, List[Candidate]] = {}
    for c in candidates:
        by_label.setdefault(c.label, []).append(c)
    kept = []
    for label in sorted(by_label):
        ordered = sorted(by_label[label], key=lambda c: (-c.score, os.fsencode(c.path), c.y, c.x))
        kept.extend(ordered[:top])
    return kept


def box_features(model: Any, image: bytes, path: str, label: str, boxes: list, mining: Dict[str, Any]) -> np.ndarray:
    raise NotImplementedError("box features: waiting for the library's entry point")


def finish(settings: Any, workdir: Any, stage: str, kept: List[Candidate], features: Dict[tuple, np.ndarray], summary: Any) -> None:
    raise NotImplementedError("clustering and report: waiting for the library's entry points")
