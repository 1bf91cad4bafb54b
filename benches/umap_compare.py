#!/usr/bin/env python3
"""libdiffmine's UMAP against umap-learn at the co-typicality miner's sizes (run by benches/umap.sh).

Usage: umap_compare.py --bench BENCH_BINARY --work DIR --results FILE.jsonl SIZE [SIZE ...]

For each SIZE: makes a deterministic data set standing in for DIFT features (SIZE points in 1280
dimensions, as SD 1.5's DIFT, L2-normalised rows: 32 Gaussian clusters, each spread along its own
random 8-dimensional subspace plus isotropic noise, so that the neighbours within a cluster follow a
structure an embedding can keep or lose), saves it as DIR/x_SIZE.npy, and then, in turns (which goes
first alternates between sizes):
- libdiffmine: runs BENCH_BINARY (benches/umap.rs: `embed` with 15 neighbours, 32 components, seed 42)
  in a fresh process, and reads its JSON line (the time of `embed` and of its stages);
- umap-learn: times `UMAP(n_neighbors=15, n_components=32, random_state=42).fit_transform` in this
  process. umap-learn compiles its numba functions on first use, so one warm-up fit (4200 points, in
  16 dimensions, 20 epochs: above umap-learn's 4096-point threshold, so that the NN-descent path is
  compiled as well as the exact one) runs before any timed fit; its time is reported apart.
  random_state makes umap-learn run single-threaded (numba), as it warns.
Both embeddings are scored by scikit-learn's trustworthiness (15 neighbours) on the same random
subsample of at most 3000 points (the measure is O(n²) in time and memory). Prints a table and appends
one JSON line per size to FILE.jsonl. For each measurement, "others_cpu_seconds" is the CPU time the
rest of the machine used meanwhile (the machine may be shared).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.manifold import trustworthiness

DIMS, CLUSTERS, SUBSPACE = 1280, 32, 8
NEIGHBORS, COMPONENTS, SEED = 15, 32, 42
TRUST_SAMPLE = 3000
# The stages of our `embed`, in the order they run (benches/umap.rs reports them by name).
STAGES = ("knn", "fuzzy_graph", "init", "sgd")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def clustered_features(n: int) -> np.ndarray:
    """n L2-normalised points in DIMS dimensions, deterministic in n: cluster centres of unit variance
    per coordinate, each cluster spread along its own SUBSPACE-dimensional random directions (variance
    2 per coordinate) with isotropic noise (variance 0.25)."""
    rng = np.random.default_rng(20261129)
    centres = rng.normal(0.0, 1.0, (CLUSTERS, DIMS))
    bases = rng.normal(0.0, 0.5, (CLUSTERS, SUBSPACE, DIMS))
    labels = np.random.default_rng(n).integers(0, CLUSTERS, n)
    latent = np.random.default_rng(n + 1).normal(0.0, 1.0, (n, SUBSPACE))
    x = centres[labels] + np.einsum("ns,nsd->nd", latent, bases[labels])
    x += np.random.default_rng(n + 2).normal(0.0, 0.5, (n, DIMS))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (as benches/timing.sh counts them)."""
    fields = open("/proc/stat").readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measured(run):
    """run()'s result, with the wall seconds, our CPU seconds and the CPU seconds the rest of the
    machine used meanwhile."""
    busy, cpu, started = machine_busy_seconds(), own_cpu_seconds(), time.perf_counter()
    result = run()
    wall = time.perf_counter() - started
    cpu = own_cpu_seconds() - cpu
    others = max(0.0, machine_busy_seconds() - busy - cpu)
    return result, {"process_seconds": round(wall, 3), "cpu_seconds": round(cpu, 2), "others_cpu_seconds": round(others, 1)}


def run_ours(bench: str, features: Path, embedding: Path) -> dict:
    def run():
        out = subprocess.run([bench, str(features), str(embedding)], check=True, capture_output=True, text=True).stdout
        return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])

    record, timing = measured(run)
    record.update(timing)
    record["embedding"] = np.load(embedding)
    return record


def make_umap():
    import umap

    return umap.UMAP(n_neighbors=NEIGHBORS, n_components=COMPONENTS, random_state=SEED)


def warm_up_umap_learn() -> float:
    """Seconds of one small fit that compiles umap-learn's numba functions (exact and NN-descent)."""
    x = np.random.default_rng(0).normal(size=(4200, 16)).astype(np.float32)
    started = time.perf_counter()
    model = make_umap()
    model.n_epochs = 20
    model.fit_transform(x)
    return time.perf_counter() - started


def run_umap_learn(x: np.ndarray) -> dict:
    def run():
        started = time.perf_counter()
        embedding = make_umap().fit_transform(x)
        return {"seconds": time.perf_counter() - started, "embedding": embedding}

    record, timing = measured(run)
    record.update(timing)
    record["impl"] = "umap-learn"
    record["peak_rss_bytes_of_python_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return record


def trust_sample(n: int) -> np.ndarray:
    """The points both embeddings are scored on: all of them, or a fixed random TRUST_SAMPLE."""
    if n <= TRUST_SAMPLE:
        return np.arange(n)
    return np.sort(np.random.default_rng(7).choice(n, TRUST_SAMPLE, replace=False))


def compare(size: int, bench: str, work: Path, ours_first: bool) -> dict:
    x = clustered_features(size)
    features = work / f"x_{size}.npy"
    np.save(features, x)
    runs = [lambda: run_ours(bench, features, work / f"ours_{size}.npy"), lambda: run_umap_learn(x)]
    results = [run() for run in (runs if ours_first else runs[::-1])]
    ours, theirs = results if ours_first else results[::-1]
    sample = trust_sample(size)
    for record in (ours, theirs):
        record["trustworthiness"] = float(trustworthiness(x[sample], record.pop("embedding")[sample], n_neighbors=NEIGHBORS))
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n": size,
        "dims": DIMS,
        "clusters": CLUSTERS,
        "neighbors": NEIGHBORS,
        "components": COMPONENTS,
        "trustworthiness_points": len(sample),
        "ours_first": ours_first,
        "libdiffmine": ours,
        "umap_learn": theirs,
    }


def table_row(row: dict) -> str:
    ours, theirs = row["libdiffmine"], row["umap_learn"]
    stages = " ".join(f"{ours['stages'].get(name, 0.0):6.1f}" for name in STAGES)
    return (
        f"{row['n']:>6} | {ours['seconds']:7.1f} = {stages} | {theirs['seconds']:10.1f} | {ours['seconds'] / theirs['seconds']:11.2f}"
        f" | {ours['trustworthiness']:.4f} / {theirs['trustworthiness']:.4f} of {row['trustworthiness_points']:>4}"
        f" | {ours['peak_rss_bytes'] / 2**30:6.2f} | {ours['others_cpu_seconds']:5.0f} / {theirs['others_cpu_seconds']:.0f}"
    )


TABLE_HEADER = (
    "     n | ours s  = " + " ".join(f"{name[:6]:>6}" for name in STAGES) + " | umap-learn | ours/theirs"
    " | trustworthiness ours / theirs | ours GiB | others' CPU s"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", required=True, help="the built benches/umap.rs binary")
    parser.add_argument("--work", required=True, type=Path, help="folder for the data and embeddings")
    parser.add_argument("--results", required=True, type=Path, help="JSON lines file to append to")
    parser.add_argument("sizes", nargs="+", type=int)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", message=".*n_jobs value.*")

    warm_up = warm_up_umap_learn()
    print(f"umap-learn warm-up fit (numba compilation): {warm_up:.1f} s, not counted below", file=sys.stderr)
    print(TABLE_HEADER)
    for i, size in enumerate(args.sizes):
        row = compare(size, args.bench, args.work, ours_first=i % 2 == 0)
        row["umap_learn_warm_up_seconds"] = round(warm_up, 2)
        print(table_row(row), flush=True)
        with args.results.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
