"""The up-to-date check of the reference scripts whose outputs derive from the test fixtures:
OUT_DIR/.stamp holds a hash of the script and the fixtures' own stamp, so a rerun with both unchanged
exits before importing torch (seconds saved in every test that asks for the outputs)."""

import hashlib
import sys
from pathlib import Path
from typing import Callable


def stamp_for(script: str, upstream: Path) -> str:
    """The stamp of the outputs `script` makes from fixtures whose stamp file is `upstream`."""
    script_hash = hashlib.sha256(Path(script).read_bytes()).hexdigest()
    return script_hash + ":" + (upstream.read_text() if upstream.is_file() else "")


def exit_if_current(script: str, upstream_of: Callable[[Path], Path] = lambda fixtures: fixtures / ".stamp") -> None:
    """Ends the process when `script` runs as `SCRIPT FIXTURES OUT_DIR` and OUT_DIR's stamp is current;
    `upstream_of(FIXTURES)` is the fixtures' stamp file."""
    if len(sys.argv) == 3:
        stamp_file = Path(sys.argv[2]) / ".stamp"
        if stamp_file.is_file() and stamp_file.read_text() == stamp_for(script, upstream_of(Path(sys.argv[1]))):
            sys.exit(0)
