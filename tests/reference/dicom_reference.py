#!/usr/bin/env python3
"""What pydicom decodes from its own DICOM test files, for the Rust peer check (tests/dicom_peer.rs).

Usage: dicom_reference.py OUT_DIR

Reads every *.dcm that pydicom's wheel ships (pydicom/data/test_files) and that PyPI's pydicom-data
ships (data_store/data) and writes OUT_DIR/index.json, one entry per file:
  name, path, transfer_syntax, photometric (as pydicom returns the pixels), and either
  error (why pydicom cannot give pixels) or
  frames/rows/columns/samples, frame_indices (the first, middle and last frame: a few suffice and
  the 120-frame colour cine would otherwise take 440 MB) and the files
    <id>.modality: those frames of pixel_array (RGB for colour, pydicom's default) followed by
                   apply_modality_lut for grey images (with the functional-group rescale of
                   enhanced multi-frame images, see with_frame_groups), C order (frame, row,
                   column, sample);
    <id>.display:  frame 0 as display levels in [0, 1], every display_step-th row and column:
                   grey through apply_voi_lut (the first VOI LUT or window, else min-max)
                   scaled by pydicom's output range and inverted for MONOCHROME1; RGB divided by 2^BitsStored - 1; palette indices
                   through apply_color_lut, divided by 2^(LUT bits) - 1;
  the modality values little-endian in the narrowest exact type ("dtype": u1, i2, u2, i4, u4, f4 or
  f8), the display levels float32.
OUT_DIR belongs to this script; OUT_DIR/.stamp (a hash of this file and the pinned requirements)
makes reruns free and a lock file next to OUT_DIR serialises concurrent runs.
"""

import copy
import fcntl
import hashlib
import json
import shutil
import sys
import warnings
from pathlib import Path

_REQUIREMENTS = Path(__file__).resolve().parents[2] / "scripts" / "requirements.txt"
STAMP = hashlib.sha256(Path(__file__).read_bytes() + _REQUIREMENTS.read_bytes()).hexdigest()


def is_current(out_dir: Path) -> bool:
    stamp = out_dir / ".stamp"
    return stamp.is_file() and stamp.read_text() == STAMP


if __name__ == "__main__" and len(sys.argv) == 2 and is_current(Path(sys.argv[1])):
    sys.exit(0)

import data_store  # noqa: E402  (pydicom-data)
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut  # noqa: E402

SOURCES = {
    "pydicom": Path(pydicom.__file__).parent / "data" / "test_files",
    "pydicom-data": Path(data_store.__file__).parent / "data",
}


def with_frame_groups(ds, index: int):
    """The data set as pydicom's LUT functions need it: for an enhanced multi-frame image, the
    rescale and window of frame `index` from its functional groups (which pydicom does not read)
    copied to the top level where the data set has none."""
    groups = [ds.PerFrameFunctionalGroupsSequence[index]] if "PerFrameFunctionalGroupsSequence" in ds else []
    groups += list(ds.get("SharedFunctionalGroupsSequence", []))
    copies = {
        "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept"),
        "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
    }
    flat = copy.copy(ds)
    for sequence, keywords in copies.items():
        if any(k in ds for k in keywords[:2]):
            continue
        items = [item for group in groups for item in group.get(sequence, []) if all(k in item for k in keywords[:2])]
        for keyword in keywords:
            if items and keyword in items[0]:
                setattr(flat, keyword, items[0][keyword].value)
    return flat


def output_range(ds) -> tuple[float, float]:
    """The output range pydicom's apply_windowing maps a window onto (its y_min, y_max)."""
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        y_min, y_max = 0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    elif int(ds.PixelRepresentation) == 0:
        y_min, y_max = 0.0, 2.0**bits - 1
    else:
        y_min, y_max = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        y_min, y_max = y_min * slope + intercept, y_max * slope + intercept
    return y_min, y_max


def grey_display(frame: np.ndarray, ds) -> np.ndarray:
    """Frame 0 (after the modality LUT) as display levels in [0, 1]."""
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        levels = apply_voi_lut(frame, ds, index=0, prefer_lut=True).astype(np.float64) / (2.0**bits - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        y_min, y_max = output_range(ds)
        levels = (apply_voi_lut(frame, ds, index=0, prefer_lut=True) - y_min) / (y_max - y_min)
    else:
        lo, hi = float(frame.min()), float(frame.max())
        levels = (frame - lo) / (hi - lo) if hi > lo else np.zeros_like(frame, dtype=np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        levels = 1.0 - levels
    return np.asarray(levels, dtype=np.float64)


def write_array(path: Path, array: np.ndarray) -> str:
    """Writes `array` little-endian in the narrowest type that holds it exactly; returns the type."""
    array = np.ascontiguousarray(array, dtype=np.float64)
    for dtype in ("u1", "i2", "u2", "i4", "u4", "f4", "f8"):
        narrow = array.astype("<" + dtype)
        if np.array_equal(narrow.astype(np.float64), array, equal_nan=True):
            narrow.tofile(path)
            return dtype
    raise AssertionError("float64 always holds the array")


def describe(path: Path, out_dir: Path, key: str) -> dict:
    entry = {"name": key, "path": str(path)}
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # noqa: BLE001  (any failure is a result to report)
        return {**entry, "error": f"dcmread: {type(e).__name__}: {e}"}
    entry["transfer_syntax"] = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if "PixelData" not in ds:
        return {**entry, "error": "no Pixel Data"}
    try:
        pixels = ds.pixel_array
    except Exception as e:  # noqa: BLE001
        return {**entry, "error": f"pixel_array: {type(e).__name__}: {e}"}
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.SamplesPerPixel)
    rows, columns = int(ds.Rows), int(ds.Columns)
    frame_indices = sorted({0, frames // 2, frames - 1})
    pixels = pixels.reshape(frames, rows, columns, samples)[frame_indices]
    photometric = str(ds.PhotometricInterpretation)
    grey = photometric in ("MONOCHROME1", "MONOCHROME2")
    if grey:
        modality = np.stack([apply_modality_lut(f[..., 0], with_frame_groups(ds, i)) for f, i in zip(pixels, frame_indices)])[..., None]
    else:
        modality = pixels
    file_id = key.replace("/", "__")
    entry.update(frames=frames, frame_indices=frame_indices, rows=rows, columns=columns, samples=samples, photometric=photometric)
    entry["bits_stored"] = int(ds.BitsStored)
    entry["dtype"] = write_array(out_dir / f"{file_id}.modality", modality)
    if grey:
        display = grey_display(modality[0, ..., 0].astype(np.float64), with_frame_groups(ds, 0))
    elif photometric == "PALETTE COLOR":
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        display = apply_color_lut(modality[0, ..., 0], ds).astype(np.float64) / (2.0**bits - 1)
    else:
        display = modality[0].astype(np.float64) / (2.0 ** int(ds.BitsStored) - 1)
    if display is not None:
        # Every step-th row and column: enough pixels to check the VOI, a fraction of the bytes.
        step = max(1, int(np.ceil(np.sqrt(rows * columns / 2**18))))
        display = display[::step, ::step]
        entry["display_step"] = step
        # libdiffmine's display image is float32, so float32 is all the comparison needs.
        np.ascontiguousarray(display, dtype="<f4").tofile(out_dir / f"{file_id}.display")
    entry["file_id"] = file_id
    return entry


def build(out_dir: Path) -> None:
    scratch = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    entries = []
    with warnings.catch_warnings():
        # pydicom warns about the very oddities these files exist to test.
        warnings.simplefilter("ignore")
        for source, folder in SOURCES.items():
            for path in sorted(folder.glob("*.dcm")):
                entries.append(describe(path, scratch, f"{source}/{path.name}"))
    versions = {"pydicom": pydicom.__version__, "numpy": np.__version__}
    (scratch / "index.json").write_text(json.dumps({"versions": versions, "files": entries}, indent=1))
    (scratch / ".stamp").write_text(STAMP)
    shutil.rmtree(out_dir, ignore_errors=True)
    scratch.rename(out_dir)


def main() -> None:
    out_dir = Path(sys.argv[1]).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.with_name(f".{out_dir.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_current(out_dir):
            build(out_dir)


if __name__ == "__main__":
    main()
