"""The binding's co-typicality miner (``diffmine.ParallelMiner``) on the Plug-and-Play fixture at toy
settings: an array gives the elements of its file, the results are a numpy structured array and a list
that agree with themselves (clusters ranked, members contiguous, each element's source label that of
its image), progress counts and cancels, bad input raises :class:`diffmine.Error` with a message, and
the report folder holds a CSV row per element, a strip per cluster and the page.

Run: python -m unittest test_parallel_miner -v
"""

from __future__ import annotations

from test_translate import pnp_folder, to_uint8  # first: it sets up sys.path for the package

import csv
import tempfile
import unittest
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from safetensors.numpy import load_file

import diffmine
from diffmine import Error, Status

LABELS = ["cars", "cats"]
TEMPLATE, NULL_PROMPT = "Image of {label}.", "An image."
# Two translation steps, two typicality samples, 4-pixel boxes: seconds on the CPU.
SMALL = dict(steps=2, inversion_steps=2, samples=2, batch=2, patch=4, per_set=2, top=3, ensemble=1, clusters=2,
             restarts=2, projection_dims=2)
# Each source: 2 inversion + 2 sampling steps, then typicality and DIFT of its 2 versions.
UNITS_PER_SOURCE = 8


class ParallelMinerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        folder = pnp_folder()
        cls.model = diffmine.Model(folder)
        # The reference's 16×24 source image as RGB8, and its mirror image.
        image = to_uint8(load_file(str(folder / "reference.safetensors"))["pnp.image"])[0]
        cls.sources = [(image, "cars"), (np.ascontiguousarray(image[:, ::-1]), "cats")]

    @classmethod
    def tearDownClass(cls) -> None:
        cls.model.close()

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.folder = Path(self.tmp.name)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def assertFails(self, status: Status, call, *needles: str) -> None:
        with self.assertRaises(Error) as caught:
            call()
        self.assertEqual(caught.exception.status, int(status), str(caught.exception))
        for needle in needles:
            self.assertIn(needle, caught.exception.message)

    def test_an_array_gives_the_elements_of_its_file_and_the_results_agree(self) -> None:
        calls = []
        file = self.folder / "first.png"
        PILImage.fromarray(self.sources[0][0]).save(file)
        with diffmine.ParallelMiner(self.model, LABELS, TEMPLATE, NULL_PROMPT, **SMALL) as files, \
                diffmine.ParallelMiner(self.model, LABELS, TEMPLATE, NULL_PROMPT, **SMALL) as arrays:
            files.add(file, "cars")
            files.add(self.sources[1][0], "cats", name="mirrored")
            for pixels, label in self.sources:
                arrays.add(pixels, label)
            files.run(progress=lambda done, total: calls.append((done, total)))
            arrays.run()
            total = 2 * UNITS_PER_SOURCE
            self.assertEqual(calls, [(done, total) for done in range(1, total + 1)])
            self.assertEqual(files.images, [str(file), "mirrored"])
            self.assertEqual(arrays.images, ["image-0", "image-1"])
            elements = files.elements
            self.assertEqual(elements.dtype, diffmine.parallel_miner.ELEMENT_DTYPE)
            np.testing.assert_array_equal(elements, arrays.elements)
            self.assertEqual(files.clusters, arrays.clusters)
            self.assertEqual(len(elements), 3, "the 3 best of 2 × 2 boxes")
            self.assertTrue((elements["size"] == 4).all())
            self.assertEqual(elements["source_label"].tolist(), [[0, 1][i] for i in elements["image"]])
            clusters = files.clusters
            medians = [c.median_typicality for c in clusters]
            self.assertEqual(medians, sorted(medians, reverse=True))
            self.assertEqual(sum(c.members for c in clusters), len(elements))
            for rank, c in enumerate(clusters):
                members = elements[c.first:c.first + c.members]
                self.assertTrue((members["cluster"] == rank).all())
                self.assertEqual(members["rank_in_cluster"].tolist(), list(range(c.members)))
                self.assertAlmostEqual(c.median_typicality, float(np.median(members["cotypicality"])), places=5)
            self.assertFails(Status.ERR_INVALID_ARGUMENT, files.run, "already succeeded")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: files.add(file, "cars"), "after a successful")
        self.assertFails(Status.ERR_INVALID_HANDLE, files.run, "closed")

    def test_a_false_progress_return_cancels_and_the_miner_runs_again(self) -> None:
        with diffmine.ParallelMiner(self.model, LABELS, TEMPLATE, NULL_PROMPT, **SMALL) as miner:
            miner.add(*self.sources[1])
            self.assertFails(Status.ERR_CANCELLED, lambda: miner.run(progress=lambda done, total: done < 3), "cancelled")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.elements, "dm_parallel_miner_run first")
            with self.assertRaises(KeyError):
                miner.run(progress=lambda done, total: {}["raised in the callback"])
            miner.run()
            self.assertEqual(len(miner.elements), 2, "one set's 2 boxes")
            self.assertTrue((miner.elements["source_label"] == 1).all())

    def test_the_report_holds_a_row_per_element_a_strip_per_cluster_and_the_page(self) -> None:
        report, versions = self.folder / "report", self.folder / "versions"
        with diffmine.ParallelMiner(self.model, LABELS, TEMPLATE, NULL_PROMPT, versions_dir=versions, **SMALL) as miner:
            for pixels, label in self.sources:
                miner.add(pixels, label)
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.write_report(report), "dm_parallel_miner_run first")
            miner.run()
            miner.write_report(report)
            elements, clusters = miner.elements, miner.clusters
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.write_report(report, strip=1), "unknown option(s) strip")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.write_report(report, per_strip=0), "per_strip")
            miner.write_report(self.folder / "one", strips=1, per_strip=1)

        with open(report / "elements.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), len(elements))
        self.assertEqual(len(rows), 3, "the 3 best of 2 × 2 boxes")
        for row, e in zip(rows, elements):
            self.assertEqual((int(row["set"]), row["image"], row["source_label"]), (e["image"], f"image-{e['image']}", LABELS[e["source_label"]]))
            self.assertEqual([int(row[k]) for k in ("x", "y", "size", "cluster_rank", "rank_in_cluster")],
                             [int(e[k]) for k in ("x", "y", "size", "cluster", "rank_in_cluster")])
            self.assertAlmostEqual(float(row["cotypicality"]), float(e["cotypicality"]), places=6)
        # A strip per cluster: 2 versions side by side, a row per member, cells of the 4-pixel box + 2.
        strips = sorted(p.name for p in report.glob("strip_*.png"))
        self.assertEqual(strips, [f"strip_{rank:02}.png" for rank in range(len(clusters))])
        for rank, cluster in enumerate(clusters):
            with PILImage.open(report / strips[rank]) as strip:
                self.assertEqual(strip.size, (2 * 6, cluster.members * 6))
        page = (report / "index.html").read_text()
        self.assertTrue(all(f'src="{name}"' in page for name in strips))
        self.assertEqual(sorted(p.name for p in (self.folder / "one").iterdir()), ["elements.csv", "index.html", "strip_00.png"])
        with PILImage.open(self.folder / "one" / "strip_00.png") as strip:
            self.assertEqual(strip.size, (12, 6))
        # The versions stay in the caller's folder: each source's own version is its pixels.
        self.assertEqual(len(list(versions.iterdir())), 2 * len(LABELS))
        for i, (pixels, label) in enumerate(self.sources):
            with PILImage.open(versions / f"{i:05}_{LABELS.index(label)}.png") as version:
                np.testing.assert_array_equal(np.asarray(version), pixels)

    def test_bad_input_raises_an_error_naming_the_problem(self) -> None:
        model = self.model
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.ParallelMiner(model, LABELS, TEMPLATE, clusterz=3), "clusterz")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.ParallelMiner(model, "cars", TEMPLATE), "not one string")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.ParallelMiner(model, ["cars"], TEMPLATE), "at least 2 labels")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.ParallelMiner(model, ["a", "a"], TEMPLATE), "repeats")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.ParallelMiner(model, LABELS, TEMPLATE, per_set=0),
                         "options.per_set")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.ParallelMiner(model, LABELS, TEMPLATE, latent="x"), "latent")
        self.assertFails(Status.ERR_INVALID_ARGUMENT,
                         lambda: diffmine.ParallelMiner(model, LABELS, TEMPLATE, steps=3, inversion_steps=2), "inversion steps")
        with diffmine.ParallelMiner(model, LABELS, TEMPLATE, NULL_PROMPT, **SMALL) as miner:
            self.assertFails(Status.ERR_INVALID_ARGUMENT, miner.run, "no images to mine")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.add(self.sources[0][0], "dogs"),
                             "label `dogs` is not one of the miner's labels (cars, cats)")
            self.assertFails(Status.ERR_IO, lambda: miner.add(self.folder / "missing.png", "cars"), "missing.png")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.add(42, "cars"), "path or a numpy array")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: miner.clusters, "dm_parallel_miner_run first")
            self.assertEqual(miner.images, [])


if __name__ == "__main__":
    unittest.main()
