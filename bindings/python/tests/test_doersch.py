"""The discriminative baseline through the binding (``diffmine.doersch``): on a small set made by
``diffmine synth``, its report must be ``diffmine doersch``'s with the same options (patches.csv byte for
byte), a progress callback that returns False cancels and leaves nothing written, and bad arguments
raise the library's errors before any work.

Run: python -m unittest test_doersch -v
"""

from __future__ import annotations

from test_model import REPO  # first: it sets up sys.path for the package

import os
import subprocess
import tempfile
import unittest
from pathlib import Path
from typing import List, Tuple

import diffmine

# Small enough for seconds on a shared CPU, and named once for both entry points.
SMALL = dict(candidates=200, detectors=4, negatives=200, negative_pool=400, final_neighbours=8, keep=3, seed=7)


def cli() -> Path:
    """The diffmine command built beside the library under test."""
    return Path(os.environ.get("DIFFMINE_LIB", REPO / "target" / "release" / "libdiffmine.so")).parent / "diffmine"


def cli_flags() -> List[str]:
    return [part for name, value in SMALL.items() for part in (f"--{name.replace('_', '-')}", str(value))]


@unittest.skipUnless(cli().is_file(), "the diffmine command is not built")
class DoerschTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory()
        cls.work = Path(cls.tmp.name)
        cls.data = cls.work / "set"
        subprocess.run([str(cli()), "synth", "-q", "--out", str(cls.data), "--per-label", "5", "--size", "128",
                        "--seed", "2"], check=True)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.tmp.cleanup()

    def test_the_report_equals_the_commands_with_the_same_options(self) -> None:
        calls: List[Tuple[int, int]] = []
        ours = self.work / "python"
        diffmine.doersch(self.data, ours, progress=lambda done, total: calls.append((done, total)) is None, **SMALL)
        theirs = self.work / "cli"
        subprocess.run([str(cli()), "doersch", "-q", "--data", str(self.data), "--out", str(theirs), *cli_flags()],
                       check=True, stdout=subprocess.DEVNULL)
        patches = (ours / "patches.csv").read_text()
        self.assertGreater(len(patches.splitlines()), 1, "the report lists detections")
        self.assertEqual(patches, (theirs / "patches.csv").read_text())
        self.assertTrue((ours / "index.html").is_file())
        self.assertEqual(calls[-1][0], calls[-1][1], "progress ends at its total")
        self.assertEqual([done for done, _ in calls], sorted(done for done, _ in calls), "progress never goes back")

    def test_a_progress_callback_returning_false_cancels_and_writes_nothing(self) -> None:
        out = self.work / "cancelled"
        with self.assertRaises(diffmine.Cancelled):
            diffmine.doersch(self.data, out, progress=lambda done, total: False, **SMALL)
        self.assertFalse(out.exists())

    def test_bad_arguments_raise_the_librarys_errors(self) -> None:
        out = self.work / "bad"
        with self.assertRaisesRegex(diffmine.InvalidArgument, "candidates"):
            diffmine.doersch(self.data, out, **{**SMALL, "candidates": 0})
        with self.assertRaisesRegex(diffmine.Error, "no such folder"):
            diffmine.doersch(self.data / "no such folder", out, **SMALL)
        with self.assertRaises(diffmine.InvalidArgument):
            diffmine.doersch(self.data, out, **{**SMALL, "keep": -1})
        self.assertFalse(out.exists())


if __name__ == "__main__":
    unittest.main()
