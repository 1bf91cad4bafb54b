"""Model.translate and Model.generate on the Plug-and-Play fixture (tests/reference/translate_reference.py):
the translation of the reference image equals diffusers' decoded result at the reference's settings,
the reconstruction equals a VAE round trip, progress counts and cancels, bad input raises
diffmine.Error with the library's status. Few steps throughout, so the module runs in seconds.

Fixture: $DIFFMINE_TRANSLATE_FIXTURES, else the repository's target/translate_fixtures (built from the
sd15_tiny fixture pipeline if missing; the script's stamp makes reruns free).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from safetensors.numpy import load_file

from test_model import REPO, fixtures

import diffmine  # noqa: E402
from diffmine import Error, Status  # noqa: E402

FAST = {"steps": 2, "inversion_steps": 2}


def pnp_folder() -> Path:
    out = Path(os.environ.get("DIFFMINE_TRANSLATE_FIXTURES", REPO / "target" / "translate_fixtures"))
    script = REPO / "tests" / "reference" / "translate_reference.py"
    subprocess.run([sys.executable, str(script), str(fixtures() / "sd15_tiny"), str(out)], check=True)
    return out / "sd15_pnp"


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Decoder outputs (N, 3, H, W) about [-1, 1] as N×H×W×3 uint8, rounded as the library renders them."""
    return np.round(np.clip(images / 2 + 0.5, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)


class TranslateTest(unittest.TestCase):
    model: diffmine.Model
    ref: Dict[str, np.ndarray]
    json: dict
    image: np.ndarray

    @classmethod
    def setUpClass(cls) -> None:
        folder = pnp_folder()
        cls.model = diffmine.Model(folder)
        cls.ref = load_file(str(folder / "reference.safetensors"))
        cls.json = json.loads((folder / "reference.json").read_text())
        # The reference's VAE input (1, 3, H, W) in [-1, 1] as an H×W×3 float image in [0, 1].
        cls.image = np.ascontiguousarray(((cls.ref["pnp.image"][0] + 1) / 2).transpose(1, 2, 0), dtype=np.float32)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.model.close()

    def targets(self) -> List[str]:
        return list(self.json["target_prompts"])

    def assertWithinLevels(self, actual: np.ndarray, expected: np.ndarray, levels: int, what: str) -> None:
        self.assertEqual(actual.shape, expected.shape, what)
        worst = int(np.abs(actual.astype(np.int16) - expected.astype(np.int16)).max())
        self.assertLessEqual(worst, levels, f"{what}: differs by up to {worst} grey levels")

    def test_translation_equals_the_diffusers_reference_at_its_settings(self) -> None:
        j = self.json
        images, reconstruction = self.model.translate(
            self.image, j["source_prompt"], self.targets(), steps=j["sampling_steps"],
            inversion_steps=j["inversion_steps"], guidance=j["guidance"], resnet_injection=j["resnet_fraction"],
            attention_injection=j["attention_fraction"], return_reconstruction=True)
        height, width = self.image.shape[:2]
        self.assertEqual(images.shape, (2, height, width, 3))
        self.assertEqual(images.dtype, np.uint8)
        # The Rust tests hold the decoded images within 1e-3 relative of diffusers': a level at most.
        self.assertWithinLevels(images, to_uint8(self.ref["pnp.images"]), 1, "translations")
        # The reconstruction is the source's posterior mean decoded: a VAE round trip.
        round_trip = self.model.decode(self.model.encode(self.image))
        self.assertWithinLevels(reconstruction, round_trip, 0, "reconstruction")

    def test_one_prompt_is_one_target_and_targets_do_not_change_each_other(self) -> None:
        source = self.json["source_prompt"]
        together = self.model.translate(self.image, source, self.targets(), **FAST)
        for i, target in enumerate(self.targets()):
            alone = self.model.translate(self.image, source, target, **FAST)
            self.assertEqual(alone.shape, (1,) + together.shape[1:])
            # Batching changes float rounding at most.
            self.assertWithinLevels(alone[0], together[i], 1, f"target {i} alone vs in a batch")

    def test_progress_counts_unet_calls_and_cancels(self) -> None:
        seen: List[Tuple[int, int]] = []
        self.model.translate(self.image, "a", ["b"], steps=2, inversion_steps=4, progress=lambda d, t: seen.append((d, t)))
        self.assertEqual(seen, [(d, 6) for d in range(1, 7)])
        with self.assertRaises(Error) as caught:
            self.model.translate(self.image, "a", ["b"], progress=lambda d, t: d < 3, **FAST)
        self.assertEqual(caught.exception.status, Status.ERR_CANCELLED)

        def fail(done: int, total: int) -> None:
            raise KeyError("from the callback")

        with self.assertRaises(KeyError):
            self.model.translate(self.image, "a", ["b"], progress=fail, **FAST)
        self.assertEqual(self.model.translate(self.image, "a", "b", **FAST).shape[0], 1, "model usable after a cancel")

    def test_bad_translate_input_raises_invalid_argument_saying_what_is_wrong(self) -> None:
        cases = [
            ("no targets", {"targets": []}, "no target prompts"),
            ("a None target", {"targets": ["b", None]}, "targets[1]"),
            ("negative guidance", {"guidance": -1.0}, "guidance"),
            ("NaN guidance", {"guidance": float("nan")}, "guidance"),
            ("resnet fraction > 1", {"resnet_injection": 1.5}, "resnet_injection"),
            ("attention fraction < 0", {"attention_injection": -0.1}, "attention_injection"),
            ("zero steps", {"steps": 0}, "steps"),
            ("negative steps", {"steps": -1}, "steps"),
            ("inversion missing sampling timesteps", {"steps": 10, "inversion_steps": 7}, "inversion steps"),
            ("unknown latent", {"latent": "median"}, "latent"),
            ("NUL in a prompt", {"targets": ["b\0c"]}, "NUL"),
        ]
        for what, change, expected in cases:
            arguments = {"image": self.image, "source_prompt": "a", "targets": ["b"], **FAST, **change}
            with self.subTest(what), self.assertRaises(Error) as caught:
                self.model.translate(**arguments)
            self.assertEqual(caught.exception.status, Status.ERR_INVALID_ARGUMENT, f"{what}: {caught.exception}")
            self.assertIn(expected, caught.exception.message, what)

    def test_generate_gives_one_image_per_prompt_seeded(self) -> None:
        prompts = self.targets()
        first = self.model.generate(prompts, steps=3, height=16, width=24)
        self.assertEqual(first.shape, (2, 16, 24, 3))
        self.assertEqual(first.dtype, np.uint8)
        np.testing.assert_array_equal(first, self.model.generate(prompts, steps=3, height=16, width=24))
        other_seed = self.model.generate(prompts, steps=3, height=16, width=24, seed=7)
        self.assertFalse(np.array_equal(first, other_seed), "the seed changed nothing")
        self.assertEqual(self.model.generate("one prompt", steps=1, height=16, width=24).shape, (1, 16, 24, 3))

    def test_bad_generate_input_raises_invalid_argument(self) -> None:
        cases = [
            ("no prompts", {"prompts": []}, "no prompts"),
            ("zero steps", {"steps": 0}, "steps"),
            ("infinite guidance", {"guidance": float("inf")}, "guidance"),
            ("a zero side", {"height": 0}, "too small"),
        ]
        for what, change, expected in cases:
            arguments = {"prompts": ["a"], "steps": 1, "height": 16, "width": 24, **change}
            with self.subTest(what), self.assertRaises(Error) as caught:
                self.model.generate(**arguments)
            self.assertEqual(caught.exception.status, Status.ERR_INVALID_ARGUMENT, f"{what}: {caught.exception}")
            self.assertIn(expected, caught.exception.message, what)


if __name__ == "__main__":
    unittest.main()
