"""The Python binding against the reference outputs of diffusers/transformers on the random-weight
fixture pipelines (tests/reference/make_fixtures.py), and its error reporting.

Run: DIFFMINE_LIB=target/release/libdiffmine.so python -m unittest discover -s bindings/python/tests -v
Fixtures: $DIFFMINE_FIXTURES, else the repository's target/fixtures (built here if missing).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest
from pathlib import Path
from typing import Dict

import numpy as np
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "bindings" / "python"))

import diffmine  # noqa: E402
from diffmine import Error, Status, _lib  # noqa: E402

CONFIGS = ("sd15_tiny", "sd2_tiny")
TOLERANCE = 1e-4

# The exception class of each status and the built-in it also derives from (None: Error alone).
FAMILIES = {
    Status.ERR_NULL_ARGUMENT: (diffmine.InvalidArgument, ValueError),
    Status.ERR_INVALID_HANDLE: (diffmine.InvalidHandle, ValueError),
    Status.ERR_INVALID_ARGUMENT: (diffmine.InvalidArgument, ValueError),
    Status.ERR_BUFFER_TOO_SMALL: (diffmine.BufferTooSmall, BufferError),
    Status.ERR_IO: (diffmine.FileError, OSError),
    Status.ERR_INVALID_MODEL: (diffmine.ModelError, None),
    Status.ERR_CORRUPT_WEIGHTS: (diffmine.ModelError, None),
    Status.ERR_MISSING_TENSOR: (diffmine.ModelError, None),
    Status.ERR_SHAPE_MISMATCH: (diffmine.ModelError, None),
    Status.ERR_UNSUPPORTED: (diffmine.Unsupported, NotImplementedError),
    Status.ERR_DEVICE: (diffmine.DeviceError, RuntimeError),
    Status.ERR_OUT_OF_MEMORY: (diffmine.OutOfMemory, MemoryError),
    Status.ERR_CANCELLED: (diffmine.Cancelled, None),
    Status.ERR_TORCH: (diffmine.TorchError, RuntimeError),
    Status.ERR_INTERNAL: (diffmine.InternalError, RuntimeError),
    Status.ERR_INVALID_DATA: (diffmine.InvalidData, ValueError),
}


def assert_family(test: unittest.TestCase, err: BaseException, status: Status) -> None:
    """``err`` is the exception class of ``status`` and its built-in."""
    family, builtin = FAMILIES[status]
    test.assertIsInstance(err, family, f"{err!r} for {status.name}")
    if builtin is not None:
        test.assertIsInstance(err, builtin, f"{err!r} for {status.name}")


def fixtures() -> Path:
    folder = Path(os.environ.get("DIFFMINE_FIXTURES", REPO / "target" / "fixtures"))
    if not all((folder / c / "reference.safetensors").is_file() for c in CONFIGS):
        subprocess.run([sys.executable, str(REPO / "tests" / "reference" / "make_fixtures.py"), str(folder)], check=True)
    return folder


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - b| / max |b|, as the Rust parity tests measure it."""
    assert actual.shape == expected.shape, f"shapes differ: {actual.shape} vs {expected.shape}"
    a, b = actual.astype(np.float64), expected.astype(np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(np.float64).tiny))


class Case:
    """One fixture pipeline: its model, reference tensors and reference.json."""

    def __init__(self, name: str) -> None:
        folder = fixtures() / name
        self.name, self.folder = name, folder
        self.model = diffmine.Model(folder)
        self.ref: Dict[str, np.ndarray] = load_file(str(folder / "reference.safetensors"))
        self.json = json.loads((folder / "reference.json").read_text())


CASES: Dict[str, Case] = {}


def setUpModule() -> None:
    for name in CONFIGS:
        CASES[name] = Case(name)


def tearDownModule() -> None:
    for case in CASES.values():
        case.model.close()


def to_unit_image(tensor: np.ndarray) -> np.ndarray:
    """A reference VAE input (1, 3, H, W) in [-1, 1] as an H×W×3 float32 image in [0, 1]."""
    return np.ascontiguousarray(((tensor[0] + 1) / 2).transpose(1, 2, 0), dtype=np.float32)


class ParityTest(unittest.TestCase):
    def assertClose(self, actual: np.ndarray, expected: np.ndarray, what: str, tolerance: float = TOLERANCE) -> None:
        err = relative_error(actual, expected)
        self.assertLessEqual(err, tolerance, f"{what}: relative error {err:.3e}")

    def test_info(self) -> None:
        for case in CASES.values():
            info = case.model.info
            self.assertEqual(info.latent_channels, 4)
            self.assertEqual(info.max_tokens, 77)
            self.assertEqual(info.text_embedding_dim, case.ref["text_embeddings.0"].shape[1])
            self.assertEqual(info.train_steps, 1000)
            self.assertAlmostEqual(info.scaling_factor, case.json["scaling_factor"], places=6)
            decoded, decode_in = case.ref["vae.0.decoded"], case.ref["vae.0.decode_in"]
            self.assertEqual(info.vae_scale_factor, decoded.shape[2] // decode_in.shape[2])
            self.assertIn(info.prediction_type, ("epsilon", "v_prediction"))

    def test_tokens_equal_transformers(self) -> None:
        for case in CASES.values():
            for i, text in enumerate(case.json["texts"]):
                with self.subTest(config=case.name, text=text):
                    self.assertEqual(case.model.tokenize(text), case.ref[f"tokens.{i}"].tolist())

    def test_text_embeddings_equal_transformers(self) -> None:
        for case in CASES.values():
            texts = case.json["texts"]
            for i in case.json["embedded_texts"]:
                actual = case.model.text_embeddings(texts[i])
                self.assertEqual(actual.dtype, np.float32)
                self.assertClose(actual, case.ref[f"text_embeddings.{i}"], f"{case.name} text {i}")

    def test_encode_equals_diffusers_posterior_mean(self) -> None:
        for case in CASES.values():
            for j in range(case.json["vae_images"]):
                actual = case.model.encode(to_unit_image(case.ref[f"vae.{j}.image"]))
                self.assertEqual(actual.dtype, np.float32)
                self.assertClose(actual, case.ref[f"vae.{j}.latent_mean"][0], f"{case.name} encode {j}")

    def test_decode_equals_diffusers_rounded_to_bytes(self) -> None:
        for case in CASES.values():
            for j in range(case.json["vae_images"]):
                actual = case.model.decode(case.ref[f"vae.{j}.decode_in"][0])
                decoded = case.ref[f"vae.{j}.decoded"][0].transpose(1, 2, 0).astype(np.float64)
                expected = np.round(np.clip(decoded / 2 + 0.5, 0, 1) * 255)
                self.assertEqual(actual.dtype, np.uint8)
                self.assertEqual(actual.shape, expected.shape)
                worst = np.abs(actual.astype(np.float64) - expected).max()
                self.assertLessEqual(worst, 1, f"{case.name} decode {j}: off by {worst} levels")

    def test_predict_noise_equals_diffusers_unet(self) -> None:
        for case in CASES.values():
            for k in range(case.json["unet_cases"]):
                get = lambda what: case.ref[f"unet.{k}.{what}"]  # noqa: E731
                actual = case.model.predict_noise(get("latents"), get("timesteps"), get("encoder_hidden_states"))
                self.assertEqual(actual.dtype, np.float32)
                self.assertClose(actual, get("noise_pred"), f"{case.name} unet case {k}")


class ConventionsTest(unittest.TestCase):
    """The binding's conveniences agree with the plain form of each call."""

    case: Case

    @classmethod
    def setUpClass(cls) -> None:
        cls.case = CASES["sd15_tiny"]

    def image(self) -> np.ndarray:
        return to_unit_image(self.case.ref["vae.1.image"])  # 24×40, not square

    def test_strided_and_copied_layouts_encode_like_a_packed_image(self) -> None:
        model, image = self.case.model, self.image()
        expected = model.encode(image)
        canvas = np.zeros((30, 50, 4), np.float32)
        canvas[3:27, 5:45, :3] = image
        crop = canvas[3:27, 5:45, :3]  # rows 50·4 floats apart, pixels 4 floats apart: copied
        self.assertFalse(crop.flags.c_contiguous)
        np.testing.assert_array_equal(model.encode(crop), expected)
        rows = np.zeros((24, 47, 3), np.float32)
        rows[:, :40] = image
        np.testing.assert_array_equal(model.encode(rows[:, :40]), expected)  # a row stride, no copy
        np.testing.assert_array_equal(model.encode(image[::-1][::-1]), expected)  # negative strides
        np.testing.assert_array_equal(model.encode(np.asfortranarray(image)), expected)
        self.assertClose(model.encode(image.astype(np.float64)), expected)
        big_endian = image.astype(">f4")
        np.testing.assert_array_equal(model.encode(big_endian), expected)

    def test_pixel_formats_agree(self) -> None:
        model = self.case.model
        q = np.round(self.image() * 255).astype(np.uint8)
        as_float = model.encode(q.astype(np.float32) / np.float32(255))
        self.assertClose(model.encode(q), as_float, "uint8 vs float32", 1e-6)
        self.assertClose(model.encode(q.astype(np.uint16) * 257), as_float, "uint16 vs float32", 1e-6)
        alpha = np.random.default_rng(0).integers(0, 256, q.shape[:2] + (1,), dtype=np.uint8)
        np.testing.assert_array_equal(model.encode(np.concatenate([q, alpha], axis=2)), model.encode(q))
        grey = q[:, :, 1]
        np.testing.assert_array_equal(model.encode(grey), model.encode(np.repeat(grey[:, :, None], 3, axis=2)))
        np.testing.assert_array_equal(model.encode(grey[:, :, None]), model.encode(grey))

    def test_odd_image_sizes_get_the_latent_size_the_library_states(self) -> None:
        model = self.case.model
        for h, w in [(2, 2), (13, 17), (31, 2), (3, 64)]:
            image = np.random.default_rng(h * w).random((h, w, 3), dtype=np.float32)
            latents = model.encode(image)
            self.assertEqual(latents.shape, (4,) + model.latent_size(h, w), f"{h}×{w}")

    def test_an_image_too_small_for_the_encoder_is_an_error_not_a_crash(self) -> None:
        # A 1-pixel side is below what the VAE's padded stride-2 convolution takes. The library reports
        # it as DM_ERR_TORCH (libtorch's message) although dm_model_latent_size accepts 1×1; only the
        # fact that it fails cleanly is asserted here.
        with self.assertRaises(Error) as caught:
            self.case.model.encode(np.zeros((1, 1, 3), np.uint8))
        self.assertIn(caught.exception.status, (Status.ERR_INVALID_ARGUMENT, Status.ERR_TORCH))

    def test_decode_takes_a_batch_of_one(self) -> None:
        z = self.case.ref["vae.0.decode_in"]
        np.testing.assert_array_equal(self.case.model.decode(z), self.case.model.decode(z[0]))

    def test_prompt_and_timestep_forms_agree(self) -> None:
        model = self.case.model
        x = self.case.ref["unet.1.latents"]  # batch 2
        text = "Chest X-Ray with Effusion."
        context = model.text_embeddings(text)
        full = model.predict_noise(x, np.array([7, 7]), np.stack([context, context]))
        np.testing.assert_array_equal(model.predict_noise(x, [7, 7], text), full)
        np.testing.assert_array_equal(model.predict_noise(x, 7, context), full)
        np.testing.assert_array_equal(model.predict_noise(x, np.int32(7), text), full)

    def assertClose(self, actual: np.ndarray, expected: np.ndarray, what: str = "", tolerance: float = 1e-5) -> None:
        err = relative_error(actual, expected)
        self.assertLessEqual(err, tolerance, f"{what}: relative error {err:.3e}")

    def test_threads_share_a_model(self) -> None:
        model = self.case.model
        texts = self.case.json["texts"][:4]
        serial = [model.text_embeddings(t) for t in texts]
        results: Dict[int, np.ndarray] = {}

        def work(i: int) -> None:
            for _ in range(3):
                results[i] = model.text_embeddings(texts[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(4):
            np.testing.assert_array_equal(results[i], serial[i])


class ErrorTest(unittest.TestCase):
    def assertFails(self, status: Status, call, *needles: str) -> Error:
        with self.assertRaises(Error) as caught:
            call()
        err = caught.exception
        self.assertEqual(err.status, int(status), str(err))
        assert_family(self, err, status)
        self.assertTrue(err.message, "the library gave no message")
        for needle in needles:
            self.assertIn(needle, err.message)
        self.assertIn("DM_" + status.name, str(err))
        return err

    def test_nonexistent_folder(self) -> None:
        missing = os.path.join(tempfile.gettempdir(), "diffmine-no-such-model")
        self.assertFails(Status.ERR_IO, lambda: diffmine.Model(missing), "diffmine-no-such-model")

    def test_not_a_model_folder(self) -> None:
        with tempfile.TemporaryDirectory() as empty:
            with self.assertRaises(Error) as caught:
                diffmine.Model(empty)
            self.assertIn(caught.exception.status, (Status.ERR_IO, Status.ERR_INVALID_MODEL))

    def test_unknown_device(self) -> None:
        folder = fixtures() / "sd15_tiny"
        self.assertFails(Status.ERR_DEVICE, lambda: diffmine.Model(folder, device="tpu"), "tpu")

    def test_unknown_dtype(self) -> None:
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.Model(fixtures() / "sd15_tiny", dtype="int8"))

    def test_float16_on_cpu(self) -> None:
        folder = fixtures() / "sd15_tiny"
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.Model(folder, dtype="float16"), "float16")

    def test_missing_component_override(self) -> None:
        folder = fixtures() / "sd15_tiny"
        with self.assertRaises(Error) as caught:
            diffmine.Model(folder, unet=folder / "no-such-unet")
        self.assertIn(caught.exception.status, (Status.ERR_IO, Status.ERR_INVALID_MODEL))
        self.assertIn("no-such-unet", caught.exception.message)

    def test_closed_model(self) -> None:
        model = diffmine.Model(fixtures() / "sd15_tiny")
        address = model._handle
        with model:
            model.tokenize("x")
        self.assertTrue(model.closed)
        model.close()  # idempotent
        self.assertFails(Status.ERR_INVALID_HANDLE, lambda: model.text_embeddings("x"))
        self.assertFails(Status.ERR_INVALID_HANDLE, lambda: model.decode(np.zeros((4, 2, 2))))
        # The library itself rejects the freed address (nothing was opened since, so it is not reused).
        out = np.empty(77 * model.info.text_embedding_dim, np.float32)
        status = _lib.lib().dm_model_text_embeddings(address, b"x", out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out.size)
        self.assertEqual(status, Status.ERR_INVALID_HANDLE)
        self.assertIn("not a live handle", _lib.last_error())

    def test_wrong_latent_shapes(self) -> None:
        model = CASES["sd15_tiny"].model
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.decode(np.zeros((3, 8, 8))), "latents")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.decode(np.zeros((8, 8))))
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.decode(np.zeros((4, 0, 8))))
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.predict_noise(np.zeros((1, 3, 8, 8)), [1], "x"), "latents")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.predict_noise(np.zeros((4, 8, 8)), [1], "x"))

    def test_wrong_timesteps_and_embeddings(self) -> None:
        model = CASES["sd15_tiny"].model
        x = np.zeros((2, 4, 8, 8), np.float32)
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.predict_noise(x, [1000], "x"), "timesteps")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.predict_noise(x, [-1], "x"), "timesteps")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.predict_noise(x, [1, 2, 3], "x"), "timesteps")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.predict_noise(x, [0.5], "x"), "timesteps")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.predict_noise(x, [1], np.zeros((3, 77, 32))))
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.predict_noise(x, [1], np.zeros((77, 31))))

    def test_embedded_nul(self) -> None:
        model = CASES["sd15_tiny"].model
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.tokenize("a\0b"), "NUL")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: diffmine.Model("a\0b"), "NUL")

    def test_bad_images(self) -> None:
        model = CASES["sd15_tiny"].model
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.encode(np.zeros((8, 0, 3), np.uint8)), "zero")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.encode(np.zeros((8, 8, 2), np.uint8)), "channels")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.encode(np.zeros((8, 8, 3), np.int32)), "int32")
        self.assertFails(Status.ERR_INVALID_ARGUMENT, lambda: model.encode(np.zeros((1, 8, 8, 3), np.uint8)))

    def test_library_lookup(self) -> None:
        saved = os.environ.get("DIFFMINE_LIB")
        try:
            os.environ["DIFFMINE_LIB"] = "/nonexistent/libdiffmine.so"
            with self.assertRaises(OSError) as caught:
                _lib.library_path()
            self.assertIn("/nonexistent/libdiffmine.so", str(caught.exception))
        finally:
            if saved is None:
                del os.environ["DIFFMINE_LIB"]
            else:
                os.environ["DIFFMINE_LIB"] = saved
        if saved:  # the suite runs against the library it was pointed at (tests/python_binding.rs sets it)
            self.assertEqual(_lib.library_path(), saved)
        else:
            self.assertTrue(_lib.library_path())

    def test_version_is_cargo_tomls(self) -> None:
        import tomllib

        cargo = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]
        self.assertEqual(diffmine.version(), cargo)
        self.assertEqual(diffmine.__version__, cargo)


if __name__ == "__main__":
    unittest.main()


def models_fixtures() -> Path:
    """Single files and a LoRA adapter with diffusers' outputs (tests/reference/models_reference.py)."""
    folder = REPO / "target" / "models_fixtures"
    subprocess.run([sys.executable, str(REPO / "tests" / "reference" / "models_reference.py"), str(fixtures()), str(folder)], check=True)
    return folder


class SingleFileAndLoraTest(unittest.TestCase):
    def test_a_single_file_equals_its_folder_and_a_lora_equals_diffusers(self) -> None:
        models = models_fixtures()
        folder = fixtures() / "sd15_tiny"
        reference = load_file(str(models / "lora" / "reference.safetensors"))
        settings = json.loads((models / "lora" / "reference.json").read_text())
        with diffmine.Model(folder) as plain, diffmine.Model(models / "single" / "sd15_tiny.safetensors", config=folder) as single:
            base = plain.text_embeddings(settings["prompt"])
            np.testing.assert_allclose(single.text_embeddings(settings["prompt"]), base, atol=1e-6)
            single.load_lora(models / "lora" / "peft" / "pytorch_lora_weights.safetensors", scale=settings["scale"])
            np.testing.assert_allclose(single.text_embeddings(settings["prompt"]), reference["adapted.text_embeddings"][0], atol=TOLERANCE)
            single.unload_lora()
            np.testing.assert_array_equal(single.text_embeddings(settings["prompt"]), base)
            with self.assertRaises(Error) as raised:
                single.load_lora(models / "single" / "sd2_tiny.safetensors")
            self.assertEqual(raised.exception.status, Status.ERR_INVALID_ARGUMENT)
