"""Typical patches of a typicality map (``dm_patches_select``)."""

from __future__ import annotations

import ctypes
from typing import List, NamedTuple

import numpy as np

from . import _lib
from ._lib import check
from .model import _invalid, _ptr, _uint

__all__ = ["Box", "select_patches"]


class Box(NamedTuple):
    """A square box of an image: columns ``x .. x+size``, rows ``y .. y+size``, and its mean typicality."""

    x: int
    y: int
    size: int
    score: float


def select_patches(map: np.ndarray, patch: int = 64, max_boxes: int = 5) -> List[Box]:  # noqa: A002 - the C API's name
    """The most typical ``patch`` × ``patch`` boxes of an H×W typicality ``map``, best first: every
    window (stride 1) is scored by its mean, then up to ``max_boxes`` are taken greedily, each dropping
    the windows that intersect or touch it (ties: lowest row, then column). Returns a list of
    :class:`Box` ``(x, y, size, score)`` tuples."""
    values = np.asarray(map)
    if values.ndim != 2:
        raise _invalid(f"map must be H×W, got shape {values.shape}")
    if values.dtype.kind not in "fiub":
        raise _invalid(f"map must be numeric, got {values.dtype}")
    values = np.ascontiguousarray(values, dtype=np.float32)
    height, width = values.shape
    k = _uint(patch, "patch")
    count_max = _uint(max_boxes, "max_boxes")
    boxes = (_lib.CBox * max(count_max, 1))()
    count = ctypes.c_size_t()
    check(_lib.lib().dm_patches_select(
        _ptr(values, ctypes.c_float), values.size, _uint(height, "map height"), _uint(width, "map width"), k, count_max,
        boxes, count_max, ctypes.byref(count)))
    return [Box(b.x, b.y, b.size, float(b.score)) for b in boxes[: count.value]]
