"""The binding's data-mining calls: typicality maps against the diffusers reference loop on the fixture
pipelines (same noise and timesteps), progress and cancellation (also by an exception in the callback),
bad arguments, patch selection against a brute-force NumPy reference, and finetuning on a tiny
generated image set.

Run: DIFFMINE_LIB=target/release/libdiffmine.so python -m unittest discover -s bindings/python/tests -v
"""

from __future__ import annotations

import math
import tempfile
import unittest
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from test_model import CONFIGS, Case, assert_family, fixtures, relative_error, to_unit_image

import diffmine
from diffmine import Error, Status

TOLERANCE = 1e-4
PROMPT, NULL_PROMPT = "Chest X-Ray with Effusion.", "Chest X-Ray."

CASES: Dict[str, Case] = {}


def setUpModule() -> None:
    for name in CONFIGS:
        CASES[name] = Case(name)


def tearDownModule() -> None:
    for case in CASES.values():
        case.model.close()


class Assertions(unittest.TestCase):
    def assertClose(self, actual: np.ndarray, expected: np.ndarray, what: str, tolerance: float = TOLERANCE) -> None:
        err = relative_error(actual, expected)
        self.assertLessEqual(err, tolerance, f"{what}: relative error {err:.3e}")

    def assertFails(self, status: Status, call, *needles: str) -> Error:
        with self.assertRaises(Error) as caught:
            call()
        err = caught.exception
        self.assertEqual(err.status, int(status), str(err))
        assert_family(self, err, status)
        self.assertTrue(err.message, "the library gave no message")
        for needle in needles:
            self.assertIn(needle, err.message)
        return err


class TypicalityTest(Assertions):
    def test_map_and_losses_equal_the_diffusers_loop_with_the_same_draws(self) -> None:
        for case in CASES.values():
            with self.subTest(config=case.name):
                prompt, null_prompt = case.json["typicality_prompts"]
                timesteps, noise = case.ref["typicality.timesteps"], case.ref["typicality.noise"]
                image = to_unit_image(case.ref["vae.0.image"])
                typicality, losses = case.model.typicality(
                    image, prompt, null_prompt, latent="mean", timesteps=timesteps, noise=noise, batch=4,
                    return_losses=True)
                self.assertEqual(typicality.dtype, np.float32)
                self.assertEqual(typicality.shape, image.shape[:2])
                self.assertEqual(losses.dtype, np.float32)
                self.assertEqual(losses.shape, (len(timesteps), 2) + noise.shape[2:])
                self.assertClose(typicality, case.ref["typicality.map"], f"{case.name} map")
                self.assertClose(losses, case.ref["typicality.sample_losses"], f"{case.name} sample losses")
                # The map alone, with the explicit number of samples, is the same (the same batches: other
                # batch sizes agree only up to float rounding, see test_batch_sizes_1_and_10_give_the_same_map).
                alone = case.model.typicality(image, prompt, null_prompt, samples=len(timesteps), latent="mean",
                                              timesteps=list(timesteps), noise=noise, batch=4)
                np.testing.assert_array_equal(alone, typicality)

    def test_batch_sizes_1_and_10_give_the_same_map(self) -> None:
        case = CASES["sd15_tiny"]
        image = to_unit_image(case.ref["vae.1.image"])  # 24×40, not square
        full = case.model.typicality(image, PROMPT, NULL_PROMPT, samples=10, batch=10)
        self.assertEqual(full.shape, (24, 40))
        self.assertTrue(np.isfinite(full).all())
        self.assertClose(case.model.typicality(image, PROMPT, NULL_PROMPT, samples=10, batch=1), full, "batch 1 vs 10")
        other_seed = case.model.typicality(image, PROMPT, NULL_PROMPT, samples=10, seed=43)
        self.assertGreater(relative_error(other_seed, full), 1e-3, "another seed draws other noise")

    def test_resize_sets_the_map_size(self) -> None:
        case = CASES["sd15_tiny"]
        image = to_unit_image(case.ref["vae.1.image"])  # 24×40
        typicality, losses = case.model.typicality(image, PROMPT, samples=2, batch=2, resize=16, return_losses=True)
        self.assertEqual(typicality.shape, (16, 27))  # the shorter side 16, the other 40·16/24 rounded
        self.assertEqual(losses.shape, (2, 2) + case.model.latent_size(16, 27))
        self.assertTrue(np.isfinite(typicality).all())

    def test_progress_reports_each_batch_and_false_cancels(self) -> None:
        model = CASES["sd15_tiny"].model
        image = to_unit_image(CASES["sd15_tiny"].ref["vae.0.image"])
        seen: List[Tuple[int, int]] = []
        expected = model.typicality(image, PROMPT, samples=5, batch=2)
        result = model.typicality(image, PROMPT, samples=5, batch=2, progress=lambda done, total: seen.append((done, total)))
        self.assertEqual(seen, [(2, 5), (4, 5), (5, 5)])
        np.testing.assert_array_equal(result, expected)  # None continues; the callback changes nothing
        self.assertEqual(model.typicality(image, PROMPT, samples=5, batch=2, progress=lambda d, t: True).shape, expected.shape)

        calls: List[int] = []

        def cancel_after_first(done: int, total: int) -> bool:
            calls.append(done)
            return False

        self.assertFails(Status.ERR_CANCELLED, lambda: model.typicality(image, PROMPT, samples=5, batch=2, progress=cancel_after_first))
        self.assertEqual(calls, [2], "no batch runs after a cancel")
        # The model is still usable, and gives the same map.
        np.testing.assert_array_equal(model.typicality(image, PROMPT, samples=5, batch=2), expected)

    def test_an_exception_in_the_callback_cancels_and_is_re_raised(self) -> None:
        model = CASES["sd15_tiny"].model
        image = to_unit_image(CASES["sd15_tiny"].ref["vae.0.image"])
        calls: List[int] = []

        class Stop(Exception):
            pass

        def explode(done: int, total: int) -> None:
            calls.append(done)
            raise Stop(f"stop at {done}")

        with self.assertRaises(Stop) as caught:
            model.typicality(image, PROMPT, samples=4, batch=1, progress=explode)
        self.assertEqual(str(caught.exception), "stop at 1")
        self.assertEqual(calls, [1], "the library stopped at the first batch")
        # KeyboardInterrupt too: it must not be lost in the C frames.
        with self.assertRaises(KeyboardInterrupt):
            model.typicality(image, PROMPT, samples=2, batch=1, progress=lambda d, t: (_ for _ in ()).throw(KeyboardInterrupt()))
        # A result that cannot be judged true or false is an exception of the callback as well.
        with self.assertRaises(ValueError):
            model.typicality(image, PROMPT, samples=2, batch=1, progress=lambda d, t: np.array([1, 2]))
        self.assertTrue(np.isfinite(model.typicality(image, PROMPT, samples=2, batch=2)).all())

    def test_bad_arguments_are_invalid(self) -> None:
        case = CASES["sd15_tiny"]
        model, image = case.model, to_unit_image(case.ref["vae.0.image"])
        noise, timesteps = case.ref["typicality.noise"], case.ref["typicality.timesteps"]
        invalid = Status.ERR_INVALID_ARGUMENT
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, samples=0), "at least 1")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, samples=2, t_range=(0.7, 0.1)), "t_min < t_max")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, samples=2, t_range=(0.1, 1.5)))
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, samples=2, t_range=0.5))
        self.assertFails(invalid, lambda: model.typicality(image, "", samples=2), "label prompt is empty")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, samples=2, batch=0), "batch")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, noise=noise), "together")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, timesteps=timesteps), "together")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, timesteps=timesteps[:3], noise=noise), "noise")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, timesteps=timesteps, noise=noise[:, :, :8]), "noise")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, timesteps=timesteps * 1.0, noise=noise), "timesteps")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, samples=4, timesteps=timesteps, noise=noise))
        out_of_range = np.array(timesteps)
        out_of_range[0] = 1000
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, timesteps=out_of_range, noise=noise), "1000")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, samples=2, latent="median"), "median")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, samples=-1), "samples")
        self.assertFails(invalid, lambda: model.typicality(image, PROMPT, samples=2.5), "samples")
        self.assertFails(invalid, lambda: model.typicality(image, "a\0b", samples=2), "NUL")
        with self.assertRaisesRegex(TypeError, "callable"):
            model.typicality(image, PROMPT, samples=2, progress=42)
        self.assertFails(invalid, lambda: model.typicality(np.zeros((8, 0, 3), np.uint8), PROMPT, samples=2))
        self.assertTrue(np.isfinite(model.typicality(image, PROMPT, samples=1)).all(), "still usable")

    def test_closed_model(self) -> None:
        model = diffmine.Model(fixtures() / "sd15_tiny")
        model.close()
        self.assertFails(Status.ERR_INVALID_HANDLE, lambda: model.typicality(np.zeros((8, 8, 3), np.uint8), PROMPT))


def reference_patches(values: np.ndarray, k: int, max_boxes: int) -> List[Tuple[int, int, int, float]]:
    """The obvious algorithm: every k×k window's mean by direct summation (float64, compared as the
    library's float32 scores), candidates best first with ties to the lowest row then column, each
    taken unless its corner lies within k of a taken one's on both axes."""
    height, width = values.shape
    windows = np.lib.stride_tricks.sliding_window_view(values.astype(np.float64), (k, k))
    scores = (windows.sum(axis=(2, 3)) / (k * k)).astype(np.float32)
    ys, xs = np.meshgrid(np.arange(height - k + 1), np.arange(width - k + 1), indexing="ij")
    order = np.lexsort((xs.ravel(), ys.ravel(), -scores.ravel().astype(np.float64)))
    taken: List[Tuple[int, int, int, float]] = []
    for i in order:
        if len(taken) == max_boxes:
            break
        y, x = int(ys.ravel()[i]), int(xs.ravel()[i])
        if all(abs(y - ty) > k or abs(x - tx) > k for tx, ty, _, _ in taken):
            taken.append((x, y, k, float(scores.ravel()[i])))
    return taken


class PatchesTest(Assertions):
    def test_equal_to_a_brute_force_reference_on_random_maps(self) -> None:
        rng = np.random.default_rng(7)
        for case in range(40):
            height, width = int(rng.integers(8, 48)), int(rng.integers(8, 48))
            k = int(rng.integers(1, min(height, width) // 2 + 1))
            max_boxes = int(rng.integers(1, 8))
            values = rng.standard_normal((height, width)).astype(np.float32)
            with self.subTest(case=case, height=height, width=width, k=k, max_boxes=max_boxes):
                boxes = diffmine.select_patches(values, patch=k, max_boxes=max_boxes)
                expected = reference_patches(values, k, max_boxes)
                self.assertEqual([b[:3] for b in boxes], [e[:3] for e in expected])
                for box, (_, _, _, score) in zip(boxes, expected):
                    self.assertTrue(math.isclose(box.score, score, rel_tol=1e-5, abs_tol=1e-6), f"{box} vs {score}")
                    self.assertIsInstance(box, tuple)

    def test_a_hand_made_map(self) -> None:
        values = np.zeros((10, 12), np.float32)
        values[6:9, 7:10] = 2.0  # the best 3×3 window: x 7, y 6, mean 2
        values[0:3, 0:3] = 1.0   # the second: x 0, y 0, mean 1
        boxes = diffmine.select_patches(values, patch=3, max_boxes=2)
        self.assertEqual(boxes, [diffmine.Box(7, 6, 3, 2.0), diffmine.Box(0, 0, 3, 1.0)])
        self.assertEqual(boxes[0].score, 2.0)
        # A constant map: ties go to the lowest row, then column, and a touching box is dropped.
        flat = diffmine.select_patches(np.ones((10, 10)), patch=3, max_boxes=3)
        self.assertEqual([(b.x, b.y) for b in flat], [(0, 0), (4, 0), (0, 4)])
        # Integer maps are converted; a map of the patch's size has one window.
        self.assertEqual(diffmine.select_patches(np.arange(16).reshape(4, 4), patch=4), [(0, 0, 4, 7.5)])
        self.assertEqual(diffmine.select_patches(values, patch=3, max_boxes=0), [])

    def test_bad_arguments(self) -> None:
        invalid = Status.ERR_INVALID_ARGUMENT
        self.assertFails(invalid, lambda: diffmine.select_patches(np.zeros((4, 4)), patch=5), "patch size")
        self.assertFails(invalid, lambda: diffmine.select_patches(np.zeros((4, 4)), patch=0), "patch size")
        self.assertFails(invalid, lambda: diffmine.select_patches(np.zeros(16), patch=2), "H×W")
        self.assertFails(invalid, lambda: diffmine.select_patches(np.zeros((4, 4)), patch=-2), "patch")


def write_image_set(root: Path) -> None:
    """Two labels in folders, two small PNGs each (sizes that need resizing and cropping)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, (height, width) in (("Effusion", (40, 48)), ("No Finding", (48, 36))):
        (root / label).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")


class FinetuneTest(Assertions):
    def test_two_steps_write_a_folder_that_opens(self) -> None:
        case = CASES["sd15_tiny"]
        with tempfile.TemporaryDirectory() as tmp:
            data, out, checkpoints = Path(tmp) / "data", Path(tmp) / "finetuned", Path(tmp) / "checkpoints"
            write_image_set(data)
            seen: List[Tuple[int, int, float]] = []
            result = diffmine.finetune(
                case.folder, data, out, steps=2, batch_size=2, resolution=32, seed=3,
                caption_template="Chest X-Ray with {label}.", checkpoint_every=1, checkpoint_dir=checkpoints,
                progress=lambda step, total, loss: seen.append((step, total, loss)))
            self.assertEqual(result, str(out))
            self.assertEqual([(s, t) for s, t, _ in seen], [(1, 2), (2, 2)])
            self.assertTrue(all(math.isfinite(loss) and loss > 0 for _, _, loss in seen), seen)
            with diffmine.Model(out) as tuned:
                self.assertEqual(tuned.info, case.model.info)
                x = case.ref["unet.0.latents"]
                t, context = case.ref["unet.0.timesteps"], case.ref["unet.0.encoder_hidden_states"]
                after = tuned.predict_noise(x, t, context)
                self.assertTrue(np.isfinite(after).all())
                self.assertGreater(relative_error(after, case.model.predict_noise(x, t, context)), 0, "the UNet changed")
            # Resuming from the first step's checkpoint runs only the second and ends at the same weights.
            resumed_out = Path(tmp) / "resumed"
            resumed: List[int] = []
            diffmine.finetune(
                case.folder, data, resumed_out, steps=2, batch_size=2, resolution=32, seed=3,
                caption_template="Chest X-Ray with {label}.", resume=checkpoints / "checkpoint-1",
                progress=lambda step, total, loss: resumed.append(step))
            self.assertEqual(resumed, [2])
            with diffmine.Model(resumed_out) as again, diffmine.Model(out) as tuned:
                np.testing.assert_array_equal(again.predict_noise(x, t, context), tuned.predict_noise(x, t, context))

    def test_gradient_checkpointing_keeps_the_loss_and_bf16_autocast_changes_it_slightly(self) -> None:
        case = CASES["sd15_tiny"]
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            write_image_set(data)

            def first_loss(name: str, **options) -> float:
                seen: List[float] = []
                diffmine.finetune(case.folder, data, Path(tmp) / name, steps=1, batch_size=2, resolution=32, seed=3,
                                  progress=lambda step, total, loss: seen.append(loss), **options)
                return seen[0]

            plain = first_loss("plain")
            self.assertEqual(first_loss("checkpointed", gradient_checkpointing=True), plain)
            bf16 = first_loss("bf16", autocast="bfloat16", gradient_checkpointing=True)
            self.assertNotEqual(bf16, plain)
            self.assertLess(abs(bf16 - plain), 1e-2 * plain)
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: first_loss("bad", autocast="float8"), "autocast")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: first_loss("f16", autocast="float16"), "loss scaling")

    def test_lora_training_writes_an_adapter_the_model_loads(self) -> None:
        case = CASES["sd15_tiny"]
        with tempfile.TemporaryDirectory() as tmp:
            data, out = Path(tmp) / "data", Path(tmp) / "lora"
            write_image_set(data)
            diffmine.finetune(case.folder, data, out, steps=2, batch_size=2, resolution=32, seed=3,
                              lora_rank=2, lora_alpha=4.0, lora_targets=["to_q", "to_v"])
            self.assertEqual(sorted(p.name for p in out.iterdir()), ["pytorch_lora_weights.safetensors"])
            x = case.ref["unet.0.latents"]
            t, context = case.ref["unet.0.timesteps"], case.ref["unet.0.encoder_hidden_states"]
            with diffmine.Model(case.folder) as model:
                base = model.predict_noise(x, t, context)
                model.load_lora(out / "pytorch_lora_weights.safetensors")
                self.assertGreater(relative_error(model.predict_noise(x, t, context), base), 0, "the adapter was trained")
            run = lambda **kw: diffmine.finetune(case.folder, data, Path(tmp) / "bad", steps=1, batch_size=1, resolution=32, **kw)  # noqa: E731
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: run(lora_rank=0), "rank must be at least 1")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: run(lora_rank=4, lora_targets=["to_q", "ff"]), "unknown LoRA target ff")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: run(lora_alpha=2.0), "need `lora_rank`")
            self.assertFalse((Path(tmp) / "bad").exists())

    def test_cancel_and_bad_arguments(self) -> None:
        case = CASES["sd15_tiny"]
        with tempfile.TemporaryDirectory() as tmp:
            data, out = Path(tmp) / "data", Path(tmp) / "out"
            write_image_set(data)
            run = lambda **kw: diffmine.finetune(case.folder, data, out, **{"steps": 2, "batch_size": 2, "resolution": 32, **kw})  # noqa: E731
            self.assertFails(Status.ERR_CANCELLED, lambda: run(progress=lambda step, total, loss: False))

            class Stop(Exception):
                pass

            def explode(step: int, total: int, loss: float) -> None:
                raise Stop()

            with self.assertRaises(Stop):
                run(progress=explode)
            self.assertFalse(out.exists(), "a cancelled run writes no output folder")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: run(steps=0), "steps")
            self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: run(batch_size=-1), "batch_size")
            self.assertFails(Status.ERR_DEVICE, lambda: run(device="tpu"), "tpu")
            with self.assertRaises(Error) as caught:
                diffmine.finetune(case.folder, Path(tmp) / "no-such-data", out, steps=1, batch_size=1, resolution=32)
            self.assertIn(caught.exception.status, (Status.ERR_IO, Status.ERR_INVALID_ARGUMENT, Status.ERR_INVALID_DATA))


if __name__ == "__main__":
    unittest.main()
