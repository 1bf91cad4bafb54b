#!/usr/bin/env python3
"""The comparison of typicality mining and the discriminative baseline (benches/doersch.sh).

    doersch_compare.py quality REPORT SET SCALE MIN_MEMBERS
        one JSON line: of the elements a report shows (its top 6 clusters or detectors with at least
        MIN_MEMBERS members: 6 for clusters, as the report shows them, 1 for detectors, which find one
        window per image and so at most as many as the label has images; their first 6 elements), the share whose box, scaled by SCALE to the set's pixels, holds
        the centre of its image's planted element (SET/BBox_List_2017.csv); and chance: the share of
        all 64-pixel windows at a stride of 8 pixels that hold it, over the set's images.
    doersch_compare.py tables RESULTS.jsonl
        the Markdown tables of quality and cost (per stage wall time and peak memory at each set size,
        the fitted growth exponent of each stage and of the total, and the time extrapolated to 10,000
        and 1,800,000 images, each stage on its own fitted power law).
"""
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

TOP, PER = 6, 6
WINDOW, STRIDE = 64, 8


def planted_centres(set_dir):
    centres = {}
    with open(Path(set_dir) / "BBox_List_2017.csv") as f:
        rows = list(csv.reader(f))[1:]
    for row in rows:
        x, y, w, h = map(float, row[2:6])
        centres[row[0]] = (x + w / 2, y + h / 2)
    return centres


def holds(x, y, size, centre):
    return x <= centre[0] < x + size and y <= centre[1] < y + size


def quality(report, set_dir, scale, min_members):
    centres = planted_centres(set_dir)
    rows = list(csv.DictReader(open(Path(report) / "patches.csv")))
    by_label = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_label[r["label"]][int(r["cluster"])].append(r)
    hits = shown = 0
    for clusters in by_label.values():
        ranked = [clusters[c] for c in sorted(clusters) if len(clusters[c]) >= min_members][:TOP]
        for members in ranked:
            for r in sorted(members, key=lambda r: int(r["rank_in_cluster"]))[:PER]:
                name = Path(r["image"]).name
                shown += 1
                hits += holds(int(r["x"]) * scale, int(r["y"]) * scale, int(r["size"]) * scale, centres[name])
    side = image_side(set_dir)
    positions = [(x, y) for y in range(0, side - WINDOW + 1, STRIDE) for x in range(0, side - WINDOW + 1, STRIDE)]
    chance = sum(sum(holds(x, y, WINDOW, c) for x, y in positions) / len(positions) for c in centres.values()) / len(centres)
    print(json.dumps({"shown": shown, "on_planted": hits, "share": hits / shown if shown else None, "chance": chance, "labels": len(by_label)}))


def image_side(set_dir):
    png = next(Path(set_dir).glob("*/*.png"))
    with open(png, "rb") as f:
        head = f.read(24)
    return int.from_bytes(head[16:20], "big")


def fit(sizes, values):
    points = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if v > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return slope, my - slope * mx


def tables(results):
    lines = [json.loads(l) for l in open(results) if l.strip()]
    out = []
    quality_rows = [l for l in lines if l["kind"] == "quality"]
    if quality_rows:
        out += ["| method | images per label | elements shown | on the planted element | share | chance |", "|---|---|---|---|---|---|"]
        for q in quality_rows:
            share = "–" if q["share"] is None else f"{q['share']:.3f}"
            out.append(f"| {q['method']} | {q['per_label']} | {q['shown']} | {q['on_planted']} | {share} | {q['chance']:.3f} |")
        out.append("")
    for method in sorted({l["method"] for l in lines if l["kind"] == "cost"}):
        points = sorted((l for l in lines if l["kind"] == "cost" and l["method"] == method), key=lambda l: l["images"])
        stages = list(points[0]["stages"])
        sizes = [p["images"] for p in points]
        out += [f"**{method}**", "", "| stage | " + " | ".join(f"{n} images" for n in sizes) + " | growth exponent |", "|---" * (len(sizes) + 2) + "|"]
        for stage in stages + ["total"]:
            values = [p["total_seconds"] if stage == "total" else p["stages"][stage] for p in points]
            f = fit(sizes, values)
            out.append(f"| {stage} | " + " | ".join(f"{v:.2f} s" for v in values) + f" | {'–' if f is None else f'{f[0]:.2f}'} |")
        memory = [p["peak_resident_bytes"] / 2**20 for p in points]
        f = fit(sizes, memory)
        out.append("| peak memory | " + " | ".join(f"{m:.0f} MiB" for m in memory) + f" | {'–' if f is None else f'{f[0]:.2f}'} |")
        # Each stage on its own power law: a stage of fixed cost (training's) must not flatten the
        # linear ones, as a single fit of the total does. A stage under 1 % of the largest run's time
        # is too short to fit (its exponent is timer noise) and is scaled linearly from that run.
        largest, last_total = sizes[-1], points[-1]["total_seconds"]
        laws = []
        for stage in stages:
            values = [p["stages"][stage] for p in points]
            f = fit(sizes, values)
            laws.append(f if f and values[-1] >= 0.01 * last_total else (1.0, math.log(max(values[-1], 1e-9) / largest)))
        est = lambda n: sum(math.exp(intercept) * n ** slope for slope, intercept in laws)
        out += ["", f"Extrapolated stage by stage (each on its fitted exponent; stages under 1 % of the time linearly): "
                f"{est(10_000) / 3600:.3g} h at 10,000 images, {est(1_800_000) / 3600:.3g} h ({est(1_800_000) / 86400:.3g} days) "
                f"at 1,800,000 images (these settings, this machine)."]
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    if sys.argv[1] == "quality":
        quality(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "tables":
        tables(sys.argv[2])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
