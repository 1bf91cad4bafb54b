"""Medical images: DICOM/PNG/JPEG ingestion (``dm_image_*``), typicality maps written back as DICOM
(``dm_map_write_dicom_object``) and the ChestX-ray8 AUC-PR of a map against boxes (``dm_cxr8_auc_pr``)."""

from __future__ import annotations

import ctypes
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._lib import check
from ._progress import Progress
from .model import Model, PathLike, _c_string, _invalid, _override, _path_bytes, _ptr, _real, _uint

__all__ = ["Image", "read_image", "new_uid", "write_map_dicom", "auc_pr", "cxr8_evaluate"]

_WINDOWS = {"file": 0, "min-max": 1, "explicit": 2}
_VOI_FUNCTIONS = {"linear": 0, "linear-exact": 1, "sigmoid": 2}
_MAP_KINDS = {"overlay": 0, "raw": 1, "seg": 2, "parametric": 3}
_UID_BUFFER_SIZE = 65


@dataclass(frozen=True)
class Image:
    """A decoded image: ``pixels`` H×W×C float32 in [0, 1] (C = 1 grey, 3 RGB), ready for
    :meth:`Model.typicality`, and for DICOM the attributes a caller needs to file results next to it
    (None when the file lacks them; all None for PNG/JPEG)."""

    pixels: np.ndarray
    is_dicom: bool
    frames: int
    pixel_spacing: Optional[Tuple[float, float]]
    patient_id: Optional[str]
    patient_name: Optional[str]
    study_instance_uid: Optional[str]
    series_instance_uid: Optional[str]
    sop_instance_uid: Optional[str]
    sop_class_uid: Optional[str]
    modality: Optional[str]
    view_position: Optional[str]
    transfer_syntax_uid: Optional[str]


def read_image(source: Union[PathLike, bytes], frame: int = 0, window: Optional[Tuple[float, float]] = None,
               voi_function: str = "linear", min_max: bool = False) -> Image:
    """Reads a DICOM, PNG or JPEG file (a path, or the file's bytes), told apart by content. DICOM:
    frame ``frame``; MONOCHROME1 inverted; grey levels through the file's VOI LUT or window (else the
    frame's min–max), or ``window=(center, width)`` in modality units with ``voi_function``
    ("linear", "linear-exact", "sigmoid"), or the frame's min–max with ``min_max=True``."""
    options = _image_options(frame, window, voi_function, min_max)
    handle = ctypes.c_void_p()
    lib = _lib.lib()
    if isinstance(source, (bytes, bytearray)):
        data = (ctypes.c_uint8 * len(source)).from_buffer_copy(source)
        check(lib.dm_image_open_buffer(data, len(source), ctypes.byref(options), ctypes.byref(handle)))
    else:
        check(lib.dm_image_open(_path_bytes(source, "source"), ctypes.byref(options), ctypes.byref(handle)))
    try:
        return _copy_image(handle)
    finally:
        check(lib.dm_image_free(handle))


def _image_options(frame: int, window: Optional[Tuple[float, float]], voi_function: str,
                   min_max: bool) -> _lib.CImageOptions:
    options = _lib.CImageOptions()
    check(_lib.lib().dm_image_options_default(ctypes.byref(options)))
    options.frame = _uint(frame, "frame")
    if window is not None and min_max:
        raise _invalid("give either window or min_max, not both")
    if voi_function not in _VOI_FUNCTIONS:
        raise _invalid(f"voi_function must be one of {sorted(_VOI_FUNCTIONS)}, not {voi_function!r}")
    if window is not None:
        center, width = window
        options.window = _WINDOWS["explicit"]
        options.window_center, options.window_width = _real(center, "window center"), _real(width, "window width")
        options.voi_function = _VOI_FUNCTIONS[voi_function]
    elif min_max:
        options.window = _WINDOWS["min-max"]
    return options


def _copy_image(handle: ctypes.c_void_p) -> Image:
    """The pixels (copied out of the library's buffer) and the metadata of an open ``dm_image``."""
    lib = _lib.lib()
    view = _lib.CImageView()
    check(lib.dm_image_get_view(handle, ctypes.byref(view)))
    info = _lib.CImageInfo()
    info.struct_size = ctypes.sizeof(info)
    check(lib.dm_image_get_info(handle, ctypes.byref(info)))
    floats = (ctypes.c_float * (view.data_len // 4)).from_address(view.data)
    rows = np.frombuffer(floats, dtype=np.float32).reshape(view.height, view.stride // 4)
    pixels = rows[:, : view.width * view.channels].reshape(view.height, view.width, view.channels).copy()

    def text(value: Optional[bytes]) -> Optional[str]:
        return value.decode("utf-8", errors="replace") if value is not None else None

    spacing = (info.pixel_spacing_row, info.pixel_spacing_column)
    return Image(
        pixels=pixels,
        is_dicom=bool(info.is_dicom),
        frames=info.frames,
        pixel_spacing=None if any(math.isnan(s) for s in spacing) else spacing,
        patient_id=text(info.patient_id),
        patient_name=text(info.patient_name),
        study_instance_uid=text(info.study_instance_uid),
        series_instance_uid=text(info.series_instance_uid),
        sop_instance_uid=text(info.sop_instance_uid),
        sop_class_uid=text(info.sop_class_uid),
        modality=text(info.modality),
        view_position=text(info.view_position),
        transfer_syntax_uid=text(info.transfer_syntax_uid),
    )


def new_uid() -> str:
    """A new globally unique DICOM UID (2.25 root), e.g. a series UID shared by several maps."""
    buffer = ctypes.create_string_buffer(_UID_BUFFER_SIZE)
    check(_lib.lib().dm_dicom_new_uid(buffer, _UID_BUFFER_SIZE))
    return buffer.value.decode("ascii")


def write_map_dicom(source: PathLike, map: np.ndarray, out: PathLike, kind: str = "overlay",  # noqa: A002
                    frame: int = 0, series_instance_uid: Optional[str] = None, label: Optional[str] = None,
                    prompt: Optional[str] = None, null_prompt: Optional[str] = None, samples: Optional[int] = None,
                    seed: Optional[int] = None, series_description: Optional[str] = None,
                    series_number: Optional[int] = None) -> str:
    """Writes an H×W ``map`` (e.g. the typicality map of frame ``frame`` of the DICOM file
    ``source``) to ``out`` as a new instance of the source's study, of the ``kind``:

    - "overlay": Secondary Capture, the map blended on the image (RGB);
    - "raw": Secondary Capture, 16-bit values whose Rescale Slope/Intercept give the map back;
    - "seg": a fractional Segmentation, the map min-max scaled to a probability on the source's
      pixel grid (what viewers overlay on the image);
    - "parametric": a Parametric Map of the map's exact float values.

    ``label`` names what the map is the typicality of (the segment label); ``prompt``,
    ``null_prompt``, ``samples`` and ``seed`` (those the map was computed with) are recorded in the
    object. None keeps the library's default. Returns the new SOP Instance UID."""
    values = np.ascontiguousarray(map, dtype=np.float32)
    if values.ndim != 2:
        raise _invalid(f"map must be H×W, got shape {values.shape}")
    if kind not in _MAP_KINDS:
        raise _invalid(f"kind must be one of {sorted(_MAP_KINDS)}, not {kind!r}")
    height, width = values.shape
    options = _lib.CDicomMapOptions()
    check(_lib.lib().dm_dicom_map_options_default(ctypes.byref(options)))
    options.kind = _MAP_KINDS[kind]
    _override(options, samples=samples, seed=seed, series_number=series_number)
    texts = {"label": label, "prompt": prompt, "null_prompt": null_prompt,
             "series_instance_uid": series_instance_uid, "series_description": series_description}
    for field, text in texts.items():
        if text is not None:
            setattr(options, field, _c_string(text, field))
    uid = ctypes.create_string_buffer(_UID_BUFFER_SIZE)
    check(_lib.lib().dm_map_write_dicom_object(
        _path_bytes(source, "source"), _uint(frame, "frame"), _ptr(values, ctypes.c_float), values.size,
        _uint(width, "map width"), _uint(height, "map height"), ctypes.byref(options), _path_bytes(out, "out"),
        uid, _UID_BUFFER_SIZE))
    return uid.value.decode("ascii")


def auc_pr(map: np.ndarray, boxes: Sequence[Sequence[float]]) -> Tuple[float, float]:  # noqa: A002
    """AUC-PR of an H×W ``map`` against one disease's ``boxes`` ((x, y, w, h) in map pixels): the
    positives are the pixels whose centre lies inside a box. Returns (average precision as
    scikit-learn computes it, the area under the authors' thresholded curve); both NaN when no pixel
    centre lies inside the boxes."""
    values = np.ascontiguousarray(map, dtype=np.float32)
    if values.ndim != 2:
        raise _invalid(f"map must be H×W, got shape {values.shape}")
    flat = np.ascontiguousarray(np.asarray(boxes, dtype=np.float64).reshape(-1))
    if flat.size % 4:
        raise _invalid("boxes must be (x, y, w, h) quadruples")
    height, width = values.shape
    ap, area = ctypes.c_double(), ctypes.c_double()
    check(_lib.lib().dm_cxr8_auc_pr(
        _ptr(values, ctypes.c_float), values.size, _uint(width, "map width"), _uint(height, "map height"),
        _ptr(flat, ctypes.c_double), flat.size, ctypes.byref(ap), ctypes.byref(area)))
    return ap.value, area.value


def cxr8_evaluate(model: Model, images: PathLike, bbox_csv: PathLike, out: PathLike, baseline: Optional[Model] = None,
                  data_entry_csv: Optional[PathLike] = None, working_size: Optional[int] = None,
                  samples: Optional[int] = None, batch: Optional[int] = None, t_min: Optional[float] = None,
                  t_max: Optional[float] = None, seed: Optional[int] = None,
                  limit: Optional[int] = None, diseases: Optional[Sequence[str]] = None,
                  progress: Optional[Callable[[int, int], Any]] = None) -> Dict[str, Any]:
    """The ChestX-ray8 evaluation (``dm_cxr8_evaluate``): for every image and disease of the box list
    (those the data entry confirms, when given), the typicality map of ``model`` (and ``baseline``)
    under "Chest X-Ray with {disease}." against "Chest X-Ray.", scored by AUC-PR against the boxes.
    Images are found by name under ``images`` (subfolders included). Writes report.md/.csv/.json and
    overlays/ into ``out`` and returns the parsed report.json: ``{"report": per-disease rows and
    averages, "images": every image's figures}``. ``progress(done, total)`` after each map; returning
    False cancels."""
    options = _lib.CCxr8Options()
    check(_lib.lib().dm_cxr8_options_default(ctypes.byref(options)))
    _override(options, working_size=working_size, samples=samples, batch=batch, t_min=t_min, t_max=t_max, seed=seed)
    options.limit = 0 if limit is None else _uint(limit, "limit")
    disease_list = None if diseases is None else _c_string(",".join(diseases), "diseases")
    options.diseases = disease_list
    reporter = Progress(progress)
    status = _lib.lib().dm_cxr8_evaluate(
        model._h(), None if baseline is None else baseline._h(), _path_bytes(images, "images"),
        _path_bytes(bbox_csv, "bbox_csv"), _path_bytes(data_entry_csv, "data_entry_csv"), _path_bytes(out, "out"),
        ctypes.byref(options), reporter.function, None)
    reporter.finish(status)
    return json.loads((Path(out) / "report.json").read_text())
