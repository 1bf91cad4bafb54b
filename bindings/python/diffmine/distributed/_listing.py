"""The labelled set as ``diffmine mine`` lists it (a folder per label, or a ``path,label`` CSV with
paths relative to it and several labels separated by ``|``), as rows of (path, file, label): one row
per label an image has; ``path`` names the image as ``diffmine mine`` does (in results and the
report), ``file`` is its absolute path, which workers on other machines (in other folders) read.
Only paths are listed here; the images themselves are read by the pipeline's workers, as a stream."""

from __future__ import annotations

import os
from typing import Dict, List

# The extensions of the non-DICOM image files a label folder lists; DICOM files are recognised by
# their content, as a PACS export often names its files without an extension.
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp"}


def list_set(data: str) -> List[Dict[str, str]]:
    """The (path, label) rows of the set at ``data``, in the order ``diffmine mine`` reads it."""
    rows = _from_folders(data) if os.path.isdir(data) else _from_csv(data)
    if not rows:
        raise ValueError(f"{data} holds no labelled images")
    return [{**row, "file": os.path.abspath(row["path"])} for row in rows]


def _is_dicom(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _is_image(path: str) -> bool:
    return os.path.isfile(path) and (os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS or _is_dicom(path))


def _sorted_entries(folder: str) -> List[str]:
    # Sorted by the names' bytes, as the library sorts its paths.
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder), key=os.fsencode)]


def _from_folders(root: str) -> List[Dict[str, str]]:
    rows = []
    for label_dir in filter(os.path.isdir, _sorted_entries(root)):
        label = os.path.basename(label_dir)
        rows.extend({"path": path, "label": label} for path in filter(_is_image, _sorted_entries(label_dir)))
    return rows


def _from_csv(csv: str) -> List[Dict[str, str]]:
    base = os.path.dirname(csv) or "."
    rows = []
    with open(csv, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        path, comma, labels = line.partition(",")
        if not comma:
            raise ValueError(f"{csv} line {number + 1}: expected `path,label`")
        if number == 0 and path.strip() == "path":
            continue
        names = [label.strip() for label in labels.split("|") if label.strip()]
        if not names:
            raise ValueError(f"{csv} line {number + 1}: no label")
        rows.extend({"path": os.path.join(base, path.strip()), "label": label} for label in names)
    return rows
