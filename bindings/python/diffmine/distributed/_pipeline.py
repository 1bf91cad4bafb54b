"""The distributed mining run, as Ray Data stages:

1. the set's (path, label) rows, listed on the driver by the library as ``diffmine mine`` lists them,
   stream through tasks that read each image's bytes and key it (a hash of the bytes, of the
   result-changing options and of the label); images whose key the working folder holds are passed on
   without their bytes;
2. an actor pool (the model opened once per actor) computes each new image's typicality map and its
   best boxes, and writes them to the working folder in Parquet, one file per batch;
3. the working folder's results are read back block by block, each block keeping only its best
   ``top`` boxes per label, and the driver merges the blocks' tops (no shuffle of every row);
4. a second actor pool computes the DIFT features of the kept boxes, one image at a time;
5. the driver clusters and ranks each label's boxes and writes the report folder, with the library's
   own code, as ``diffmine mine`` does.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np
import pyarrow as pa

from .. import stages
from . import _library
from ._workdir import KeySet, Workdir, result_key

CANDIDATES = "typicality"
# How long a model actor pool may take to start (actors placed, models loaded) before the run fails.
POOL_START_SECONDS = 600
BOX = pa.struct([("x", pa.int32()), ("y", pa.int32()), ("size", pa.int32()), ("score", pa.float32())])
RESULT_SCHEMA = pa.schema([
    ("key", pa.string()), ("image_hash", pa.string()), ("label", pa.string()), ("path", pa.string()),
    ("height", pa.int32()), ("width", pa.int32()), ("boxes", pa.list_(BOX)),
    ("map", pa.binary()), ("map_height", pa.int32()), ("map_width", pa.int32()), ("error", pa.string()),
])


@dataclass
class Settings:
    """A run's settings: the model (as :func:`_library.open_model` takes it), the mining options (the
    library's keyword names; left out: the library's default), and how the cluster runs it."""

    model: Dict[str, Any]
    mining: Dict[str, Any]
    data: str
    out: str
    workdir: str
    address: Optional[str] = None
    actors_per_node: int = 1
    gpus_per_actor: float = 0.0
    batch_size: int = 4
    log: Any = print

    def result_options(self) -> Dict[str, Any]:
        """The options a per-image result depends on (and the working folder is keyed by): not
        ``top``, the DIFT or the clustering, which a re-run may change freely."""
        per_image = {k: v for k, v in self.mining.items() if k not in ("top", "ensemble", "clusters", "restarts")}
        return {"format": 1, "model": _library.model_identity(self.model), "mining": per_image}


@dataclass
class Summary:
    """What a run did: images scored now or found in the working folder, the images skipped as
    unreadable ((path, label): reason), and where the actors ran."""

    scored: int = 0
    reused: int = 0
    skipped: Dict[Tuple[str, str], str] = field(default_factory=dict)
    nodes: Set[str] = field(default_factory=set)
    libraries: Set[str] = field(default_factory=set)
    seconds: float = 0.0
    #: Wall time of each stage: "typicality" (reading, keying and scoring), "top", "dift", "report"
    #: (clustering, ranking and writing the report).
    stages: Dict[str, float] = field(default_factory=dict)


# --- stage 1: reading and keying ---------------------------------------------------------------------

# Batches go between the stages as Arrow tables, whose missing values stay None (in numpy batches a
# column of only None becomes NaN floats).
READ_SCHEMA = pa.schema([("path", pa.string()), ("file", pa.string()), ("label", pa.string()), ("image_hash", pa.string()),
                         ("key", pa.string()), ("image", pa.binary()), ("error", pa.string())])
SUMMARY_SCHEMA = pa.schema([("key", pa.string()), ("path", pa.string()), ("label", pa.string()), ("scored", pa.bool_()),
                            ("error", pa.string()), ("worker", pa.string()), ("library", pa.string())])


def read_and_key(batch: pa.Table, digest: str, done: KeySet) -> pa.Table:
    """Reads each row's image and keys it; the bytes are dropped (None) where the key is done
    already, and a file that cannot be read at all carries its reason instead."""
    rows = []
    for row in batch.to_pylist():
        image, error, image_hash, key = None, None, "", ""
        try:
            with open(row["file"], "rb") as f:
                image = f.read()
            image_hash = hashlib.sha256(image).hexdigest()
            key = result_key(image_hash, digest, row["label"])
            if key in done:
                image = None
        except OSError as e:
            error = e.strerror or str(e)
        rows.append({**row, "image_hash": image_hash, "key": key, "image": image, "error": error})
    return pa.Table.from_pylist(rows, schema=READ_SCHEMA)


# --- stage 2: typicality and each image's boxes -----------------------------------------------------

class CandidatesWorker:
    """An actor of the typicality pool: opens the model once, then for each image that has bytes
    computes its map and best boxes, writes them to the working folder and passes on a summary."""

    def __init__(self, model: Dict[str, Any], mining: Dict[str, Any], workdir: str) -> None:
        import diffmine
        import ray

        self.model = _library.open_model(model)
        self.options = _library.mining_options(mining)
        self.workdir = Workdir(workdir)
        self.node = ray.get_runtime_context().get_node_id()
        self.library = diffmine.__file__

    def __call__(self, batch: pa.Table) -> pa.Table:
        results, summary = [], []
        for row in batch.to_pylist():
            scored, error = row["image"] is not None, row["error"]
            if scored:
                result = self._candidates(row)
                results.append(result)
                error = result["error"]
            summary.append({"key": row["key"], "path": row["path"], "label": row["label"], "scored": scored, "error": error,
                            "worker": self.node, "library": self.library})
        if results:
            self.workdir.write_part(CANDIDATES, pa.Table.from_pylist(results, schema=RESULT_SCHEMA))
        return pa.Table.from_pylist(summary, schema=SUMMARY_SCHEMA)

    def _candidates(self, row: Dict[str, Any]) -> Dict[str, Any]:
        result = {name: row[name] for name in ("key", "image_hash", "label", "path")}
        try:
            candidates, boxes = _library.image_candidates(self.model, row["image"], row["label"], self.options)
        except Exception as e:  # noqa: BLE001 - the library's errors are sorted by `unreadable`
            reason = _library.unreadable(e)
            if reason is None:
                raise
            return {**result, "boxes": [], "error": reason}
        return {**result, "height": candidates.height, "width": candidates.width,
                "boxes": boxes, "map": candidates.map.tobytes(),
                "map_height": candidates.map.shape[0], "map_width": candidates.map.shape[1], "error": None}


# --- stage 3: the global top per label --------------------------------------------------------------

CANDIDATE_SCHEMA = pa.schema([("label", pa.string()), ("path", pa.string()), ("key", pa.string()), ("x", pa.int64()),
                              ("y", pa.int64()), ("size", pa.int64()), ("score", pa.float64())])


def block_top(batch: Dict[str, np.ndarray], workdir: str, wanted: KeySet, top: int) -> pa.Table:
    """The best ``top`` boxes per label of a block of result files, among the results of this run's
    images (``wanted``). A key twice in a block counts once. Boxes carry the path their result was
    computed from; the driver maps keys to this run's paths."""
    files = Workdir(workdir)
    rows = [row for part in batch["part"] for row in files.read_part(part, ["key", "label", "path", "boxes", "error"]).to_pylist()]
    rows = [row for row in unique_rows(rows) if row["key"] in wanted and row["error"] is None]
    candidates = [_library.Candidate(row["label"], row["path"], row["key"], b["x"], b["y"], b["size"], b["score"])
                  for row in rows for b in row["boxes"]]
    return pa.Table.from_pylist([c._asdict() for c in _library.top_per_label(candidates, top)], schema=CANDIDATE_SCHEMA)


def unique_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The first row of each key."""
    seen: Set[str] = set()
    unique = []
    for row in rows:
        if row["key"] not in seen:
            seen.add(row["key"])
            unique.append(row)
    return unique


# --- stage 4: DIFT features of the kept boxes -------------------------------------------------------

FEATURES_SCHEMA = pa.schema([("path", pa.string()), ("label", pa.string()), ("features", pa.binary()), ("dim", pa.int32())])


class FeaturesWorker:
    """An actor of the DIFT pool: opens the model once, then computes the features of each image's
    kept boxes."""

    def __init__(self, model: Dict[str, Any], mining: Dict[str, Any]) -> None:
        self.model = _library.open_model(model)
        self.options = _library.mining_options(mining)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for row in batch.to_pylist():
            with open(row["file"], "rb") as f:
                image = f.read()
            features = _library.box_features(self.model, image, row["label"], row["boxes"], self.options)
            out.append({"path": row["path"], "label": row["label"], "features": features.tobytes(), "dim": features.shape[1]})
        return pa.Table.from_pylist(out, schema=FEATURES_SCHEMA)


# --- the driver ----------------------------------------------------------------------------------------

def run(settings: Settings) -> Summary:
    """Mines the set on the Ray cluster at ``settings.address`` (None: a local one) and writes the
    report; returns what was done."""
    import ray

    started = time.monotonic()
    workdir = Workdir(settings.workdir)
    digest = workdir.claim(settings.result_options())  # before anything else: a mismatch costs nothing
    rows = _listed_rows(settings.data)
    if not ray.is_initialized():
        ray.init(address=settings.address, logging_level="WARNING", log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # A model pool hands out its first batch only once every actor has loaded its model: otherwise the
    # first actor up takes the batches while the others still load, and the work does not spread over
    # the nodes. A pool that cannot be placed in that time fails the run with Ray's message instead of
    # running on fewer actors than asked.
    context.wait_for_min_actors_s = POOL_START_SECONDS
    nodes = [n for n in ray.nodes() if n["Alive"]]
    actors = max(1, settings.actors_per_node * len(nodes))
    summary = Summary()

    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        summary.stages[stage] = now - clock
        clock = now

    done = KeySet(workdir.read(CANDIDATES, columns=["key"]).column("key").to_pylist())
    listed = _score_new_images(ray, settings, rows, digest, done, actors, summary)
    lap("typicality")
    wanted: Dict[str, List[str]] = defaultdict(list)
    for row in listed:
        if row["key"] and row["error"] is None:
            wanted[row["key"]].append(row["path"])
    results = workdir.read(CANDIDATES, columns=["label", "error"], keys=wanted)
    failed = set()
    for row in results.to_pylist():
        if row["error"] is not None:
            failed.add(row["key"])
            summary.skipped.update({(path, row["label"]): row["error"] for path in wanted[row["key"]]})
    summary.reused = sum(1 for row in listed if not row["scored"] and row["key"] and row["key"] not in failed)
    kept = _global_top(ray, settings, workdir, wanted)
    _refuse_unreadable_labels(rows, kept, summary.skipped)
    lap("top")
    features = _kept_features(ray, settings, kept, actors)
    lap("dift")
    _write_report(settings, workdir, kept, features, summary.skipped)
    lap("report")
    summary.seconds = time.monotonic() - started
    return summary


def _listed_rows(data: str) -> List[Dict[str, str]]:
    """The set as ``diffmine mine`` lists it, a row per label an image has: ``path`` names the image
    as ``diffmine mine`` does (in results and the report), ``file`` is its absolute path, which
    workers on other machines (in other folders) read."""
    return [{"path": path, "file": os.path.abspath(path), "label": label}
            for path, labels in stages.list_set(data) for label in labels]


def _refuse_unreadable_labels(rows: List[Dict[str, str]], kept: List["_library.Candidate"],
                              skipped: Dict[Tuple[str, str], str]) -> None:
    """A label none of whose images could be read fails the run, as it fails ``diffmine mine``."""
    import diffmine

    for label in sorted({row["label"] for row in rows} - {c.label for c in kept}):
        names = sorted(path for path, skipped_label in skipped if skipped_label == label)
        if names:
            raise diffmine.InvalidData(diffmine.Status.ERR_INVALID_DATA,
                                       f"label `{label}`: no image could be read ({', '.join(names)}): {skipped[(names[0], label)]}")


def _actor_args(settings: Settings, actors: int) -> Dict[str, Any]:
    """An actor pool of ``actors`` actors spread over the nodes, each with its share of GPUs. Ray Data
    restarts a dead actor and retries its batches (its defaults: no limit); the results are keyed, so a
    retry only writes again what was written."""
    import ray

    # Ray Data places a pool's actors with its own default strategy, SPREAD (Ray core's default would
    # pack them onto the first node while it has room; passing the strategy through `ray_remote_args`
    # is deprecated in 2.60). One batch in flight per actor: a batch goes to an idle actor instead of
    # queueing behind a busy one (at SD 1.5 cost a batch is minutes of work), so every node gets its
    # share.
    pool = ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1)
    return {"compute": pool, "batch_size": settings.batch_size, "batch_format": "pyarrow",
            "num_cpus": 1, "num_gpus": settings.gpus_per_actor or None}


def _score_new_images(ray: Any, settings: Settings, rows: List[Dict[str, str]], digest: str, done: KeySet, actors: int,
                      summary: Summary) -> List[Dict[str, Any]]:
    """Stages 1 and 2; returns every row's key (or read error)."""
    dataset = (ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * actors)))
               .map_batches(read_and_key, fn_kwargs={"digest": digest, "done": done}, batch_size=settings.batch_size, batch_format="pyarrow",
                            num_cpus=0.25)
               .map_batches(CandidatesWorker, fn_constructor_kwargs={"model": settings.model, "mining": settings.mining,
                                                                     "workdir": settings.workdir}, **_actor_args(settings, actors)))
    listed = []
    for row in dataset.iter_rows():
        listed.append(row)
        if row["scored"] and row["error"] is None:
            summary.scored += 1
        if row["error"] is not None:
            summary.skipped[(row["path"], row["label"])] = row["error"]
        summary.nodes.add(row["worker"])
        summary.libraries.add(row["library"])
    return listed


def _global_top(ray: Any, settings: Settings, workdir: Workdir, wanted: Dict[str, List[str]]) -> List["_library.Candidate"]:
    """Stage 3: each block's top per label, then the merge of the blocks' tops on the driver, each box
    under every path of this run that has its image's bytes (a key reaches a block top once, so with
    several paths its boxes come in as often: the merge's top still holds every box that belongs)."""
    top = settings.mining.get("top", _library.default_top())
    parts = [{"part": part} for part in workdir.parts(CANDIDATES)]
    blocks = (ray.data.from_items(parts, override_num_blocks=max(1, min(len(parts), 64)))
              .map_batches(block_top, fn_kwargs={"workdir": settings.workdir, "wanted": KeySet(wanted), "top": top}, batch_size=None))
    # The same box may reach the merge from two blocks (a result written twice): once is enough.
    candidates = {_library.Candidate(**row)._replace(path="") for row in blocks.iter_rows()}
    return _library.top_per_label([c._replace(path=path) for c in candidates for path in wanted[c.key]], top)


def _kept_features(ray: Any, settings: Settings, kept: List["_library.Candidate"], actors: int) -> Dict[tuple, np.ndarray]:
    """Stage 4: the features of the kept boxes, by (path, label), a row per box in ``kept`` order."""
    by_image: Dict[tuple, List[Dict[str, int]]] = defaultdict(list)
    for c in kept:
        by_image[(c.path, c.label)].append({"x": c.x, "y": c.y, "size": c.size, "score": c.score})
    items = [{"path": path, "file": os.path.abspath(path), "label": label, "boxes": boxes} for (path, label), boxes in by_image.items()]
    dataset = (ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * actors)))
               .map_batches(FeaturesWorker, fn_constructor_kwargs={"model": settings.model, "mining": settings.mining},
                            **_actor_args(settings, actors)))
    features = {}
    for row in dataset.iter_rows():
        values = np.frombuffer(row["features"], dtype=np.float32)
        features[(row["path"], row["label"])] = values.reshape(-1, row["dim"])
    return features


def _write_report(settings: Settings, workdir: Workdir, kept: List["_library.Candidate"], features: Dict[tuple, np.ndarray],
                  skipped: Dict[Tuple[str, str], str]) -> None:
    """Stage 5: each label's kept boxes clustered and ranked, with the maps of their images and the
    label's skipped images, written as ``diffmine mine`` writes its report."""
    options = _library.mining_options(settings.mining)
    maps = workdir.read(CANDIDATES, columns=["map", "map_height", "map_width"], keys={c.key for c in kept})
    heat = {row["key"]: np.frombuffer(row["map"], dtype=np.float32).reshape(row["map_height"], row["map_width"])
            for row in maps.to_pylist()}
    rows: Dict[tuple, int] = defaultdict(int)
    labels = []
    for label in sorted({c.label for c in kept}):
        boxes = [c for c in kept if c.label == label]
        table = []
        for c in boxes:  # the features of an image's boxes come in the order of `kept`
            table.append(features[(c.path, label)][rows[(c.path, label)]])
            rows[(c.path, label)] += 1
        label_skipped = {path: reason for (path, skipped_label), reason in skipped.items() if skipped_label == label}
        labels.append(_library.label_report(label, boxes, np.stack(table), {c.path: heat[c.key] for c in boxes}, label_skipped,
                                            options))
    stages.write_report(settings.out, labels, options)
