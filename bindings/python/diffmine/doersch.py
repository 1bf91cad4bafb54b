"""The discriminative mining baseline (Doersch et al., "What makes Paris look like Paris?", as the
ECCV 2024 authors reimplemented it) through ``dm_doersch_run``: HOG + colour detectors of each label's
windows against the other labels, written as the same report as :meth:`Miner.write_report`."""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Optional

from . import _lib
from ._progress import Progress
from .model import PathLike, _override, _path_bytes, _uint


def doersch(data: PathLike, out: PathLike, resize: Optional[int] = None, candidates: Optional[int] = None,
            detectors: Optional[int] = None, rounds: Optional[int] = None, negatives: Optional[int] = None,
            negative_pool: Optional[int] = None, final_neighbours: Optional[int] = None, keep: Optional[int] = None,
            bfloat16: Optional[bool] = None, seed: Optional[int] = None,
            progress: Optional[Callable[[int, int], Any]] = None) -> None:
    """Mines every label of the labelled set ``data`` (a folder with a subfolder of images per label, or
    a CSV of ``path,label`` rows; two labels at least) discriminatively and writes the report into
    ``out`` (``index.html``, ``patches.csv`` with each kept detector's detections, grids and crops).
    Options left None keep the library's defaults (the authors' settings). ``progress(done, total)``
    after each image searched and each detector trained; returning False cancels."""
    options = _lib.CDoerschOptions()
    options.struct_size = ctypes.sizeof(options)
    _lib.check(_lib.lib().dm_doersch_options_default(ctypes.byref(options)))
    _override(options, candidates=candidates, detectors=detectors, rounds=rounds, negatives=negatives,
              negative_pool=negative_pool, final_neighbours=final_neighbours, keep=keep, seed=seed)
    if resize is not None:
        options.resize_short_side = _uint(resize, "resize")
    if bfloat16 is not None:
        options.bfloat16 = int(bool(bfloat16))
    reporter = Progress(progress)
    status = _lib.lib().dm_doersch_run(_path_bytes(data, "data"), _path_bytes(out, "out"), ctypes.byref(options),
                                       reporter.function, None)
    reporter.finish(status)
