"""The mining stages one by one (``diffmine.stages``), composed by hand as a cluster runs them: a small
set made by ``diffmine synth``, the demo model, images in a shuffled order, the best boxes chosen per
block of two images and then over the blocks' best, features fetched image by image in yet another
order, the samples drawn away from every default (t range, latent, antithetic pairs, strata). The
result must be ``diffmine mine``'s on the same set with the same options: its patches.csv byte for byte
(the same kept boxes, scores, clusters and distances), and both reports name the unreadable image they
skipped. The set's listing is the folders' and the default label prompt the command's.

Run: python -m unittest test_stages -v
"""

from __future__ import annotations

from test_model import REPO  # first: it sets up sys.path for the package

import os
import random
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path
from typing import Dict, List

import numpy as np

import diffmine
from diffmine import stages

DEMO = REPO / "models" / "demo"
PROMPT = "Chest X-Ray with {label}."
# Small enough for seconds per image on a shared CPU.
SMALL = dict(samples=2, batch=2, patch=16, per_image=3, top=5, ensemble=2, clusters=2, restarts=2)
LABELS = ("Effusion", "Nodule")
# How the samples are drawn, away from every default, so that each option must reach the library.
SAMPLING = dict(t_range=(0.2, 0.6), latent="mean", antithetic=True, stratified=True)
SAMPLING_FLAGS = ["--t-min=0.2", "--t-max=0.6", "--latent=mean", "--antithetic", "--stratified"]


def cli() -> Path:
    """The diffmine command built beside the library under test."""
    return Path(os.environ.get("DIFFMINE_LIB", REPO / "target" / "release" / "libdiffmine.so")).parent / "diffmine"


@unittest.skipUnless(cli().is_file(), "the diffmine command is not built")
class StagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory()
        work = Path(cls.tmp.name)
        cls.data = work / "set"
        subprocess.run([str(cli()), "synth", "-q", "--out", str(cls.data), "--per-label", "2", "--seed", "3"], check=True)
        for folder in cls.data.iterdir():
            if folder.is_dir() and folder.name not in LABELS:
                shutil.rmtree(folder)
        cls.broken = cls.data / "Nodule" / "00000000_broken.png"
        cls.broken.write_bytes(b"not a png")
        cls.mined = work / "mined"
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
        run = subprocess.run(
            [str(cli()), "mine", "--model", str(DEMO / "finetuned"), "--base", str(DEMO / "pretrained"), "--data",
             str(cls.data), "--out", str(cls.mined), "--prompt", PROMPT, *flags, *SAMPLING_FLAGS],
            capture_output=True, text=True, check=True)
        cls.cli_output = run.stdout + run.stderr
        cls.model = diffmine.Model(DEMO / "pretrained", unet=DEMO / "finetuned" / "unet")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.model.close()
        cls.tmp.cleanup()

    def label_images(self, label: str) -> List[str]:
        return sorted(str(p) for p in (self.data / label).iterdir())

    def test_the_stages_composed_in_any_order_give_diffmine_mines_result(self) -> None:
        options = stages.MiningOptions(PROMPT, **SMALL, **SAMPLING)
        rng = random.Random(1)
        reports = []
        for label in LABELS:
            images = self.label_images(label)
            rng.shuffle(images)
            candidates: Dict[str, stages.ImageCandidates] = {}
            skipped: Dict[str, str] = {}
            for image in images:
                try:
                    pixels = stages.read_pixels(image)
                except diffmine.Error as e:
                    skipped[image] = str(e)
                    continue
                candidates[image] = stages.image_candidates(self.model, pixels, label, options)
            block_best_names: List[str] = []
            block_best_boxes = []
            for start in range(0, len(images), 2):
                names = [n for n in images[start:start + 2] if n in candidates for _ in candidates[n].boxes]
                boxes = np.concatenate([candidates[n].boxes for n in images[start:start + 2] if n in candidates])
                best = stages.top_candidates(names, boxes, SMALL["top"])
                block_best_names += [names[i] for i in best]
                block_best_boxes.append(boxes[best])
            boxes = np.concatenate(block_best_boxes)
            kept = stages.top_candidates(block_best_names, boxes, SMALL["top"])
            kept_names, kept_boxes = [block_best_names[i] for i in kept], boxes[kept]
            # Features image by image, the images in reverse name order, the rows in that order.
            names_in, boxes_in, rows = [], [], []
            for image in sorted(set(kept_names), reverse=True):
                mine = np.array([n == image for n in kept_names])
                rows.append(stages.box_features(self.model, image, label, kept_boxes[mine], options))
                names_in += [image] * int(mine.sum())
                boxes_in.append(kept_boxes[mine])
            boxes_in = np.concatenate(boxes_in)
            clustering = stages.cluster(names_in, boxes_in, np.concatenate(rows), options)
            self.assertEqual(sorted(clustering.patches["candidate"].tolist()), list(range(len(names_in))))
            maps = {n: candidates[n].map for n in set(kept_names)}
            reports.append(stages.LabelReport(label, names_in, boxes_in, clustering, maps, skipped))
        self.assertEqual(list(reports[1].skipped), [str(self.broken)])
        out = Path(self.tmp.name) / "staged"
        stages.write_report(out, reports, options)
        self.assertEqual((out / "patches.csv").read_text(), (self.mined / "patches.csv").read_text())
        for folder in (out, self.mined):
            html = (folder / "index.html").read_text()
            self.assertIn("1 unreadable image skipped", html)
            self.assertIn(self.broken.name, html)
        self.assertIn("Nodule: 5 patches, 2 clusters, 1 unreadable image skipped", self.cli_output)
        self.assertIn(self.broken.name, self.cli_output, "the command's log names the skipped image")

    def test_the_set_is_listed_as_its_folders_hold_it(self) -> None:
        expected = [(str(path), [label]) for label in sorted(LABELS) for path in sorted((self.data / label).iterdir())]
        self.assertEqual(stages.list_set(self.data), expected)
        with self.assertRaisesRegex(diffmine.Error, "no such set"):
            stages.list_set(self.data / "no such set")

    def test_the_default_label_prompt_is_the_commands(self) -> None:
        help_text = subprocess.run([str(cli()), "mine", "--help"], capture_output=True, text=True, check=True).stdout
        default = stages.default_options().prompt_template.decode()
        self.assertIn(f"[default: \"{default}\"]", help_text)

    def test_the_best_boxes_do_not_depend_on_their_order_or_blocks(self) -> None:
        names = [f"img{i % 3}" for i in range(12)]
        boxes = np.zeros(12, dtype=stages.BOX_DTYPE)
        boxes["x"], boxes["y"], boxes["size"] = np.arange(12) % 4, np.arange(12) // 4, 2
        boxes["score"] = [1, 2, 2, 0, 1, 2, 2, 1, 0, 2, 1, 2]
        everything = [(names[i], boxes[i]["x"], boxes[i]["y"]) for i in stages.top_candidates(names, boxes, 5)]
        order = np.random.default_rng(0).permutation(12)
        shuffled = [names[i] for i in order]
        best = stages.top_candidates(shuffled, boxes[order], 5)
        self.assertEqual([(shuffled[i], boxes[order][i]["x"], boxes[order][i]["y"]) for i in best], everything)

    def test_bad_input_is_an_error_with_a_message(self) -> None:
        options = stages.MiningOptions(PROMPT, **SMALL)
        with self.assertRaises(diffmine.InvalidArgument):
            stages.MiningOptions(PROMPT, sample=3)
        with self.assertRaises(diffmine.InvalidArgument) as caught:
            stages.top_candidates(["a"], np.zeros(2, dtype=stages.BOX_DTYPE), 1)
        self.assertIn("1 image names for 2 boxes", str(caught.exception))
        with self.assertRaises(diffmine.InvalidArgument) as caught:
            stages.cluster(["a"], np.zeros(1, dtype=stages.BOX_DTYPE), np.zeros((2, 4)), options)
        with self.assertRaises((diffmine.FileError, diffmine.InvalidData)):
            stages.read_pixels(self.broken)
        with self.assertRaises(diffmine.InvalidArgument):
            stages.image_candidates(self.model, np.zeros((4, 4, 3), dtype=np.uint8), "", options)


if __name__ == "__main__":
    unittest.main()
