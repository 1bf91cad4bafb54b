"""Mining typical visual elements of a labelled image set (``dm_miner``): per label, the most typical
patches clustered by their DIFT features, clusters ranked by the median typicality of their members."""

from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Union

import numpy as np

from . import _lib
from ._handle import Handle
from ._lib import check
from ._progress import Progress
from .model import Model, PathLike, _c_string, _image_view, _invalid, _path_bytes, _reject_unknown, _set_sampling, _uint

__all__ = ["Cluster", "LabelResult", "Miner", "PATCH_DTYPE"]

#: One kept box, laid out as ``dm_mined_patch`` so the library writes the array directly: the image's
#: index (see :attr:`Miner.images`), its box ``x, y, size`` (after any resize), its mean typicality,
#: its cluster's rank, its rank in the cluster (0: closest to the centroid) and its distance to the
#: centroid.
PATCH_DTYPE = np.dtype([
    ("image", np.uint32), ("x", np.uint32), ("y", np.uint32), ("size", np.uint32), ("typicality", np.float32),
    ("cluster", np.uint32), ("rank_in_cluster", np.uint32), ("distance", np.float32),
])
assert PATCH_DTYPE.itemsize == ctypes.sizeof(_lib.CMinedPatch), "PATCH_DTYPE must mirror dm_mined_patch"

# Keyword options of Miner and the dm_miner_options field each sets; their defaults are the library's.
_OPTIONS = {
    "samples": "samples", "batch": "batch", "seed": "seed", "resize": "resize_short_side", "patch": "patch_size",
    "per_image": "per_image", "top": "top", "ensemble": "dift_ensemble", "clusters": "clusters", "restarts": "restarts",
}
# The keyword options of how the typicality samples are drawn, as Model.typicality takes them.
_SAMPLING = ("t_range", "latent", "antithetic", "stratified")


class Cluster(NamedTuple):
    """A cluster of a label: its members are ``patches[first : first + members]``."""

    first: int
    members: int
    median_typicality: float


class LabelResult(NamedTuple):
    """A label's results: its kept boxes (a :data:`PATCH_DTYPE` array in cluster rank order, then rank in
    cluster) and its clusters, highest median typicality first."""

    label: str
    patches: np.ndarray
    clusters: List[Cluster]


class Miner(Handle):
    """A mining job on ``model``. ``prompt_template`` is the label prompt with ``{label}`` and
    ``null_prompt`` the null prompt (the captions the model was finetuned with). Options (the library's
    defaults when left out): ``samples`` (100), ``batch`` (10), ``seed`` (42), ``resize`` (shorter side in
    pixels; None keeps sizes), ``patch`` (64), ``per_image`` (5), ``top`` (1000), ``ensemble`` (8, DIFT),
    ``clusters`` (32), ``restarts`` (10), ``cache_dir`` (typicality maps and DIFT features cached across
    runs; None caches nothing), and how the samples are drawn as :meth:`Model.typicality` takes it:
    ``t_range`` ((0.1, 0.7)), ``latent`` ("sample"), ``antithetic`` and ``stratified`` (False).

    Add images with :meth:`add`, mine with :meth:`run` (once), then read :attr:`results` and write the
    report with :meth:`write_report`. Release with :meth:`close` or a ``with`` block.
    """

    _free = "dm_miner_free"
    _kind = "miner"

    def __init__(self, model: Model, prompt_template: str, null_prompt: str = "", *, cache_dir: Optional[PathLike] = None,
                 **options: Any) -> None:
        super().__init__()
        self._results: Optional[List[LabelResult]] = None
        _reject_unknown(options, (*_OPTIONS, *_SAMPLING), also=["cache_dir"])
        lib = _lib.lib()
        c_options = _lib.CMinerOptions()
        check(lib.dm_miner_options_default(ctypes.byref(c_options)))
        # The bytes objects stay referenced by c_options for the whole dm_miner_create call.
        c_options.prompt_template = _c_string(prompt_template, "prompt_template")
        c_options.null_prompt = _c_string(null_prompt, "null_prompt")
        c_options.cache_dir = _path_bytes(cache_dir, "cache_dir")
        _set_mining_options(c_options, options)
        handle = ctypes.c_void_p()
        check(lib.dm_miner_create(model._h(), ctypes.byref(c_options), ctypes.byref(handle)))
        self._handle = handle.value

    # --- operations -----------------------------------------------------------------------------

    def add(self, image: Union[PathLike, np.ndarray], label: str, name: Optional[str] = None) -> None:
        """Adds an image under ``label``: a file path (PNG, JPEG or BMP, read during :meth:`run`) or an
        H×W or H×W×C array (uint8, uint16 or float32 in [0, 1]; copied now), which ``name`` stands for
        in the results and the report (default ``image-<index>``). Adding the same image again with
        another label gives it both labels."""
        lib = _lib.lib()
        _add(lib.dm_miner_add_image, lib.dm_miner_add_file, self._h(), image, label, name)

    def run(self, progress: Optional[Callable[[int, int], Any]] = None) -> None:
        """Mines every label. ``progress(done, total)`` is called after each image's typicality and each
        image's DIFT; returning False cancels (:class:`diffmine.Cancelled`), after which the miner
        may run again. A second run after a successful one is an error."""
        callback = Progress(progress)
        callback.finish(_lib.lib().dm_miner_run(self._h(), callback.function, None))

    @property
    def images(self) -> List[str]:
        """The images' paths or names, in the order :attr:`LabelResult.patches` ``["image"]`` indexes."""
        lib, handle = _lib.lib(), self._h()
        count = ctypes.c_size_t()
        check(lib.dm_miner_image_count(handle, ctypes.byref(count)))
        return [_text(lib.dm_miner_image_name, handle, i) for i in range(count.value)]

    @property
    def results(self) -> List[LabelResult]:
        """Per label (sorted by name), its patches and clusters. Needs a successful :meth:`run`."""
        if self._results is None:
            lib, handle = _lib.lib(), self._h()
            count = ctypes.c_size_t()
            check(lib.dm_miner_label_count(handle, ctypes.byref(count)))
            self._results = [_label_result(handle, label) for label in range(count.value)]
        return self._results

    def write_report(self, out: PathLike) -> None:
        """Writes the report into the folder ``out``: ``patches.csv``, per label a cluster grid and strips
        of patch crops, and ``index.html``."""
        check(_lib.lib().dm_miner_write_report(self._h(), _path_bytes(out, "out")))


def _set_mining_options(c_options: _lib.CMinerOptions, options: Dict[str, Any]) -> None:
    """Sets a ``dm_miner_options``'s keyword options: the counts and how the samples are drawn."""
    _set_counts(c_options, {k: v for k, v in options.items() if k in _OPTIONS}, _OPTIONS)
    _set_sampling(c_options, **{k: v for k, v in options.items() if k in _SAMPLING})


def _set_counts(c_options: ctypes.Structure, options: Dict[str, Any], fields: Dict[str, str]) -> None:
    """Sets each keyword option's field (``fields`` maps the keyword to it) as an unsigned integer, 64
    bits for ``seed``; ``resize=None`` is the C API's 0, "keep the size"."""
    for name, value in options.items():
        if name == "resize" and value is None:
            value = 0
        setattr(c_options, fields[name], _uint(value, name, 64 if name == "seed" else 32))


def _add(add_image: Any, add_file: Any, handle: int, image: Union[PathLike, np.ndarray], label: str,
         name: Optional[str]) -> None:
    """Hands an image to a miner's ``add_image`` (an array, copied by the library) or ``add_file`` (a path)."""
    c_label = _c_string(label, "label")
    if isinstance(image, np.ndarray):
        view, _pixels = _image_view(image)  # `_pixels` owns the memory the view points into
        c_name = None if name is None else _c_string(name, "name")
        check(add_image(handle, ctypes.byref(view), c_name, c_label))
    elif isinstance(image, (str, bytes, os.PathLike)):
        if name is not None:
            raise _invalid("`name` is for arrays; a file goes by its path")
        check(add_file(handle, _path_bytes(image, "image"), c_label))
    else:
        raise _invalid(f"image must be a path or a numpy array, got {type(image).__name__}")


def _text(query: Any, handle: int, index: int) -> str:
    """A string accessor's result: first its size, then the text."""
    needed = ctypes.c_size_t()
    check(query(handle, index, None, 0, ctypes.byref(needed)))
    buffer = ctypes.create_string_buffer(needed.value)
    check(query(handle, index, buffer, needed.value, ctypes.byref(needed)))
    return buffer.value.decode()


def _label_result(handle: int, label: int) -> LabelResult:
    lib = _lib.lib()
    count = ctypes.c_size_t()
    check(lib.dm_miner_patch_count(handle, label, ctypes.byref(count)))
    patches = np.zeros(count.value, dtype=PATCH_DTYPE)
    check(lib.dm_miner_patches(handle, label, patches.ctypes.data_as(ctypes.POINTER(_lib.CMinedPatch)), patches.size,
                               ctypes.byref(count)))
    check(lib.dm_miner_cluster_count(handle, label, ctypes.byref(count)))
    clusters = (_lib.CMinedCluster * count.value)()
    check(lib.dm_miner_clusters(handle, label, clusters, count.value, ctypes.byref(count)))
    return LabelResult(
        label=_text(lib.dm_miner_label_name, handle, label),
        patches=patches,
        clusters=[Cluster(c.first, c.members, float(c.median_typicality)) for c in clusters],
    )
