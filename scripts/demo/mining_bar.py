#!/usr/bin/env python3
"""The mining bar of the demo models, measured on a `diffmine mine` run over a `diffmine synth` held-out set: of the
patches the report shows in each label's top 6 clusters (clusters of at least 6 members, in rank order,
up to 20 crops each, closest to the centroid first), the share that lies on a planted element of that
label (at least a quarter of the patch's area inside the planted box; the bar is 80 %).

Usage: mining_bar.py MINING_OUT_DIR HELD_OUT_DIR
"""

import csv
import sys
from collections import defaultdict
from pathlib import Path

from ground_truth import planted_boxes

TOP_CLUSTERS, MIN_MEMBERS, PER_ROW, BAR = 6, 6, 20, 0.8


def on_element(x: float, y: float, size: float, box) -> bool:
    bx, by, bw, bh = box
    overlap = max(0.0, min(x + size, bx + bw) - max(x, bx)) * max(0.0, min(y + size, by + bh) - max(y, by))
    return overlap >= 0.25 * size * size


def shown_patches(patches_csv: Path) -> dict[str, list[dict]]:
    """Per label, the patches the report's grid shows in the top clusters."""
    clusters: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    with open(patches_csv, newline="") as f:
        for row in csv.DictReader(f):
            clusters[row["label"]][int(row["cluster"])].append(row)
    shown = {}
    for label, by_rank in clusters.items():
        kept = [members for _, members in sorted(by_rank.items()) if len(members) >= MIN_MEMBERS][:TOP_CLUSTERS]
        shown[label] = [p for members in kept for p in sorted(members, key=lambda p: int(p["rank_in_cluster"]))[:PER_ROW]]
    return shown


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    mining, held_out = Path(sys.argv[1]), Path(sys.argv[2])
    boxes = planted_boxes(held_out)
    met = True
    for label, patches in sorted(shown_patches(mining / "patches.csv").items()):
        hits = 0
        for p in patches:
            box_label, box = boxes[Path(p["image"]).name]
            hits += box_label == label and on_element(float(p["x"]), float(p["y"]), float(p["size"]), box)
        share = hits / max(len(patches), 1)
        met &= share >= BAR
        print(f"{label}: {hits} of {len(patches)} shown patches on the planted element ({100 * share:.0f} %)")
    print(f"bar (at least {100 * BAR:.0f} % for every label): {'met' if met else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
