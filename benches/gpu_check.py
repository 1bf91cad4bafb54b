#!/usr/bin/env python3
"""Correctness half of benches/gpu.sh: every operation of the library on DEVICE, in each compute dtype,
against the same operation on the CPU in float32, through the Python binding (the library named by
DIFFMINE_LIB).

Usage: gpu_check.py DEVICE FIXTURES_DIR DEMO_DIR CLI OUT.jsonl

DEVICE is "cuda" (dtypes float32, float16, bfloat16) or "cpu": there float32 would be compared with
itself and float16 is a CUDA dtype, so only bfloat16 is checked, at fewer samples and on one
pipeline (the test suite's run of the script, tests/gpu_script.rs, and where the half-precision
bounds below were measured). FIXTURES_DIR holds the random-weight test pipelines sd15_tiny and sd2_tiny; DEMO_DIR the demo
model (pretrained/ and finetuned/unet); CLI the diffmine command (its `synth` makes the demo's image).
Per pipeline and dtype it compares text embeddings, VAE encode and decode, one UNet call, a typicality
map, DIFT features (a miner's cached feature map), one finetuning step (bfloat16 autocast, with and
without gradient checkpointing: the first loss, the second loss and the first update of the UNet's
weights) and a Plug-and-Play translation; on the demo model (trained weights, where a map means
something) the typicality map's correlation with the float32 map. One JSON line per check:
{"kind": "check", "check", "model", "dtype", "metric", "value", "bound", "ok"}. Exits 1 when a check
fails, after running every check.

Metrics: `rel` is max|x - ref| / max|ref| (for uint8 images, mean|x - ref| / 255, the share of the
range by which a pixel differs on average: float rounding flips single levels); `agree` the cosine of
the first AdamW update against the reference's (Adam's first step is about -lr * sign(gradient), so
this is the share of the UNet's weights whose gradient sign agrees); `corr` Pearson's correlation.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

import diffmine

PROMPT, NULL_PROMPT = "a photo of a cat", ""
SIZE = 64
FINETUNE_STEPS, FINETUNE_BATCH = 2, 2


class Setting:
    """What a run checks. The pipelines map to the checks beyond inference each gets: Plug-and-Play
    needs the SD 1.5 UNet's injection sites (sd15_pnp has them)."""

    def __init__(self, device: str):
        self.device = device
        if device == "cpu":
            self.dtypes = ["bfloat16"]
            self.pipelines = {"sd15_pnp": {"translate", "finetune"}}
            self.samples, self.batch, self.translate_steps, self.demo_samples = 4, 4, 3, 20
            self.finetune_autocasts = ["bfloat16"]
        else:
            self.dtypes = ["float32", "float16", "bfloat16"]
            self.pipelines = {"sd15_tiny": {"finetune"}, "sd2_tiny": set(), "sd15_pnp": {"translate"}}
            self.samples, self.batch, self.translate_steps, self.demo_samples = 8, 4, 5, 100
            self.finetune_autocasts = ["float32", "bfloat16"]

# float32 on another device: the same arithmetic in another order (and other kernels), so 1e-4 of the
# range. Half precisions: measured on the CPU (bfloat16 against float32 on these pipelines, see
# BENCHMARKS.md "GPU"), with headroom; float16 keeps 3 more mantissa bits than bfloat16, so bfloat16's
# bounds hold for it too. Chained computations (a translation: 2 x TRANSLATE_STEPS UNet calls feeding
# each other; a finetuning step: forward, backward, update) get the wider bounds.
F32_BOUND = 1e-4
HALF_BOUNDS = {
    "text_embeddings": 0.05,
    "encode": 0.05,
    "decode": 0.02,
    "unet": 0.05,
    "typicality": 0.25,
    "dift": 0.1,
    "translate": 0.05,
    "finetune_loss_1": 0.01,
    "finetune_loss_2": 0.01,
}
# The first AdamW update is lr * sign(gradient) for most weights: a flipped sign on weights whose
# gradient is near zero moves the cosine from 1 quickly; on the CPU in float32 with and without
# checkpointing it is 1 to rounding.
F32_AGREE, HALF_AGREE = 0.99, 0.9
# The demo model's typicality map in a half precision against float32 (the map's ranking of pixels is
# what mining uses).
DEMO_CORR = 0.99


def rel(x: np.ndarray, ref: np.ndarray) -> float:
    if x.dtype == np.uint8:
        return float(np.abs(x.astype(np.float64) - ref.astype(np.float64)).mean() / 255.0)
    x, ref = x.astype(np.float64), ref.astype(np.float64)
    return float(np.abs(x - ref).max() / max(np.abs(ref).max(), 1e-30))


def corr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.corrcoef(x.astype(np.float64).ravel(), ref.astype(np.float64).ravel())[0, 1])


def test_image(size: int, phase: float = 0.0) -> np.ndarray:
    """A smooth RGB image (the benchmarks' test picture), shifted by `phase` for a second one."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    rgb = [0.5 + 0.4 * np.sin(2 * np.pi * (fy * y + fx * x) + p + phase) for fy, fx, p in ((1.0, 2.0, 0.3), (2.5, 0.5, 1.7), (1.5, 1.5, 4.0))]
    return (np.stack(rgb, -1) * 255).round().astype(np.uint8)


class Report:
    def __init__(self, path: Path):
        self.file = open(path, "a")
        self.failed = 0

    def check(self, check: str, model: str, dtype: str, metric: str, value: float, bound: float) -> None:
        ok = bool(np.isfinite(value)) and (value >= bound if metric in ("agree", "corr") else value <= bound)
        self.failed += not ok
        line = {"kind": "check", "check": check, "model": model, "dtype": dtype, "metric": metric, "value": value, "bound": bound, "ok": ok}
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()
        print(("ok   " if ok else "FAIL ") + f"{model:10s} {dtype:9s} {check:18s} {metric} {value:.3e} (bound {bound:g})", file=sys.stderr)


def inference_outputs(model: diffmine.Model, setting: Setting, work: Path, translate: bool) -> dict:
    """Everything the checks compare, computed by one model."""
    image = test_image(SIZE)
    latents = model.encode(image)
    noise = np.random.default_rng(0).standard_normal((2,) + latents.shape).astype(np.float32)
    miner_cache = Path(tempfile.mkdtemp(dir=work))
    with diffmine.Miner(model, "a photo of a {label}", NULL_PROMPT, cache_dir=miner_cache, samples=setting.samples, batch=setting.batch,
                        patch=16, per_image=2, ensemble=2, clusters=1, restarts=1) as miner:
        miner.add(image, "cat")
        miner.run()
    (dift_file,) = miner_cache.glob("dift-*.safetensors")
    outputs = {
        "text_embeddings": model.text_embeddings(PROMPT),
        "encode": latents,
        "decode": model.decode(latents),
        "unet": model.predict_noise(noise, [100, 700], PROMPT),
        "typicality": model.typicality(image, PROMPT, NULL_PROMPT, samples=setting.samples, batch=setting.batch),
        "dift": next(iter(load_file(str(dift_file)).values())),
    }
    if translate:
        outputs["translate"] = model.translate(image, PROMPT, ["a photo of a dog"], steps=setting.translate_steps,
                                             inversion_steps=setting.translate_steps)
    return outputs


def finetune_outputs(pipeline: Path, device: str, work: Path, autocast: str, checkpointing: bool) -> dict:
    """One finetuning run of FINETUNE_STEPS steps: its losses and the UNet's weights after it."""
    data = work / "data"
    if not data.exists():
        for i, label in enumerate(("cat", "dog")):
            (data / label).mkdir(parents=True)
            Image.fromarray(test_image(SIZE, phase=i)).save(data / label / "a.png")
    out = Path(tempfile.mkdtemp(dir=work)) / "finetuned"
    losses = []
    diffmine.finetune(pipeline, data, out, steps=FINETUNE_STEPS, batch_size=FINETUNE_BATCH, resolution=SIZE, device=device,
                      autocast=autocast, gradient_checkpointing=checkpointing, caption_template="a photo of a {label}",
                      progress=lambda step, total, loss: losses.append(loss))
    return {"losses": losses, "unet": load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))}


def first_update_cosine(base: dict, run: dict, ref: dict) -> float:
    """Cosine between the weight changes of two runs (all UNet tensors as one vector)."""
    dot = norm_run = norm_ref = 0.0
    for name, w0 in base.items():
        a = run[name].astype(np.float64) - w0
        b = ref[name].astype(np.float64) - w0
        dot, norm_run, norm_ref = dot + (a * b).sum(), norm_run + (a * a).sum(), norm_ref + (b * b).sum()
    return float(dot / max(np.sqrt(norm_run * norm_ref), 1e-300))


def check_pipeline(report: Report, setting: Setting, name: str, pipeline: Path, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    translate = "translate" in setting.pipelines[name]
    with diffmine.Model(pipeline, device="cpu", dtype="float32") as cpu:
        reference = inference_outputs(cpu, setting, work, translate)
    for dtype in setting.dtypes:
        with diffmine.Model(pipeline, device=setting.device, dtype=dtype) as model:
            outputs = inference_outputs(model, setting, work, translate)
        for check, ref in reference.items():
            report.check(check, name, dtype, "rel", rel(outputs[check], ref), F32_BOUND if dtype == "float32" else HALF_BOUNDS[check])
    if "finetune" in setting.pipelines[name]:
        check_finetuning(report, setting, name, pipeline, work)


def check_finetuning(report: Report, setting: Setting, name: str, pipeline: Path, work: Path) -> None:
    base = {k: v.astype(np.float64) for k, v in load_file(str(pipeline / "unet" / "diffusion_pytorch_model.safetensors")).items()}
    ref = finetune_outputs(pipeline, "cpu", work, "float32", False)
    for autocast in setting.finetune_autocasts:
        for checkpointing in (False, True):
            run = finetune_outputs(pipeline, setting.device, work, autocast, checkpointing)
            label = autocast + ("+checkpointing" if checkpointing else "")
            half = autocast != "float32"
            for i in range(FINETUNE_STEPS):
                report.check(f"finetune_loss_{i + 1}", name, label, "rel", rel(np.float64(run["losses"][i]), np.float64(ref["losses"][i])),
                             HALF_BOUNDS[f"finetune_loss_{i + 1}"] if half else F32_BOUND)
            report.check("finetune_update", name, label, "agree", first_update_cosine(base, run["unet"], ref["unet"]), HALF_AGREE if half else F32_AGREE)


def check_demo(report: Report, setting: Setting, demo: Path, cli: str, work: Path) -> None:
    """The typicality map of a synthetic radiograph with a planted nodule, on the trained demo model."""
    synth = work / "synth"
    subprocess.run([cli, "synth", "--quiet", "--out", str(synth), "--per-label", "1", "--seed", "3"], check=True, stdout=sys.stderr)
    image = np.asarray(Image.open(sorted((synth / "Nodule").glob("*.png"))[0]))
    prompt, null = "Chest X-Ray with Nodule.", "Chest X-Ray."

    def demo_map(dev: str, dtype: str) -> np.ndarray:
        with diffmine.Model(demo / "pretrained", unet=demo / "finetuned" / "unet", device=dev, dtype=dtype) as model:
            return model.typicality(image, prompt, null, samples=setting.demo_samples, batch=50)

    cpu32 = demo_map("cpu", "float32")
    for dtype in setting.dtypes:
        value = demo_map(setting.device, dtype)
        if dtype == "float32":
            report.check("demo_typicality", "demo", dtype, "rel", rel(value, cpu32), F32_BOUND)
        else:
            report.check("demo_typicality", "demo", dtype, "corr", corr(value, cpu32), DEMO_CORR)


def main() -> int:
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    device, fixtures, demo, cli, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
    setting = Setting(device)
    report = Report(out)
    with tempfile.TemporaryDirectory() as tmp:
        for name in setting.pipelines:
            check_pipeline(report, setting, name, fixtures / name, Path(tmp) / name)
        check_demo(report, setting, demo, cli, Path(tmp))
    print(f"{report.failed} check(s) failed", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
