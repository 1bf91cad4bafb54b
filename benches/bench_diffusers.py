#!/usr/bin/env python3
"""diffusers' half of the SD 1.5 benchmark: the same measurements as benches/sd15.rs.

Usage: bench_diffusers.py MODEL_DIR f32|bf16 load|unet|parity REPEATS [PARITY_FILE]

- load: times StableDiffusionPipeline.from_pretrained (UNet, VAE, text encoder, tokenizer, scheduler;
  accelerate installed, so low_cpu_mem_usage is on by default) and reports VmHWM right after it; a
  single file MODEL.safetensors (original layout) goes through from_single_file, its configs and
  tokenizer from the folder MODEL beside it.
- unet: loads the pipeline as `load` does (so the process matches sd15.rs's, which loads the whole
  model), then times one UNet pass at batch 2, 4x32x32 latents, context (2, 77, 768), after one
  warm-up pass; REPEATS timed passes, median reported. Also reports load + warm-up pass (the time to
  the first UNet output in a fresh process) and VmHWM after the warm-up pass.
- parity: runs the UNet once on seeded inputs and writes latents, timesteps, context and the output
  (noise_pred, float32) to PARITY_FILE for sd15.rs to compare against.

CPU only, torch.set_num_threads(2), torch.inference_mode(). JSON lines on stdout.
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = 2


def status_bytes(field: str):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line[len(field) :].strip().split()[0]) * 1024
    return None


def run_delay() -> float:
    """Seconds this process's threads have spent runnable but waiting for a CPU (schedstat): how much
    other processes on the machine delayed a measurement."""
    total = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total * 1e-9


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, dtype_name, what, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    started = time.perf_counter()
    import diffusers
    import torch
    import transformers
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    import_seconds = time.perf_counter() - started
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(THREADS)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype_name]

    def line(**fields):
        record = {"impl": "diffusers", "what": what, "dtype": dtype_name, "threads": THREADS}
        record.update(fields)
        print(json.dumps(record), flush=True)

    def unet_inputs():
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn(2, 4, 32, 32, generator=generator)
        context = torch.randn(2, 77, 768, generator=generator)
        return latents, torch.tensor([10, 500], dtype=torch.int64), context

    if what == "load":
        rss_before = status_bytes("VmRSS:")
        delay = run_delay()
        t0 = time.perf_counter()
        if os.path.isfile(model_dir):  # a single file: its configs and tokenizer from the folder beside it
            pipe = StableDiffusionPipeline.from_single_file(
                model_dir, config=os.path.splitext(model_dir)[0], local_files_only=True, torch_dtype=dtype,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False
            )
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                model_dir, dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False
            )
        seconds = time.perf_counter() - t0
        delay = run_delay() - delay
        line(
            seconds=seconds,
            vmhwm_bytes=status_bytes("VmHWM:"),
            vmrss_before_bytes=rss_before,
            vmrss_after_bytes=status_bytes("VmRSS:"),
            import_seconds=import_seconds,
            region_seconds=seconds,
            run_delay_seconds=delay,
        )
        del pipe
    elif what == "unet":
        t0 = time.perf_counter()
        pipe = StableDiffusionPipeline.from_pretrained(
            model_dir, dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        load_seconds = time.perf_counter() - t0
        unet = pipe.unet.eval()
        latents, timesteps, context = unet_inputs()

        def run_pass():
            t0 = time.perf_counter()
            with torch.inference_mode():
                # As libdiffmine's predict_noise: f32 in, compute dtype inside, f32 out.
                out = unet(latents.to(dtype), timesteps, context.to(dtype)).sample.float()
            assert out.shape == (2, 4, 32, 32)
            return time.perf_counter() - t0

        warmup = run_pass()
        hwm_first = status_bytes("VmHWM:")
        delay = run_delay()
        times = [run_pass() for _ in range(max(1, repeats))]
        delay = run_delay() - delay
        line(
            seconds=statistics.median(times),
            all=times,
            warmup_seconds=warmup,
            load_seconds=load_seconds,
            load_and_first_pass_seconds=load_seconds + warmup,
            vmhwm_after_first_pass_bytes=hwm_first,
            region_seconds=sum(times),
            run_delay_seconds=delay,
        )
    elif what == "parity":
        from safetensors.torch import save_file

        unet = UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet"), dtype=dtype).eval()
        latents, timesteps, context = unet_inputs()
        with torch.inference_mode():
            out = unet(latents.to(dtype), timesteps, context.to(dtype)).sample.float()
        save_file(
            {"latents": latents, "timesteps": timesteps, "context": context, "noise_pred": out.contiguous()},
            sys.argv[5],
        )
        line(file=sys.argv[5], max_abs=out.abs().max().item(), std=out.std().item())
    else:
        print(f"unknown measurement {what!r} (use load, unet or parity)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
