"""The binding's miner (``diffmine.Miner``) on the tiny fixture pipeline: arrays give the patches of their
files, the results are numpy arrays and lists that agree with themselves (clusters ranked, members
contiguous), the report folder is written, and bad input raises :class:`diffmine.Error` with a message.

Run: python -m unittest test_miner -v
"""

from __future__ import annotations

from test_model import fixtures  # first: it sets up sys.path for the package

import tempfile
import unittest
from pathlib import Path
from typing import List, Tuple

import numpy as np
from PIL import Image as PILImage

import diffmine
from diffmine import Error, Status

TEMPLATE, NULL_PROMPT = "Chest X-Ray with {label}.", "Chest X-Ray."
# The settings of tests/mining.rs: seconds on the CPU.
SMALL = dict(samples=2, batch=2, patch=16, top=12, ensemble=2, clusters=3, restarts=2)


def write_set(folder: Path) -> List[Tuple[Path, np.ndarray, str]]:
    """Three 64×64 RGB images per label, as PNG files, with their pixels and label."""
    rng = np.random.default_rng(0)
    items = []
    for label in ("Nodule", "Effusion"):
        for i in range(3):
            pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
            path = folder / f"{label}_{i}.png"
            PILImage.fromarray(pixels).save(path)
            items.append((path, pixels, label))
    return items


class MinerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.model = diffmine.Model(fixtures() / "sd15_tiny")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.model.close()

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.folder = Path(self.tmp.name)
        self.items = write_set(self.folder)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def assertFails(self, status: Status, call, *needles: str) -> None:
        with self.assertRaises(Error) as caught:
            call()
        self.assertEqual(caught.exception.status, int(status), str(caught.exception))
        for needle in needles:
            self.assertIn(needle, caught.exception.message)

    def test_arrays_give_the_patches_of_their_files_and_the_report_is_written(self) -> None:
        calls = []
        with diffmine.Miner(self.model, TEMPLATE, NULL_PROMPT, **SMALL) as files, \
                diffmine.Miner(self.model, TEMPLATE, NULL_PROMPT, **SMALL) as arrays:
            for path, pixels, label in self.items:
                files.add(path, label)
                arrays.add(pixels, label, name=str(path))
            files.run(progress=lambda done, total: calls.append((done, total)))
            arrays.run()
            self.assertEqual(calls[-1], (12, 12), "typicality and DIFT of six images")
            self.assertEqual(files.images, [str(p) for p, _, _ in self.items])
            self.assertEqual(arrays.images, files.images)
            results = files.results
            self.assertEqual([r.label for r in results], ["Effusion", "Nodule"])
            for ours, theirs in zip(results, arrays.results):
                self.assertEqual(ours.patches.dtype, diffmine.miner.PATCH_DTYPE)
                np.testing.assert_array_equal(ours.patches, theirs.patches)
                self.assertEqual(ours.clusters, theirs.clusters)
            for r in results:
                self.assertEqual(len(r.patches), 12)
                medians = [c.median_typicality for c in r.clusters]
                self.assertEqual(medians, sorted(medians, reverse=True))
                self.assertEqual(sum(c.members for c in r.clusters), len(r.patches))
                for rank, c in enumerate(r.clusters):
                    members = r.patches[c.first:c.first + c.members]
                    self.assertTrue((members["cluster"] == rank).all())
                    self.assertTrue((np.diff(members["distance"]) >= 0).all(), "closest to the centroid first")
                label_images = {i for i, (_, _, label) in enumerate(self.items) if label == r.label}
                self.assertLessEqual(set(r.patches["image"].tolist()), label_images)
            report = self.folder / "report"
            arrays.write_report(report)
            self.assertTrue((report / "index.html").is_file())
            self.assertTrue((report / "grid_Effusion.png").is_file())
            self.assertEqual(len((report / "patches.csv").read_text().splitlines()), 1 + 24)
            self.assertFails(Status.ERR_INVALID_ARGUMENT, files.run, "already succeeded")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: files.add(self.items[0][0], "Other"), "after a successful")
        self.assertFails(Status.ERR_INVALID_HANDLE, files.run, "closed")

    def test_a_false_progress_return_cancels_and_the_miner_runs_again(self) -> None:
        with diffmine.Miner(self.model, TEMPLATE, NULL_PROMPT, **SMALL) as miner:
            path, pixels, label = self.items[0]
            miner.add(pixels, label)
            self.assertFails(Status.ERR_CANCELLED, lambda: miner.run(progress=lambda done, total: False), "cancelled")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.results, "dm_miner_run first")
            with self.assertRaises(KeyError):
                miner.run(progress=lambda done, total: {}["raised in the callback"])
            miner.run()
            self.assertEqual(miner.images, ["image-0"])
            self.assertEqual([r.label for r in miner.results], [label])

    def test_bad_input_raises_an_error_naming_the_problem(self) -> None:
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.Miner(self.model, TEMPLATE, clusterz=3), "clusterz")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.Miner(self.model, TEMPLATE, clusters=0), "options.clusters")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.Miner(self.model, TEMPLATE, top=-1), "`top`")
        with diffmine.Miner(self.model, TEMPLATE, NULL_PROMPT, resize=None, cache_dir=self.folder / "cache", **SMALL) as miner:
            self.assertFails(Status.ERR_INVALID_ARGUMENT, miner.run, "no images to mine")
            self.assertFails(Status.ERR_IO, lambda: miner.add(self.folder / "missing.png", "Mass"), "missing.png")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.add(self.items[0][0], " "), "`label` is empty")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.add(self.items[0][0], "Mass", name="x"), "`name`")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.add(42, "Mass"), "path or a numpy array")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.add(np.zeros((4, 4, 2), np.uint8), "Mass"), "2 channels")
            miner.add(self.items[0][1], "Mass", name="a")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.add(self.items[1][1], "Mass", name="a"), "`a` was already added")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.write_report(self.folder / "r"), "dm_miner_run first")


if __name__ == "__main__":
    unittest.main()
