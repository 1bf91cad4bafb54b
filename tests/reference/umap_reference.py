#!/usr/bin/env python3
"""umap-learn as the peer of libdiffmine's UMAP (tests/umap.rs), compared on trustworthiness.

Usage:
  umap_reference.py data DIR     writes DIR/x.npy, the data set, and DIR/umap_learn.json: umap-learn's
                                 trustworthiness for 2 and 32 components, and its fit times;
  umap_reference.py score DIR    reads DIR/x.npy and each DIR/ours_<components>.npy, and writes
                                 DIR/ours.json: their trustworthiness.

The data set stands in for DIFT patch features: 1000 points in 128 dimensions, 8 Gaussian clusters
whose centres lie along a curve (a helix in a 3-d latent space), mapped into 128 dimensions by a fixed
random nonlinear map (tanh of an affine map), plus isotropic noise of about half the signal, so that
no embedding is near perfect (umap-learn reaches about 0.975). umap-learn runs with n_neighbors 15
and otherwise its defaults (random_state fixed). Trustworthiness is scikit-learn's, 15 neighbours.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.manifold import trustworthiness

POINTS, DIMS, CLUSTERS, NEIGHBORS = 1000, 128, 8, 15
COMPONENTS = (2, 32)


def data_set() -> np.ndarray:
    rng = np.random.default_rng(20240801)
    centres = np.linspace(0.0, 3.0 * np.pi, CLUSTERS)
    t = rng.normal(np.repeat(centres, POINTS // CLUSTERS), 0.4)
    width = rng.normal(0.0, 0.3, POINTS)
    latent = np.stack([np.cos(t), np.sin(t), 0.3 * t, width], axis=1)
    weights = rng.normal(0.0, 1.0, (latent.shape[1], DIMS))
    bias = rng.normal(0.0, 0.5, DIMS)
    x = np.tanh(latent @ weights + bias) + rng.normal(0.0, 0.5, (POINTS, DIMS))
    return x.astype(np.float32)


def umap_learn(out: Path) -> None:
    import umap

    x = data_set()
    np.save(out / "x.npy", x)
    result = {}
    for components in COMPONENTS:
        started = time.time()
        embedding = umap.UMAP(n_neighbors=NEIGHBORS, n_components=components, random_state=42).fit_transform(x)
        seconds = time.time() - started
        result[str(components)] = {
            "trustworthiness": float(trustworthiness(x, embedding, n_neighbors=NEIGHBORS)),
            "seconds": seconds,
        }
    (out / "umap_learn.json").write_text(json.dumps(result, indent=1))


def score(out: Path) -> None:
    x = np.load(out / "x.npy")
    result = {}
    for components in COMPONENTS:
        embedding = np.load(out / f"ours_{components}.npy")
        result[str(components)] = {"trustworthiness": float(trustworthiness(x, embedding, n_neighbors=NEIGHBORS))}
    (out / "ours.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    {"data": umap_learn, "score": score}[mode](out)
