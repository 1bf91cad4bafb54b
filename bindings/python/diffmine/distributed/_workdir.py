"""The working folder of a distributed mining run: a local path or any URI pyarrow or fsspec can open
(``s3://``, ``gs://``, ``hdfs://``, ``memory://``...). It holds ``options.json``, the options that
change per-image results, and ``<stage>/part-*.parquet`` files of per-image results, each written
whole (under a temporary name, then moved) by the worker that computed it. A result's key is a hash
of the image's bytes, of those options and of the label, so a re-run skips what is done, whatever
the order or the machine, and a result written twice (a retried task) is read once."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

MANIFEST = "options.json"


class OptionsMismatch(Exception):
    """The working folder holds results computed with other options."""


def options_hash(options: Dict[str, Any]) -> str:
    """A hash of the result-changing options, independent of their order."""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


def result_key(image_hash: str, options_digest: str, label: str) -> str:
    """The key of one image's result under ``label``: 128 bits of a SHA-256, as 32 hex digits."""
    return hashlib.sha256(f"{image_hash}\0{options_digest}\0{label}".encode()).hexdigest()[:32]


class KeySet:
    """A set of result keys small enough to hand to every task of a large run: a sorted array of 32
    bytes a key (58 MB for 1.8 M keys, where a Python set of strings takes about four times that)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = np.unique(np.array(list(keys), dtype="S32"))

    def __contains__(self, key: str) -> bool:
        at = int(np.searchsorted(self.keys, key.encode()))
        return at < len(self.keys) and self.keys[at] == key.encode()

    def __len__(self) -> int:
        return len(self.keys)


def _filesystem(uri: str) -> "tuple[pafs.FileSystem, str]":
    """The filesystem and path of ``uri``: pyarrow's own filesystems first, then fsspec's (any
    protocol it knows) through pyarrow's adapter."""
    if "://" not in uri:
        import os

        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


class Workdir:
    """A working folder opened from its URI (which is what travels to workers: each reopens it)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = _filesystem(uri)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def claim(self, options: Dict[str, Any]) -> str:
        """Records ``options`` in a new folder, or checks that an existing one was written with the
        same; returns their hash. A folder written with other options raises :class:`OptionsMismatch`
        naming the differences, so results of two settings are never mixed."""
        digest = options_hash(options)
        self.fs.create_dir(self.root, recursive=True)
        manifest = self._path(MANIFEST)
        if self.fs.get_file_info(manifest).type == pafs.FileType.File:
            with self.fs.open_input_stream(manifest) as f:
                stored = json.loads(f.read().decode())
            if stored.get("hash") != digest:
                before = stored.get("options", {})
                differences = [f"{name}: {before.get(name)!r} there, {options.get(name)!r} now"
                               for name in sorted(set(before) | set(options)) if before.get(name) != options.get(name)]
                raise OptionsMismatch(f"the working folder {self.uri} holds results computed with other options "
                                      f"({'; '.join(differences) or 'another format'}); use another --workdir")
            return digest
        self._write_atomically(manifest, json.dumps({"hash": digest, "options": options}, indent=1, sort_keys=True).encode())
        return digest

    def _write_atomically(self, path: str, data: bytes) -> None:
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(temporary) as f:
            f.write(data)
        self.fs.move(temporary, path)

    def write_part(self, stage: str, table: pa.Table) -> None:
        """Writes ``table`` as a new Parquet file of ``stage``, whole or not at all."""
        folder = self._path(stage)
        self.fs.create_dir(folder, recursive=True)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self._write_atomically(f"{folder}/part-{uuid.uuid4().hex}.parquet", sink.getvalue().to_pybytes())

    def parts(self, stage: str) -> List[str]:
        """The finished Parquet files of ``stage`` (temporary files of unfinished writes left out)."""
        selector = pafs.FileSelector(self._path(stage), allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(selector) if i.path.endswith(".parquet"))

    def read_part(self, part: str, columns: List[str]) -> pa.Table:
        """One result file's ``columns``."""
        with self.fs.open_input_file(part) as f:
            return pq.read_table(f, columns=columns)

    def read(self, stage: str, columns: Optional[List[str]] = None, keys: Optional[Iterable[str]] = None) -> pa.Table:
        """The results of ``stage`` (only ``keys`` when given), one row per key."""
        parts = self.parts(stage)
        if not parts:
            return pa.table({"key": pa.array([], pa.string())})
        dataset = pads.dataset(parts, filesystem=self.fs, format="parquet")
        wanted = None if columns is None else list(dict.fromkeys(["key", *columns]))
        where = None if keys is None else pads.field("key").isin(pa.array(list(keys), pa.string()))
        return unique_keys(dataset.to_table(columns=wanted, filter=where))


def unique_keys(table: pa.Table) -> pa.Table:
    """The first row of each key: a retried task may have written its results twice, identical."""
    if table.num_rows == 0:
        return table
    keys = table.column("key").to_pylist()
    first: Dict[str, int] = {}
    for row, key in enumerate(keys):
        first.setdefault(key, row)
    return table.take(pa.array(sorted(first.values()), pa.int64())) if len(first) < len(keys) else table
