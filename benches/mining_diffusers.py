#!/usr/bin/env python3
"""diffusers + scikit-learn half of the mining benchmark (benches/mining.sh): the same pipeline as
libdiffmine's `mine` (src/mining/), written the way a diffusers user would.

Usage: mining_diffusers.py MODEL_DIR DATA.csv PROMPT_TEMPLATE NULL_PROMPT SAMPLES BATCH PATCH f32|bf16-autocast

DATA.csv holds `path,label` rows (paths relative to the CSV), as `diffmine mine --data` reads it. Per
label (labels sorted, images in file order), with the library's defaults:
  - typicality: for each image, the map of Eq. 3 with SAMPLES samples in UNet calls of 2·BATCH rows
    (`typicality_map`, imported from benches/typicality_diffusers.py), seed 42 per image;
  - patches: the map average-pooled with a PATCH × PATCH window, stride 1; greedy non-maximum
    suppression keeping PER_IMAGE boxes per image (a box that intersects or touches a kept one is
    dropped; ties to the lowest row, then column); the label's TOP best boxes;
  - DIFT: for each image with a kept box, ENSEMBLE posterior samples of its latent (one VAE encode,
    as libdiffmine; Tang et al.'s code encodes the image once per member) noised to t = TIMESTEP, one
    UNet call under the label prompt, stopped after up_blocks[UP_BLOCK] by a forward hook (Tang et al.'s
    code also runs no block after it), averaged over the members; each box's feature is the mean of the
    cells it overlaps, L2-normalised;
  - clustering: scikit-learn KMeans(n_clusters=min(CLUSTERS, boxes), init="k-means++",
    n_init=RESTARTS) in float64, members ordered by distance to their centroid, clusters by the median
    typicality of their members.
Each stage is timed on its own (reading the image files included, as libdiffmine's stage times include
them); `bf16-autocast` runs typicality and DIFT under torch.autocast("cpu", torch.bfloat16), as
benches/typicality_diffusers.py does. CPU, torch.set_num_threads(2), torch.inference_mode(). One JSON
line on stdout: the seconds of each stage, their sum, the load time, and the numbers of boxes and clusters.
"""

import contextlib
import csv
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

# This folder is on sys.path when the script runs: the Eq. 3 loop that benches/typicality.sh times.
from typicality_diffusers import typicality_map

os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = 2
# libdiffmine's defaults (MiningOptions, DiftOptions, ClusterOptions).
PER_IMAGE, TOP = 5, 1000
ENSEMBLE, TIMESTEP, UP_BLOCK = 8, 161, 1
CLUSTERS, RESTARTS, KMEANS_SEED = 32, 10, 10
SEED = 42


def labelled_images(csv_path: Path) -> dict:
    """{label: [image path, ...]}, labels sorted, images in file order (as libdiffmine's LabelledSet)."""
    by_label = defaultdict(list)
    with open(csv_path, newline="") as f:
        for row in csv.reader(f):
            if not row or row[0].strip() == "path":
                continue
            for label in row[1].split("|"):
                by_label[label.strip()].append(csv_path.parent / row[0].strip())
    return dict(sorted(by_label.items()))


def load_image(path: Path):
    """The image as model input (1, 3, H, W) in [-1, 1]; grey images get three equal channels."""
    import numpy as np
    import torch
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def best_boxes(typicality, k: int, count: int) -> list:
    """The image's best k × k windows as (score, y, x), best first: pooled means, then greedy
    suppression of every window within k pixels of a kept one on both axes (intersecting or touching)."""
    import numpy as np
    import torch

    scores = torch.nn.functional.avg_pool2d(typicality.float()[None, None], k, stride=1)[0, 0].double().numpy()
    available = np.ones(scores.shape, dtype=bool)
    boxes = []
    while len(boxes) < count and available.any():
        # argmax returns the first maximum in row-major order: ties go to the lowest (row, column).
        y, x = np.unravel_index(np.argmax(np.where(available, scores, -np.inf)), scores.shape)
        boxes.append((float(scores[y, x]), int(y), int(x)))
        available[max(0, y - k) : y + k + 1, max(0, x - k) : x + k + 1] = False
    return boxes


class _StopUNet(Exception):
    """Raised by the DIFT hook once up_blocks[UP_BLOCK] has run, so the blocks after it are not."""


def dift_features(pipe, image, prompt: str, generator):
    """The DIFT feature map (C, h, w) of one image: the mean over ENSEMBLE members of the
    up_blocks[UP_BLOCK] output for the posterior sample noised to TIMESTEP under `prompt`."""
    import torch

    posterior = pipe.vae.encode(image).latent_dist
    latents = torch.cat([posterior.sample(generator) for _ in range(ENSEMBLE)]) * pipe.vae.config.scaling_factor
    t = torch.full((ENSEMBLE,), TIMESTEP)
    noisy = pipe.scheduler.add_noise(latents, torch.randn(latents.shape, generator=generator), t)
    ids = pipe.tokenizer([prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt")
    context = pipe.text_encoder(ids.input_ids).last_hidden_state.expand(ENSEMBLE, -1, -1)
    captured = {}

    def stop(module, args, output):
        captured["features"] = output
        raise _StopUNet

    hook = pipe.unet.up_blocks[UP_BLOCK].register_forward_hook(stop)
    try:
        pipe.unet(noisy, t, context)
    except _StopUNet:
        pass
    finally:
        hook.remove()
    return captured["features"].float().mean(0)


def box_feature(features, y: int, x: int, size: int, height: int, width: int):
    """Mean of the feature cells the box overlaps (rows floor(y0·h/H) to ceil(y1·h/H), at least one;
    columns likewise), L2-normalised."""
    import math

    import torch

    _, h, w = features.shape

    def cells(start: int, pixels: int, count: int) -> slice:
        first = min(max(math.floor(start * count / pixels), 0), count - 1)
        return slice(first, min(max(math.ceil((start + size) * count / pixels), first + 1), count))

    mean = features[:, cells(y, height, h), cells(x, width, w)].mean((1, 2))
    return torch.nn.functional.normalize(mean, dim=0)


def cluster(features, scores):
    """k-means of the box features; returns the clusters as member lists in rank order (median
    typicality, highest first; ties to the lower id), each closest to its centroid first."""
    import numpy as np
    from sklearn.cluster import KMeans

    k = min(CLUSTERS, len(features))
    fitted = KMeans(n_clusters=k, init="k-means++", n_init=RESTARTS, random_state=KMEANS_SEED).fit(features)
    distances = np.linalg.norm(features - fitted.cluster_centers_[fitted.labels_], axis=1)
    clusters = []
    for c in range(k):
        members = np.flatnonzero(fitted.labels_ == c)
        if len(members):
            members = members[np.argsort(distances[members], kind="stable")]
            clusters.append((-float(np.median(scores[members])), c, members.tolist()))
    return [members for _, _, members in sorted(clusters)]


def mine_label(pipe, label: str, paths: list, options: dict, seconds: dict) -> tuple:
    """One label's pipeline, adding each stage's time to `seconds`; returns (boxes, clusters)."""
    import numpy as np
    import torch

    prompt = options["prompt_template"].replace("{label}", label)
    stopwatch = time.perf_counter
    kept = []  # (score, image index, y, x, size)
    sizes = {}
    for index, path in enumerate(paths):
        started = stopwatch()
        image = load_image(path)
        with options["precision"]():
            typicality = typicality_map(pipe, image, prompt, options["null_prompt"], options["samples"], options["batch"], torch.Generator().manual_seed(SEED))
        seconds["typicality"] += stopwatch() - started
        started = stopwatch()
        sizes[index] = tuple(typicality.shape)
        k = min(options["patch"], *typicality.shape)
        kept += [(score, index, y, x, k) for score, y, x in best_boxes(typicality, k, PER_IMAGE)]
        # Keep only what can still make the label's top, as libdiffmine does.
        kept = sorted(kept, key=lambda b: (-b[0], b[1], b[2], b[3]))[:TOP]
        seconds["patches"] += stopwatch() - started
    started = stopwatch()
    rows = [None] * len(kept)
    for index, path in enumerate(paths):
        members = [i for i, b in enumerate(kept) if b[1] == index]
        if members:
            with options["precision"]():
                features = dift_features(pipe, load_image(path), prompt, torch.Generator().manual_seed(SEED))
            for i in members:
                _, _, y, x, k = kept[i]
                rows[i] = box_feature(features, y, x, k, *sizes[index])
    seconds["dift"] += stopwatch() - started
    started = stopwatch()
    clusters = cluster(torch.stack(rows).double().numpy(), np.array([b[0] for b in kept]))
    seconds["clustering"] += stopwatch() - started
    return len(kept), len(clusters)


def main() -> int:
    if len(sys.argv) != 9:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, data = sys.argv[1], Path(sys.argv[2])
    import torch
    from diffusers import StableDiffusionPipeline

    mode = sys.argv[8]
    options = dict(
        prompt_template=sys.argv[3],
        null_prompt=sys.argv[4],
        samples=int(sys.argv[5]),
        batch=int(sys.argv[6]),
        patch=int(sys.argv[7]),
        precision=(lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "bf16-autocast" else contextlib.nullcontext,
    )
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    load_seconds = time.perf_counter() - started
    images = labelled_images(data)
    seconds = dict(typicality=0.0, patches=0.0, dift=0.0, clustering=0.0)
    boxes = clusters = 0
    with torch.inference_mode():
        for label, paths in images.items():
            label_boxes, label_clusters = mine_label(pipe, label, paths, options, seconds)
            boxes, clusters = boxes + label_boxes, clusters + label_clusters
    result = dict(impl="diffusers", mode=mode, images=sum(map(len, images.values())), labels=len(images))
    result.update({f"{stage}_seconds": s for stage, s in seconds.items()})
    result.update(seconds=sum(seconds.values()), load_seconds=load_seconds, boxes=boxes, clusters=clusters)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
