"""The planted ground truth of a `diffmine synth` set, read from its `BBox_List_2017.csv`. Kept apart
from the scripts that run models so that a script which only reads files does not load the binding."""

import csv
from pathlib import Path

import numpy as np

LABEL_PROMPT, NULL_PROMPT = "Chest X-Ray with {label}.", "Chest X-Ray."


def planted_boxes(held_out: Path) -> dict[str, tuple[str, tuple[float, float, float, float]]]:
    """Image file name -> (label, (x, y, w, h)) of its planted element."""
    boxes = {}
    with open(held_out / "BBox_List_2017.csv", newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            boxes[row[0]] = (row[1], tuple(float(v) for v in row[2:6]))
    return boxes


def box_mask(shape, box) -> np.ndarray:
    """Pixels whose centre lies inside the box."""
    x, y, w, h = box
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    return (xs >= x) & (xs < x + w) & (ys >= y) & (ys < y + h)
