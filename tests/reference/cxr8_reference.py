#!/usr/bin/env python3
"""Reference AUC-PR figures for the Rust ChestX-ray8 metrics (tests/cxr8.rs).

Usage: cxr8_reference.py CASES.json OUT.json

CASES.json holds a list of cases {"width", "height", "map": [row-major floats], "boxes": [[x, y, w, h],
...]} in map pixels. For each case this writes to OUT.json, computed independently of libdiffmine:
  positives:          the pixels whose centre (x + 0.5, y + 0.5) lies in any box [x, x+w) x [y, y+h);
  average_precision:  sklearn.metrics.average_precision_score(positives, map) (null with no positive);
  authors:            the authors' curve, reimplemented directly in NumPy: thresholds
                      2 * 10**-s for s in linspace(2, 7, 1000), predicted = map > t, precision
                      tp / (tp + fp) (0 when nothing is above), recall tp / positives, and the area
                      np.trapezoid(precision, recall).
"""

import json
import sys

import numpy as np
from sklearn.metrics import average_precision_score


def positives(case: dict) -> np.ndarray:
    ys, xs = np.mgrid[0 : case["height"], 0 : case["width"]]
    cx, cy = xs + 0.5, ys + 0.5
    mask = np.zeros((case["height"], case["width"]), dtype=bool)
    for x, y, w, h in case["boxes"]:
        mask |= (cx >= x) & (cx < x + w) & (cy >= y) & (cy < y + h)
    return mask.ravel()


def authors_curve(scores: np.ndarray, labels: np.ndarray) -> dict:
    thresholds = 2 * 10 ** (-np.linspace(2, 7, 1000))
    precision, recall = [], []
    for t in thresholds:
        predicted = scores > t
        tp = np.sum(predicted & labels)
        fp = np.sum(predicted & ~labels)
        precision.append(tp / (tp + fp) if tp + fp > 0 else 0.0)
        recall.append(tp / labels.sum())
    return {"precision": precision, "recall": recall, "area": float(np.trapezoid(precision, recall))}


def main() -> None:
    cases = json.loads(open(sys.argv[1]).read())
    results = []
    for case in cases:
        scores = np.asarray(case["map"], dtype=np.float32)
        labels = positives(case)
        result = {"positives": int(labels.sum()), "mask": labels.astype(int).tolist()}
        if labels.any():
            result["average_precision"] = float(average_precision_score(labels, scores))
            result["authors"] = authors_curve(scores, labels)
        results.append(result)
    with open(sys.argv[2], "w") as out:
        json.dump(results, out)


if __name__ == "__main__":
    main()
