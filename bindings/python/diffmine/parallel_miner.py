"""Mining co-typical elements (``dm_parallel_miner``, the paper's Section 5.1): each source image is
translated to every other label, boxes are kept where every version is typical of its own label (the
median over the versions), the kept boxes are clustered by their versions' DIFT features, and the report
shows each cluster's members in every version."""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _lib
from ._handle import Handle
from ._lib import check
from ._progress import Progress
from .miner import Cluster, _add, _set_counts, _text
from .model import _LATENTS, Model, PathLike, _c_string, _invalid, _path_bytes, _real, _reject_unknown, _uint

__all__ = ["ELEMENT_DTYPE", "ParallelMiner"]

#: One kept element, laid out as ``dm_cotypical_element`` so the library writes the array directly: the
#: source image's index (see :attr:`ParallelMiner.images`; also its parallel set's), the source's label
#: (an index into :attr:`ParallelMiner.labels`), the box ``x, y, size`` (the same in every version),
#: its co-typicality, its cluster's rank, its rank in the cluster (0: closest to the centroid) and its
#: distance to the centroid.
ELEMENT_DTYPE = np.dtype([
    ("image", np.uint32), ("source_label", np.uint32), ("x", np.uint32), ("y", np.uint32), ("size", np.uint32),
    ("cotypicality", np.float32), ("cluster", np.uint32), ("rank_in_cluster", np.uint32), ("distance", np.float32),
])
assert ELEMENT_DTYPE.itemsize == ctypes.sizeof(_lib.CCotypicalElement), "ELEMENT_DTYPE must mirror dm_cotypical_element"

# Keyword options and the dm_parallel_miner_options field each sets; their defaults are the library's.
_OPTIONS = {
    "samples": "samples", "batch": "batch", "seed": "seed", "resize": "resize_short_side", "patch": "patch_size",
    "per_set": "per_set", "top": "top", "ensemble": "dift_ensemble", "clusters": "clusters", "restarts": "restarts",
    "projection_dims": "projection_dims", "projection_neighbors": "projection_neighbors",
}
# dm_parallel_miner_options.projection by name.
_PROJECTIONS = {"umap": 0, "pca": 1}
# Keyword options of ParallelMiner.write_report and the dm_parallel_report_options field each sets.
_REPORT_OPTIONS = {"strips": "strips", "per_strip": "per_strip"}
# Keyword options of the translation (dm_translate_options).
_TRANSLATE = {"steps", "inversion_steps", "guidance", "resnet_injection", "attention_injection", "latent", "translate_seed"}


def _translate_options(options: Dict[str, Any]) -> _lib.CTranslateOptions:
    """The translation's options; its null prompt stays NULL, so the library uses the miner's."""
    c_options = _lib.CTranslateOptions()
    check(_lib.lib().dm_translate_options_default(ctypes.byref(c_options)))
    for name, value in options.items():
        if name == "latent":
            if value not in _LATENTS:
                raise _invalid(f"unknown latent {value!r} (use \"mean\" or \"sample\")")
            c_options.latent = _LATENTS[value]
        elif name == "translate_seed":
            c_options.seed = _uint(value, name, 64)
        elif name in ("steps", "inversion_steps"):
            setattr(c_options, name, _uint(value, name))
        else:
            setattr(c_options, name, _real(value, name))
    return c_options


def _c_labels(labels: Sequence[str]) -> ctypes.Array:
    if isinstance(labels, (str, bytes)):
        raise _invalid("`labels` must be a sequence of label names, not one string")
    return (ctypes.c_char_p * len(labels))(*[_c_string(label, f"labels[{i}]") for i, label in enumerate(labels)])


class ParallelMiner(Handle):
    """A co-typicality mining job on ``model`` over ``labels`` (at least 2; each parallel set holds one
    version per label, in this order). ``prompt_template`` is the label prompt with ``{label}`` and
    ``null_prompt`` the null prompt (the captions the model was finetuned with; the translations use
    both too).

    Options (the library's defaults when left out): typicality ``samples`` (100), ``batch`` (10),
    ``seed`` (42); ``resize`` (shorter side in pixels; None keeps sizes); ``patch`` (64), ``per_set``
    (5 boxes per parallel set), ``top`` (10 000 overall); ``ensemble`` (8, DIFT); ``clusters`` (32),
    ``restarts`` (10); ``projection_dims`` (32), ``projection`` ("umap", the authors', or "pca") and
    ``projection_neighbors`` (UMAP's, 15). The translation, as :meth:`Model.translate`: ``steps``
    (50), ``inversion_steps`` (999), ``guidance`` (7.5), ``resnet_injection`` (0.8),
    ``attention_injection`` (0.5), ``latent`` ("mean") and ``translate_seed`` (42).

    :meth:`run` saves every version of every parallel set as ``<set>_<label>.png`` (set: 5 digits) in
    ``versions_dir``, which stays the caller's; None (the default) uses a private temporary folder that
    :meth:`close` removes.

    Add source images with :meth:`add`, mine with :meth:`run` (once), then read :attr:`elements` and
    :attr:`clusters` and write the report with :meth:`write_report`. Release with :meth:`close` or a
    ``with`` block.
    """

    _free = "dm_parallel_miner_free"
    _kind = "parallel miner"

    def __init__(self, model: Model, labels: Sequence[str], prompt_template: str, null_prompt: str = "", *,
                 versions_dir: Optional[PathLike] = None, **options: Any) -> None:
        super().__init__()
        self._elements: Optional[np.ndarray] = None
        self._clusters: Optional[List[Cluster]] = None
        projection = options.pop("projection", "umap")
        if projection not in _PROJECTIONS:
            raise _invalid(f"unknown projection {projection!r} (use \"umap\" or \"pca\")")
        _reject_unknown(options, set(_OPTIONS) | _TRANSLATE, also=["projection", "versions_dir"])
        c_labels = _c_labels(labels)
        lib = _lib.lib()
        c_options = _lib.CParallelMinerOptions()
        check(lib.dm_parallel_miner_options_default(ctypes.byref(c_options)))
        # The bytes objects and the translation options stay referenced by c_options for the whole
        # dm_parallel_miner_create call.
        c_options.prompt_template = _c_string(prompt_template, "prompt_template")
        c_options.null_prompt = _c_string(null_prompt, "null_prompt")
        c_options.translate = ctypes.pointer(_translate_options({k: v for k, v in options.items() if k in _TRANSLATE}))
        _set_counts(c_options, {k: v for k, v in options.items() if k in _OPTIONS}, _OPTIONS)
        c_options.projection = _PROJECTIONS[projection]
        c_options.versions_dir = _path_bytes(versions_dir, "versions_dir")
        handle = ctypes.c_void_p()
        check(lib.dm_parallel_miner_create(model._h(), c_labels, len(c_labels), ctypes.byref(c_options), ctypes.byref(handle)))
        self._handle = handle.value
        self.labels: List[str] = list(labels)
        """The labels, in the order :data:`ELEMENT_DTYPE` ``["source_label"]`` indexes."""

    # --- operations -----------------------------------------------------------------------------

    def add(self, image: Union[PathLike, np.ndarray], label: str, name: Optional[str] = None) -> None:
        """Adds a source image of ``label`` (one of :attr:`labels`): a file path (PNG, JPEG or BMP, read
        during :meth:`run`) or an H×W or H×W×C array (uint8, uint16 or float32 in [0, 1]; copied now),
        which ``name`` stands for in the results (default ``image-<index>``)."""
        lib = _lib.lib()
        _add(lib.dm_parallel_miner_add_image, lib.dm_parallel_miner_add_file, self._h(), image, label, name)

    def run(self, progress: Optional[Callable[[int, int], Any]] = None) -> None:
        """Translates each source to every other label and mines the parallel sets. ``progress(done,
        total)`` is called after each UNet call of a translation and each version's typicality and
        DIFT (total: sources × (inversion steps + steps + 2 × labels)); returning False cancels
        (:class:`diffmine.Cancelled`), after which the miner may run again. A second run after a
        successful one is an error."""
        callback = Progress(progress)
        callback.finish(_lib.lib().dm_parallel_miner_run(self._h(), callback.function, None))

    @property
    def images(self) -> List[str]:
        """The source images' paths or names, in the order :data:`ELEMENT_DTYPE` ``["image"]`` indexes."""
        lib, handle = _lib.lib(), self._h()
        count = ctypes.c_size_t()
        check(lib.dm_parallel_miner_image_count(handle, ctypes.byref(count)))
        return [_text(lib.dm_parallel_miner_image_name, handle, i) for i in range(count.value)]

    @property
    def elements(self) -> np.ndarray:
        """The kept elements, an :data:`ELEMENT_DTYPE` array in cluster rank order, then rank in
        cluster. Needs a successful :meth:`run`."""
        if self._elements is None:
            lib, handle = _lib.lib(), self._h()
            count = ctypes.c_size_t()
            check(lib.dm_parallel_miner_element_count(handle, ctypes.byref(count)))
            elements = np.zeros(count.value, dtype=ELEMENT_DTYPE)
            out = elements.ctypes.data_as(ctypes.POINTER(_lib.CCotypicalElement))
            check(lib.dm_parallel_miner_elements(handle, out, elements.size, ctypes.byref(count)))
            self._elements = elements
        return self._elements

    @property
    def clusters(self) -> List[Cluster]:
        """The clusters, highest median co-typicality first (held in ``median_typicality``); a cluster's
        members are ``elements[first : first + members]``. Needs a successful :meth:`run`."""
        if self._clusters is None:
            lib, handle = _lib.lib(), self._h()
            count = ctypes.c_size_t()
            check(lib.dm_parallel_miner_cluster_count(handle, ctypes.byref(count)))
            clusters = (_lib.CMinedCluster * count.value)()
            check(lib.dm_parallel_miner_clusters(handle, clusters, count.value, ctypes.byref(count)))
            self._clusters = [Cluster(c.first, c.members, float(c.median_typicality)) for c in clusters]
        return self._clusters

    def write_report(self, out: PathLike, **options: Any) -> None:
        """Writes the report into the folder ``out``: ``elements.csv`` (every element with its source image
        and label), a strip figure per cluster (``strip_NN.png``, NN its rank: a row per member, each row
        the element's box in every version side by side in label order, the source's own framed in red)
        and ``index.html``. Options (the library's defaults when left out): ``strips`` (32 clusters
        shown, the best) and ``per_strip`` (8 rows each). Needs a successful :meth:`run`."""
        _reject_unknown(options, _REPORT_OPTIONS)
        lib = _lib.lib()
        c_options = _lib.CParallelReportOptions()
        check(lib.dm_parallel_report_options_default(ctypes.byref(c_options)))
        _set_counts(c_options, options, _REPORT_OPTIONS)
        check(lib.dm_parallel_miner_write_report(self._h(), _path_bytes(out, "out"), ctypes.byref(c_options)))
