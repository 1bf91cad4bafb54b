#!/usr/bin/env python3
"""Speed half of benches/gpu.sh: libdiffmine's side of the typicality timing, the UNet's FLOP count and
the card's peak, and the summary of a run.

Usage:
  gpu_bench.py typicality MODEL_DIR IMAGE.png DEVICE DTYPE SAMPLES BATCHES REPEATS
      One typicality map of IMAGE with libdiffmine (the Python binding, the library DIFFMINE_LIB names)
      after a warm-up map, REPEATS times, per batch size of BATCHES (comma-separated; one model load):
      a JSON line each with the median seconds and images per second.
  gpu_bench.py flops MODEL_DIR HEIGHT WIDTH DEVICE
      The FLOPs of one UNet row (one latent, one context) at HEIGHT x WIDTH pixels, counted by
      torch.utils.flop_counter on diffusers' UNet built from MODEL_DIR/unet/config.json on the meta device
      (no weights, no arithmetic), and DEVICE's name with its dense float16 tensor peak.
  gpu_bench.py summary RESULTS.jsonl
      Appends the summary line: per dtype, images per second of both implementations at equal N and
      their ratio, libdiffmine's UNet TFLOP/s and share of the peak; the finetuning step of both.

The prompts are the typicality benchmark's (benches/typicality.sh).
"""

import json
import statistics
import sys
import time

PROMPT, NULL_PROMPT = "Image of a car.", "Image."

# Dense (no structured sparsity) float16/bfloat16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s,
# matched against torch.cuda.get_device_name in this order (the NVL and PCIe names also contain H100).
PEAKS = (
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200 NVL", 835.0),
    ("H200", 989.4),  # SXM
)


def libdiffmine_typicality(model_dir, image_path, device, dtype, samples, batches, repeats):
    import numpy as np
    from PIL import Image

    import diffmine

    image = np.asarray(Image.open(image_path).convert("RGB"))
    started = time.perf_counter()
    with diffmine.Model(model_dir, device=device, dtype=dtype) as model:
        load_seconds = time.perf_counter() - started
        for batch in batches:

            def one_map():
                t0 = time.perf_counter()
                result = model.typicality(image, PROMPT, NULL_PROMPT, samples=samples, batch=batch)
                return time.perf_counter() - t0, result

            warmup, _ = one_map()
            runs = [one_map() for _ in range(repeats)]
            seconds = statistics.median(s for s, _ in runs)
            yield {"kind": "typicality", "impl": "libdiffmine", "dtype": dtype, "device": device, "samples": samples, "batch": batch,
                   "seconds": seconds, "all": [s for s, _ in runs], "warmup_seconds": warmup, "load_seconds": load_seconds,
                   "images_per_second": 1.0 / seconds, "mean": float(runs[-1][1].mean())}


def unet_flops(model_dir, height, width, device):
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    config = UNet2DConditionModel.load_config(f"{model_dir}/unet")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config).eval()
        latents = torch.zeros(1, config["in_channels"], height // 8, width // 8)
        context = torch.zeros(1, 77, config["cross_attention_dim"])
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            unet(latents, torch.tensor([500]), context)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    peak = next((p for key, p in PEAKS if key in name), None) if device.startswith("cuda") else None
    return {"kind": "flops", "unet_flops_per_row": counter.get_total_flops(), "height": height, "width": width, "device_name": name,
            "peak_dense_f16_tflops": peak, "torch": torch.__version__, "cuda": torch.version.cuda}


def summary(path):
    rows = [r for r in map(json.loads, open(path)) if "kind" in r]
    flops = next(r for r in rows if r["kind"] == "flops")
    per_map = 2 * flops["unet_flops_per_row"]  # each sample is a row under the label and one under the null prompt
    result = {"kind": "summary", "device_name": flops["device_name"], "peak_dense_f16_tflops": flops["peak_dense_f16_tflops"],
              "checks_failed": sum(1 for r in rows if r["kind"] == "check" and not r["ok"]),
              "checks": sum(1 for r in rows if r["kind"] == "check"), "typicality": [], "finetune": {}}
    typicality = [r for r in rows if r["kind"] == "typicality"]
    for ours in (r for r in typicality if r["impl"] == "libdiffmine"):
        theirs = next((r for r in typicality if r["impl"] == "diffusers" and r["dtype"] == ours["dtype"]), None)
        if theirs is None:
            continue
        tflops = per_map * ours["samples"] / ours["seconds"] / 1e12
        peak = flops["peak_dense_f16_tflops"]
        result["typicality"].append({
            "dtype": ours["dtype"], "samples": ours["samples"], "batch": ours["batch"], "diffusers_batch": theirs["batch"],
            "libdiffmine_images_per_second": ours["images_per_second"], "diffusers_images_per_second": theirs["images_per_second"],
            "speedup": ours["images_per_second"] / theirs["images_per_second"],
            "libdiffmine_unet_tflops": tflops, "diffusers_unet_tflops": per_map * theirs["samples"] / theirs["seconds"] / 1e12,
            "share_of_peak": tflops / peak if peak else None,
        })
    for r in (r for r in rows if r["kind"] == "finetune"):
        result["finetune"][r["impl"]] = r["seconds_per_step"]
    if len(result["finetune"]) == 2:
        result["finetune"]["speedup"] = result["finetune"]["diffusers"] / result["finetune"]["libdiffmine"]
    return result


def main() -> int:
    what, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else (None, [])
    if what == "typicality" and len(args) == 7:
        batches = [int(b) for b in args[5].split(",")]
        lines = libdiffmine_typicality(args[0], args[1], args[2], args[3], int(args[4]), batches, int(args[6]))
    elif what == "flops" and len(args) == 4:
        lines = [unet_flops(args[0], int(args[1]), int(args[2]), args[3])]
    elif what == "summary" and len(args) == 1:
        lines = [summary(args[0])]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for line in lines:
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
