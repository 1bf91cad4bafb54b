"""The library's mining stages (``dm_mining_*``, ``dm_report_*``: the functions ``diffmine mine``
composes) as the pipeline's workers and driver call them: opening the model as ``diffmine mine``
opens it, and converting the library's results to and from the plain rows Ray Data moves between
machines."""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

import diffmine

from .. import _lib
from .._lib import check
from ..medical import _image_options
from ..miner import _OPTIONS, _set_counts
from ..model import _c_string

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


class ImageCandidates(NamedTuple):
    """An image's share of a label's mining: its size as mined, its best boxes ``(x, y, size, score)``
    and its reduced typicality map."""

    height: int
    width: int
    boxes: List[Tuple[int, int, int, float]]
    map: np.ndarray


# The prompts `diffmine mine` uses when given none (the library's MiningOptions default; its C options
# have no default prompt, a C caller always names one).
DEFAULT_PROMPTS = {"prompt_template": "Image of {label}.", "null_prompt": ""}


def miner_options(mining: Dict[str, Any]) -> _lib.CMinerOptions:
    """``dm_miner_options`` from the run's mining options (the library's defaults for the others)."""
    options = _lib.CMinerOptions()
    check(_lib.lib().dm_miner_options_default(ctypes.byref(options)))
    for name, default_prompt in DEFAULT_PROMPTS.items():
        setattr(options, name, _c_string(mining.get(name, default_prompt), name))
    _set_counts(options, {k: v for k, v in mining.items() if k in _OPTIONS}, _OPTIONS)
    return options


def default(name: str) -> int:
    """The library's default of a count option (``top``...)."""
    return int(getattr(miner_options({}), _OPTIONS[name]))


@contextlib.contextmanager
def image_view(image: bytes) -> Iterator[_lib.CImageView]:
    """The view of an image file's bytes as ``dm_image_open`` reads the file (as ``diffmine mine``
    reads it), valid inside the block."""
    lib = _lib.lib()
    data = (ctypes.c_uint8 * len(image)).from_buffer_copy(image)
    handle = ctypes.c_void_p()
    check(lib.dm_image_open_buffer(data, len(image), ctypes.byref(_image_options(0, None, "linear", False)), ctypes.byref(handle)))
    try:
        view = _lib.CImageView()
        check(lib.dm_image_get_view(handle, ctypes.byref(view)))
        yield view
    finally:
        check(lib.dm_image_free(handle))


def image_candidates(model: "diffmine.Model", image: bytes, label: str, options: _lib.CMinerOptions) -> ImageCandidates:
    """The per-image stage (``dm_mining_image``)."""
    boxes = (_lib.CBox * max(options.per_image, 1))()
    count = ctypes.c_size_t()
    values = np.zeros(_MAP_MAX, dtype=np.float32)
    info = _lib.CMinedImageInfo(struct_size=ctypes.sizeof(_lib.CMinedImageInfo))
    with image_view(image) as view:
        check(_lib.lib().dm_mining_image(model._h(), ctypes.byref(options), ctypes.byref(view), _c_string(label, "label"), boxes,
                                         len(boxes), ctypes.byref(count), values.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                         values.size, ctypes.byref(info)))
    kept = [(b.x, b.y, b.size, float(b.score)) for b in boxes[: count.value]]
    reduced = values[: info.map_height * info.map_width].reshape(info.map_height, info.map_width).copy()
    return ImageCandidates(info.height, info.width, kept, reduced)


# The most values of a reduced typicality map (DM_MINING_MAP_MAX: 64 × 64).
_MAP_MAX = 64 * 64


def _c_candidates(candidates: Sequence[Candidate]) -> "ctypes.Array[_lib.CCandidate]":
    """The C array of ``candidates`` (its names point into the tuples' strings, which outlive it)."""
    array = (_lib.CCandidate * len(candidates))()
    for slot, c in zip(array, candidates):
        slot.image, slot.x, slot.y, slot.size, slot.typicality = c.path.encode(), c.x, c.y, c.size, c.score
    return array


def top_per_label(candidates: Sequence[Candidate], top: int) -> List[Candidate]:
    """The selection stage (``dm_mining_top``) of each label, labels sorted: associative, so it serves
    a block of candidates and the merge of the blocks' bests alike."""
    by_label: Dict[str, List[Candidate]] = {}
    for c in candidates:
        by_label.setdefault(c.label, []).append(c)
    kept: List[Candidate] = []
    for label in sorted(by_label):
        group = by_label[label]
        indices = (ctypes.c_size_t * max(len(group), 1))()
        count = ctypes.c_size_t()
        check(_lib.lib().dm_mining_top(_c_candidates(group), len(group), top, indices, len(group), ctypes.byref(count)))
        kept.extend(group[i] for i in indices[: count.value])
    return kept


def box_features(model: "diffmine.Model", image: bytes, label: str, boxes: Sequence[Dict[str, Any]],
                 options: _lib.CMinerOptions) -> np.ndarray:
    """The feature stage (``dm_mining_box_features``): a row per box."""
    lib = _lib.lib()
    dim = ctypes.c_size_t()
    check(lib.dm_mining_feature_dim(model._h(), ctypes.byref(dim)))
    c_boxes = (_lib.CBox * len(boxes))(*[_lib.CBox(b["x"], b["y"], b["size"], b["score"]) for b in boxes])
    features = np.zeros((len(boxes), dim.value), dtype=np.float32)
    with image_view(image) as view:
        check(lib.dm_mining_box_features(model._h(), ctypes.byref(options), ctypes.byref(view), _c_string(label, "label"), c_boxes,
                                         len(boxes), features.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), features.size))
    return features


class Report:
    """A report folder gathered label by label (``dm_report_*``) and written as ``diffmine mine``
    writes its own; the clustering stage (``dm_mining_cluster``) places each label's boxes."""

    def __init__(self, options: _lib.CMinerOptions) -> None:
        self.options = options
        handle = ctypes.c_void_p()
        check(_lib.lib().dm_report_new(ctypes.byref(options), ctypes.byref(handle)))
        self.handle = handle.value

    def close(self) -> None:
        if self.handle is not None:
            check(_lib.lib().dm_report_free(self.handle))
            self.handle = None

    def __enter__(self) -> "Report":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add_label(self, label: str, kept: Sequence[Candidate], features: np.ndarray) -> None:
        """Clusters and ranks ``label``'s kept boxes (row i of ``features`` the feature of ``kept[i]``)
        and adds them."""
        lib, n = _lib.lib(), len(kept)
        c_kept = _c_candidates(kept)
        features = np.ascontiguousarray(features, dtype=np.float32)
        patches = (_lib.CClusteredPatch * max(n, 1))()
        clusters = (_lib.CMinedCluster * max(n, 1))()
        patch_count, cluster_count = ctypes.c_size_t(), ctypes.c_size_t()
        check(lib.dm_mining_cluster(c_kept, n, features.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), features.size,
                                    features.shape[1], ctypes.byref(self.options), patches, n, ctypes.byref(patch_count),
                                    clusters, n, ctypes.byref(cluster_count)))
        check(lib.dm_report_add_label(self.handle, _c_string(label, "label"), c_kept, n, patches, patch_count.value, clusters,
                                      cluster_count.value))

    def add_map(self, label: str, path: str, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.float32)
        check(_lib.lib().dm_report_add_map(self.handle, _c_string(label, "label"), _c_string(path, "image"),
                                           values.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), values.shape[0], values.shape[1]))

    def add_skipped(self, label: str, path: str, reason: str) -> None:
        check(_lib.lib().dm_report_add_skipped(self.handle, _c_string(label, "label"), _c_string(path, "image"),
                                               _c_string(reason, "reason")))

    def write(self, out: str) -> None:
        check(_lib.lib().dm_report_write(self.handle, _c_string(out, "out")))
