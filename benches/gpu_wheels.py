#!/usr/bin/env python3
"""Rebuilds the wheels of installed pure-Python distributions from their installed files, for
benches/gpu_pack.sh: the GPU machine has no package registry, and this needs none either (the
test suite packs offline), while giving exactly the versions this venv runs.

Usage: gpu_wheels.py OUT_DIR NAME...

A wheel is the distribution's files as its RECORD lists them inside site-packages (compiled
__pycache__ files, the installer's own marks and scripts outside site-packages left out: pip
recreates scripts from entry_points.txt) with a fresh RECORD. Only distributions whose WHEEL file
says Root-Is-Purelib: true are packed; their tag is py3-none-any.
"""

import base64
import hashlib
import re
import sys
import zipfile
from importlib.metadata import distribution
from pathlib import Path

INSTALLER_FILES = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_files(name: str):
    dist = distribution(name)
    wheel_meta = dist.read_text("WHEEL") or ""
    if "Root-Is-Purelib: true" not in wheel_meta:
        raise SystemExit(f"{name} is not pure Python (its WHEEL file: {wheel_meta!r})")
    root = Path(dist.locate_file(""))
    for entry in dist.files or []:
        path = entry.as_posix()
        if path.startswith("..") or "__pycache__" in entry.parts or path.endswith(".pyc"):
            continue
        if entry.parts[0].endswith(".dist-info") and entry.name in INSTALLER_FILES:
            continue
        yield path, (root / entry).read_bytes()


def build(out_dir: Path, name: str) -> Path:
    dist = distribution(name)
    stem = f"{re.sub(r'[-_.]+', '_', dist.metadata['Name'])}-{dist.version}"
    info_dir = next(p.parts[0] for p in dist.files if p.parts[0].endswith(".dist-info"))
    target = out_dir / f"{stem}-py3-none-any.whl"
    partial = target.with_suffix(".partial")
    records = []
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in sorted(wheel_files(name)):
            wheel.writestr(path, data)
            records.append(f"{path},{record_hash(data)},{len(data)}")
        records.append(f"{info_dir}/RECORD,,")
        wheel.writestr(f"{info_dir}/RECORD", "\n".join(records) + "\n")
    partial.rename(target)
    return target


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:]:
        print(build(out_dir, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
