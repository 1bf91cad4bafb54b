"""The library's mining stages (:mod:`diffmine.stages`: the functions ``diffmine mine`` composes) as
the pipeline's workers and driver call them: opening the model as ``diffmine mine`` opens it, and
converting the stages' arrays to and from the plain rows Ray Data moves between machines."""

from __future__ import annotations

import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

import diffmine
from diffmine import stages

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


class Candidate(NamedTuple):
    """A box of a label's candidates: its image (by the name the report shows, and by its result's
    key), its place and its mean typicality."""

    label: str
    path: str
    key: str
    x: int
    y: int
    size: int
    score: float


def mining_options(mining: Dict[str, Any]) -> stages.MiningOptions:
    """The stages' options from the run's, as ``diffmine mine`` takes them (the library's defaults for
    those left out; the t range's ends apart)."""
    defaults = stages.default_options()
    given = dict(mining)
    prompt = given.pop("prompt_template", defaults.prompt_template.decode())
    null_prompt = given.pop("null_prompt", (defaults.null_prompt or b"").decode())
    if "t_min" in given or "t_max" in given:
        given["t_range"] = (given.pop("t_min", defaults.t_min), given.pop("t_max", defaults.t_max))
    return stages.MiningOptions(prompt, null_prompt, **given)


def default_top() -> int:
    """The library's default of the boxes kept per label."""
    return int(stages.default_options().top)


def image_candidates(model: "diffmine.Model", image: bytes, label: str,
                     options: stages.MiningOptions) -> Tuple[stages.ImageCandidates, List[Dict[str, Any]]]:
    """The per-image stage on an image file's bytes; also its boxes as rows."""
    result = stages.image_candidates(model, diffmine.read_image(image).pixels, label, options)
    return result, [{name: b[name].item() for name in stages.BOX_DTYPE.names} for b in result.boxes]


def _box_array(boxes: Sequence[Any]) -> np.ndarray:
    """Boxes (rows with x, y, size and score) as a ``stages.BOX_DTYPE`` array."""
    return np.array([(b["x"], b["y"], b["size"], b["score"]) for b in boxes], dtype=stages.BOX_DTYPE)


def top_per_label(candidates: Sequence[Candidate], top: int) -> List[Candidate]:
    """The selection stage of each label, labels sorted: associative, so it serves a block of
    candidates and the merge of the blocks' bests alike."""
    by_label: Dict[str, List[Candidate]] = {}
    for c in candidates:
        by_label.setdefault(c.label, []).append(c)
    kept: List[Candidate] = []
    for label in sorted(by_label):
        group = by_label[label]
        best = stages.top_candidates([c.path for c in group], _box_array([c._asdict() for c in group]), top)
        kept.extend(group[i] for i in best)
    return kept


def box_features(model: "diffmine.Model", image: bytes, label: str, boxes: Sequence[Dict[str, Any]],
                 options: stages.MiningOptions) -> np.ndarray:
    """The feature stage on an image file's bytes: a row per box."""
    return stages.box_features(model, diffmine.read_image(image).pixels, label, _box_array(boxes), options)


def label_report(label: str, kept: Sequence[Candidate], features: np.ndarray, maps: Dict[str, np.ndarray],
                 skipped: Dict[str, str], options: stages.MiningOptions) -> stages.LabelReport:
    """The clustering stage of a label's kept boxes (row i of ``features`` the feature of ``kept[i]``),
    with what its report shows."""
    images, boxes = [c.path for c in kept], _box_array([c._asdict() for c in kept])
    return stages.LabelReport(label, images, boxes, stages.cluster(images, boxes, features, options), maps, skipped)
