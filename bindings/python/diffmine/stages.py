"""The stages of mining one by one, for running them apart (on several machines, images in any order):
the same functions :class:`diffmine.Miner` and ``diffmine mine`` compose, so composing them gives the
same result bit for bit.

0. :func:`list_set`: the images of a labelled set and their labels, as mining lists them.
1. :func:`image_candidates` per image and label: its typicality map (reduced, for the report) and best
   boxes. An image :func:`read_pixels` cannot read is skipped (and named in the report).
2. :func:`top_candidates` over any blocks of a label's boxes, then over the blocks' best: associative,
   ties broken by image name, then row, then column, so the order and blocking do not matter.
3. :func:`box_features` per image holding kept boxes.
4. :func:`cluster` of a label's kept boxes and features (in any order).
5. :func:`write_report` of every label's results.

Every generator is seeded per image from the options alone, so an image's result depends only on the
image, its label and the options. Options go in a :class:`MiningOptions`, which pickles (for workers).
"""

from __future__ import annotations

import ctypes
import json
import os
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._lib import check
from .medical import read_image
from .miner import _OPTIONS, _SAMPLING, _set_mining_options
from .model import Model, PathLike, _c_string, _image_view, _invalid, _path_bytes, _reject_unknown, _uint

__all__ = [
    "BOX_DTYPE", "CLUSTERED_DTYPE", "Clustering", "ImageCandidates", "LabelReport", "MiningOptions", "box_features",
    "cluster", "default_options", "image_candidates", "list_set", "read_pixels", "top_candidates", "write_report",
]

#: A box, laid out as ``dm_box``: columns ``x .. x+size``, rows ``y .. y+size`` of the image as mined,
#: and its mean typicality.
BOX_DTYPE = np.dtype([("x", np.uint32), ("y", np.uint32), ("size", np.uint32), ("score", np.float32)])
assert BOX_DTYPE.itemsize == ctypes.sizeof(_lib.CBox), "BOX_DTYPE must mirror dm_box"

#: A kept box in its cluster, laid out as ``dm_clustered_patch``: the index of the box in the arrays
#: given to :func:`cluster`, its cluster's rank, its rank in the cluster (0: closest to the centroid) and
#: its distance to the centroid.
CLUSTERED_DTYPE = np.dtype([("candidate", np.uint32), ("cluster", np.uint32), ("rank_in_cluster", np.uint32),
                            ("distance", np.float32)])
assert CLUSTERED_DTYPE.itemsize == ctypes.sizeof(_lib.CClusteredPatch), "CLUSTERED_DTYPE must mirror dm_clustered_patch"

#: The most values of a reduced typicality map (64 × 64), as include/diffmine.h's DM_MINING_MAP_MAX.
_MAP_MAX = 64 * 64



def list_set(data: PathLike) -> List[Tuple[str, List[str]]]:
    """The images of the labelled set at ``data`` (a folder with a subfolder of images per label, or a
    CSV of ``path,label`` rows) as :class:`diffmine.Miner` and ``diffmine mine`` list them: (the name
    results and the report use, which is the file's path; its labels), in the order mining reads them.
    Only listed: an unreadable image is found by :func:`image_candidates`'s :func:`read_pixels`."""
    lib = _lib.lib()
    c_data = _path_bytes(data, "data")
    needed = ctypes.c_size_t()
    check(lib.dm_mining_list_set(c_data, None, 0, ctypes.byref(needed)))
    buffer = ctypes.create_string_buffer(needed.value)
    check(lib.dm_mining_list_set(c_data, buffer, needed.value, ctypes.byref(needed)))
    return [(item["path"], item["labels"]) for item in json.loads(buffer.value.decode())]


def default_options() -> _lib.CMinerOptions:
    """The library's defaults (``dm_miner_options_default``), its default label prompt included."""
    c_options = _lib.CMinerOptions()
    check(_lib.lib().dm_miner_options_default(ctypes.byref(c_options)))
    return c_options


class MiningOptions:
    """How to mine, as :class:`diffmine.Miner` takes it: ``prompt_template`` (the label prompt with
    ``{label}``), ``null_prompt``, ``cache_dir`` (typicality maps and DIFT features cached, keyed by the
    pixels; None caches nothing) and the keyword options ``samples`` (100), ``batch`` (10), ``seed`` (42),
    ``resize`` (None), ``patch`` (64), ``per_image`` (5), ``top`` (1000), ``ensemble`` (8), ``clusters``
    (32), ``restarts`` (10), ``t_range`` ((0.1, 0.7)), ``latent`` ("sample"), ``antithetic`` and
    ``stratified`` (False). Plain values only, so it pickles; :meth:`c_options` checks them."""

    def __init__(self, prompt_template: str, null_prompt: str = "", *, cache_dir: Optional[PathLike] = None,
                 **options: Any) -> None:
        _reject_unknown(options, (*_OPTIONS, *_SAMPLING), also=["cache_dir"])
        self.prompt_template = prompt_template
        self.null_prompt = null_prompt
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.options = dict(options)
        self.c_options()  # bad values fail here, not on a worker

    def __repr__(self) -> str:
        return (f"MiningOptions({self.prompt_template!r}, {self.null_prompt!r}, cache_dir={self.cache_dir!r}, "
                + ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items())) + ")")

    def c_options(self) -> _lib.CMinerOptions:
        """The ``dm_miner_options`` these stand for (its strings referenced by the struct itself)."""
        c_options = default_options()
        c_options.prompt_template = _c_string(self.prompt_template, "prompt_template")
        c_options.null_prompt = _c_string(self.null_prompt, "null_prompt")
        c_options.cache_dir = _path_bytes(self.cache_dir, "cache_dir")
        _set_mining_options(c_options, self.options)
        return c_options


class ImageCandidates(NamedTuple):
    """One image's share of a label's mining: its best boxes (a :data:`BOX_DTYPE` array, best first), its
    typicality map reduced to at most 64 pixels a side (float32, for the report's heat map), and its
    size as mined (after any resize)."""

    boxes: np.ndarray
    map: np.ndarray
    height: int
    width: int


class Clustering(NamedTuple):
    """A label's kept boxes in their clusters: ``patches`` (a :data:`CLUSTERED_DTYPE` array in cluster
    rank order, then rank in cluster) and ``clusters`` (``(first, members, median_typicality)``, rank
    order; cluster i's members are ``patches[first : first + members]``)."""

    patches: np.ndarray
    clusters: List[Tuple[int, int, float]]


def read_pixels(path: PathLike) -> np.ndarray:
    """An image file's pixels as mining reads them (PNG, JPEG, BMP or DICOM by content; H×W×C float32).
    Raises :class:`diffmine.FileError` or :class:`diffmine.InvalidData` for an unreadable image, which
    mining skips and names in the report."""
    return read_image(path).pixels


def _pixels(image: Union[PathLike, np.ndarray]) -> np.ndarray:
    return image if isinstance(image, np.ndarray) else read_pixels(image)


def image_candidates(model: Model, image: Union[PathLike, np.ndarray], label: str,
                     options: MiningOptions) -> ImageCandidates:
    """The typicality map of ``image`` (a path, or pixels as :func:`read_pixels` or ``Miner.add`` take
    them) under ``label``'s prompt and its best boxes, as the miner computes them."""
    view, _keep = _image_view(_pixels(image))
    boxes = np.zeros(options.c_options().per_image, dtype=BOX_DTYPE)
    count = ctypes.c_size_t()
    reduced = np.zeros(_MAP_MAX, dtype=np.float32)
    info = _lib.CMinedImageInfo(struct_size=ctypes.sizeof(_lib.CMinedImageInfo))
    check(_lib.lib().dm_mining_image(
        model._h(), ctypes.byref(options.c_options()), ctypes.byref(view), _c_string(label, "label"),
        boxes.ctypes.data_as(ctypes.POINTER(_lib.CBox)), boxes.size, ctypes.byref(count),
        reduced.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), reduced.size, ctypes.byref(info)))
    heat = reduced[: info.map_height * info.map_width].reshape(info.map_height, info.map_width).copy()
    return ImageCandidates(boxes[: count.value].copy(), heat, info.height, info.width)


def _boxes(boxes: np.ndarray) -> np.ndarray:
    """``boxes`` as a contiguous :data:`BOX_DTYPE` array (fields taken by name from any structured array)."""
    boxes = np.asarray(boxes)
    if boxes.dtype.names is None or not set(BOX_DTYPE.names) <= set(boxes.dtype.names):
        raise _invalid(f"boxes must be a structured array with fields {BOX_DTYPE.names}, got {boxes.dtype}")
    out = np.empty(boxes.shape[0], dtype=BOX_DTYPE)
    for name in BOX_DTYPE.names:
        out[name] = boxes[name]
    return out


def _candidates(images: Sequence[str], boxes: np.ndarray) -> Tuple[ctypes.Array, List[bytes]]:
    """``dm_candidate`` array of the boxes and their images' names (the names' bytes, which the array
    points into, returned to be kept alive)."""
    boxes = _boxes(boxes)
    if len(images) != len(boxes):
        raise _invalid(f"{len(images)} image names for {len(boxes)} boxes")
    names = [_c_string(os.fspath(i), "image") for i in images]
    array = (_lib.CCandidate * len(boxes))()
    for c, name, b in zip(array, names, boxes):
        c.image, c.x, c.y, c.size, c.typicality = name, int(b["x"]), int(b["y"]), int(b["size"]), float(b["score"])
    return array, names


def top_candidates(images: Sequence[str], boxes: np.ndarray, top: int) -> np.ndarray:
    """The ``top`` best of a label's candidate boxes (``boxes[i]``, a :data:`BOX_DTYPE` array, found in
    the image named ``images[i]``): their indices, best first (ties: image name, row, column). The best
    of several blocks' best is the best of all, in any order."""
    array, _names = _candidates(images, boxes)
    out = np.zeros(len(array), dtype=np.uintp)
    count = ctypes.c_size_t()
    check(_lib.lib().dm_mining_top(array, len(array), _uint(top, "top"), out.ctypes.data_as(ctypes.POINTER(ctypes.c_size_t)),
                                   out.size, ctypes.byref(count)))
    return out[: count.value].astype(np.int64)


def box_features(model: Model, image: Union[PathLike, np.ndarray], label: str, boxes: np.ndarray,
                 options: MiningOptions) -> np.ndarray:
    """The DIFT features of ``boxes`` (a :data:`BOX_DTYPE` array) of ``image`` under ``label``'s prompt:
    a float32 row per box, as the miner computes them."""
    view, _keep = _image_view(_pixels(image))
    boxes = _boxes(boxes)
    lib = _lib.lib()
    dim = ctypes.c_size_t()
    check(lib.dm_mining_feature_dim(model._h(), ctypes.byref(dim)))
    out = np.zeros((len(boxes), dim.value), dtype=np.float32)
    check(lib.dm_mining_box_features(
        model._h(), ctypes.byref(options.c_options()), ctypes.byref(view), _c_string(label, "label"),
        boxes.ctypes.data_as(ctypes.POINTER(_lib.CBox)), len(boxes), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        out.size))
    return out


def cluster(images: Sequence[str], boxes: np.ndarray, features: np.ndarray, options: MiningOptions) -> Clustering:
    """k-means of a label's kept boxes (``boxes[i]`` of image ``images[i]``, feature ``features[i]``; any
    order) with ``options``' clusters and restarts, clusters ranked by their members' median typicality."""
    array, _names = _candidates(images, boxes)
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != len(array):
        raise _invalid(f"features must be {len(array)} rows, got shape {features.shape}")
    n = len(array)
    patches = np.zeros(n, dtype=CLUSTERED_DTYPE)
    clusters = (_lib.CMinedCluster * n)()
    patch_count, cluster_count = ctypes.c_size_t(), ctypes.c_size_t()
    check(_lib.lib().dm_mining_cluster(
        array, n, features.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), features.size, features.shape[1],
        ctypes.byref(options.c_options()), patches.ctypes.data_as(ctypes.POINTER(_lib.CClusteredPatch)), n,
        ctypes.byref(patch_count), clusters, n, ctypes.byref(cluster_count)))
    ranked = [(c.first, c.members, float(c.median_typicality)) for c in clusters[: cluster_count.value]]
    return Clustering(patches[: patch_count.value], ranked)


class LabelReport(NamedTuple):
    """A label's results for :func:`write_report`: its kept boxes (``images``, ``boxes`` as given to
    :func:`cluster`), their :class:`Clustering`, the reduced maps of its images holding kept boxes (by
    name, from :func:`image_candidates`) and its skipped images (name → reason)."""

    label: str
    images: Sequence[str]
    boxes: np.ndarray
    clustering: Clustering
    maps: Mapping[str, np.ndarray]
    skipped: Mapping[str, str] = {}


def write_report(out: PathLike, labels: Sequence[LabelReport], options: MiningOptions,
                 pixels: Optional[Mapping[str, np.ndarray]] = None) -> None:
    """Writes the report ``diffmine mine`` writes into the folder ``out``, labels in the order given.
    An image named by a file's path is read from the file; ``pixels`` gives those that are not files."""
    lib = _lib.lib()
    handle = ctypes.c_void_p()
    check(lib.dm_report_new(ctypes.byref(options.c_options()), ctypes.byref(handle)))
    try:
        for entry in labels:
            _add_label(lib, handle, entry)
        for name, image in (pixels or {}).items():
            view, _keep = _image_view(image)
            check(lib.dm_report_add_image(handle, _c_string(name, "image"), ctypes.byref(view)))
        check(lib.dm_report_write(handle, _path_bytes(out, "out")))
    finally:
        check(lib.dm_report_free(handle))


def _add_label(lib: Any, handle: ctypes.c_void_p, entry: LabelReport) -> None:
    label = _c_string(entry.label, "label")
    array, _names = _candidates(entry.images, entry.boxes)
    patches = np.ascontiguousarray(entry.clustering.patches, dtype=CLUSTERED_DTYPE)
    clusters = (_lib.CMinedCluster * len(entry.clustering.clusters))(*entry.clustering.clusters)
    check(lib.dm_report_add_label(handle, label, array, len(array), patches.ctypes.data_as(ctypes.POINTER(_lib.CClusteredPatch)),
                                  len(patches), clusters, len(clusters)))
    for name, heat in entry.maps.items():
        heat = np.ascontiguousarray(heat, dtype=np.float32)
        if heat.ndim != 2:
            raise _invalid(f"the map of {name} must be 2-D, got shape {heat.shape}")
        check(lib.dm_report_add_map(handle, label, _c_string(os.fspath(name), "image"),
                                    heat.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), heat.shape[0], heat.shape[1]))
    for name, reason in entry.skipped.items():
        check(lib.dm_report_add_skipped(handle, label, _c_string(os.fspath(name), "image"), _c_string(reason, "reason")))
