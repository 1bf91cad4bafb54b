#!/usr/bin/env python3
"""Turn benches/run.sh's JSON lines into the SD 1.5 table of BENCHMARKS.md.

Usage: report.py --results R.jsonl --parity P.json --model DIR --rounds N --repeats N --out BENCHMARKS.md

Only the part of BENCHMARKS.md between the sd15-bench markers is rewritten; text around it is kept.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import struct
import subprocess
from importlib.metadata import version
from pathlib import Path

BEGIN, END = "<!-- sd15-bench:begin (written by benches/run.sh) -->", "<!-- sd15-bench:end -->"
IMPLS = ("libdiffmine", "diffusers")
DTYPES = ("f32", "bf16")
BYTES = {"f32": 4, "bf16": 2}
GIB = 1024**3


def weight_bytes(model: Path) -> dict:
    """Bytes of the UNet, VAE and text encoder weights at each compute dtype (from the headers)."""
    numel = 0
    for path in sorted(model.glob("*/*.safetensors")):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for d in entry["shape"]:
                    count *= d
                numel += count
    return {"numel": numel, **{d: numel * b for d, b in BYTES.items()}}


def machine() -> str:
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"

    cpu = sh("lscpu | grep 'Model name'").split(":", 1)[-1].strip()
    mem_kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
    flags = sh("grep -m1 '^flags' /proc/cpuinfo")
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return f"{sh('nproc')} cores ({cpu}; {', '.join(isa)}), {mem_kb / 1024**2:.1f} GiB RAM, Linux {platform.release()}"


def med(values):
    return statistics.median(values) if values else None


def main() -> int:
    ap = argparse.ArgumentParser()
    for a in ("results", "parity", "model", "out"):
        ap.add_argument(f"--{a}", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--repeats", type=int, required=True)
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--attempts", type=int, default=3)
    ap.add_argument("--idle-wait", type=int, default=10)
    args = ap.parse_args()

    records = [json.loads(l) for l in open(args.results) if l.strip()]
    parity = json.loads([l for l in open(args.parity) if l.startswith("{")][-1])
    weights = weight_bytes(Path(args.model))

    def values(impl, what, dtype, field):
        return [r[field] for r in records if (r["impl"], r["what"], r["dtype"]) == (impl, what, dtype) and r.get(field) is not None]

    def cell(v, unit, best=None):
        if v is None:
            return "–"
        text = f"{v:.2f} s" if unit == "s" else f"{v / GIB:.2f} GiB"
        return text + (f" (best {best:.2f})" if best is not None and unit == "s" else "")

    rows = []
    goals = []
    for dtype in DTYPES:
        w = weights[dtype]
        specs = [
            ("load", "seconds", "s", f"Load (`open` / `from_pretrained`), {dtype}"),
            ("load", "vmhwm_bytes", "GiB", f"VmHWM after load, {dtype}"),
            ("unet", "seconds", "s", f"UNet pass, {dtype}"),
            ("unet", "load_and_first_pass_seconds", "s", f"Load + first UNet pass (fresh process), {dtype}"),
            ("unet", "vmhwm_after_first_pass_bytes", "GiB", f"VmHWM after load + first UNet pass, {dtype}"),
        ]
        for what, field, unit, label in specs:
            ours, theirs = (med(values(i, what, dtype, field)) for i in IMPLS)
            best_ours, best_theirs = (min(values(i, what, dtype, field), default=None) for i in IMPLS)
            ratio = f"{theirs / ours:.2f}×" if ours and theirs else "–"
            if unit == "s" and best_ours and best_theirs:
                ratio += f" (best {best_theirs / best_ours:.2f}×)"
            extra = ""
            if unit == "GiB":
                extra = " / ".join(f"{v / w:.2f}×" if v else "–" for v in (ours, theirs))
                if what == "load":
                    # Less each process's RSS before loading (the runtime: libtorch, or Python + libraries).
                    base = [med(values(i, "load", dtype, "vmrss_before_bytes")) for i in IMPLS]
                    extra += " (" + " / ".join(
                        f"{(v - b) / w:.2f}×" if v and b else "–" for v, b in zip((ours, theirs), base)
                    ) + " above the runtime's RSS before load)"
            rows.append(f"| {label} | {cell(ours, unit, best_ours)} | {cell(theirs, unit, best_theirs)} | {ratio} | {extra} |")
            if (what, field) == ("load", "seconds"):
                goals.append((f"load {dtype} no slower than diffusers", ours is not None and theirs is not None and ours <= theirs))
            if (what, field) == ("unet", "seconds"):
                goals.append((f"UNet pass {dtype} no slower than diffusers", ours is not None and theirs is not None and ours <= theirs))
            if (what, field) == ("load", "vmhwm_bytes"):
                goals.append((f"VmHWM after load {dtype} ≤ 1.2 × weights ({ours / w:.2f}×)" if ours else f"VmHWM {dtype}", ours is not None and ours <= 1.2 * w))

    raw = []
    for r in records:
        hwm = r.get("vmhwm_bytes") or r.get("vmhwm_after_first_pass_bytes")
        passes = ", ".join(f"{t:.2f}" for t in r.get("all", []))
        before = f"{r['vmrss_before_bytes'] / GIB:.2f}" if r.get("vmrss_before_bytes") else "–"
        raw.append(
            f"| {r['impl']} | {r['what']} {r['dtype']} | {r['seconds']:.2f} | {passes or '–'} | "
            f"{r.get('load_seconds', r['seconds']):.2f} | {hwm / GIB:.2f} | "
            f"{before} | "
            f"{r['process_wall_seconds']:.1f} | {r.get('run_delay_seconds', 0):.2f} | {r['others_cpu_seconds']:.1f} | {r.get('attempts', 1)} |"
        )
    delays = [r.get("run_delay_seconds", 0) / r.get("region_seconds", r["seconds"]) for r in records]
    disturbed = [d for d in delays if d > 0.05]
    worst = max(delays, default=0.0)

    finished = datetime.datetime.fromtimestamp(os.path.getmtime(args.results), datetime.timezone.utc)
    date = finished.strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{p} {version(p)}" for p in ("torch", "diffusers", "transformers", "accelerate", "safetensors"))
    body = f"""{BEGIN}
## SD 1.5 on the CPU: libdiffmine vs diffusers

Run {date} by `benches/run.sh` on {machine()}.
Python side: {versions}; libdiffmine: tch 0.24.0 linked against the same torch 2.11.0 install.
Both sides: CPU, 2 intra-op threads (`tch::set_num_threads(2)` / `torch.set_num_threads(2)`), no
autograd (`no_grad` / `torch.inference_mode()`).

Model: random-weight SD 1.5 at the real shapes (`benches/make_sd15.py`: UNet 320/640/1280/1280 with
cross-attention 768, VAE 128/256/512/512, CLIP ViT-L/14 text encoder with 49408 tokens), stored as
f32 safetensors: {weights['numel'] / 1e6:.0f} M parameters, **{weights['f32'] / GIB:.2f} GiB at f32,
{weights['bf16'] / GIB:.2f} GiB at bf16** (the "weights" the memory ratios below divide by). bf16
runs read the same f32 files and convert on load.

Method: {args.rounds} rounds; in each, load f32, load bf16, UNet pass f32 and UNet pass bf16 are measured
for libdiffmine and for diffusers in turn (which goes first alternates between rounds), **each
measurement in a fresh process**, so load times and VmHWM are those of a process that has just started.
The weight files were read once before the first round, so **all loads found them warm in the page
cache** (both implementations alike; cold-cache loads would add the disk read time to both). Before each
measurement the script waited (up to {args.idle_wait} s) for the machine to be idle; measured processes ran at
niceness {args.nice}, and so did their session's scheduler autogroup (the machine is shared with other
people's builds and tests: see the "others' CPU" column; both implementations alike); and a
measurement that other processes delayed by more than 5% (its threads' schedstat run delay, time
runnable but waiting for a CPU, summed over threads, over the timed region) was discarded and run again
(up to {args.attempts} attempts; the raw table shows the run delay of the kept attempt).
- *Load*: libdiffmine `StableDiffusion::open` (UNet + VAE + text encoder + tokenizer + schedule);
  diffusers `StableDiffusionPipeline.from_pretrained(dtype=…)` (same components, no safety checker;
  accelerate installed, so `low_cpu_mem_usage=True`). Python's import time (~5 s) is not counted.
- *VmHWM*: the process's peak resident set (`/proc/self/status`) right after loading. It includes
  each runtime's baseline (libtorch alone for libdiffmine; Python + torch + diffusers + transformers
  for diffusers, the "RSS before load" column below) and any file pages mapped into the process.
- *UNet pass*: batch 2, latents 2×4×32×32, timesteps (10, 500), context 2×77×768 (libdiffmine
  `predict_noise`; diffusers `unet(...).sample`), f32 in and out, median of {args.repeats} passes after one
  warm-up pass, in a process that loaded the whole pipeline first.
- *Load + first UNet pass*: load time plus the warm-up pass of that same process: the time a fresh
  process takes to its first UNet output.

Medians over the rounds, with the best (lowest) round in brackets: on a shared machine the best round
is the least disturbed one ("ratio" is diffusers / libdiffmine: above 1 means libdiffmine is faster or
smaller; the last column is VmHWM / weights at the loaded dtype, libdiffmine / diffusers):

| Measurement | libdiffmine | diffusers | ratio | VmHWM / weights |
|---|---|---|---|---|
{chr(10).join(rows)}

Goals: {"; ".join(f"{g}: **{'met' if ok else 'NOT met'}**" for g, ok in goals)}.

UNet parity at this shape (f32, the inputs above, diffusers' output written to safetensors and read by
the Rust bench): max|libdiffmine − diffusers| / max|diffusers| = **{parity['relative']:.2e}**
(max abs difference {parity['max_abs_diff']:.2e}, mean abs difference {parity['mean_abs_diff']:.2e},
max |output| {parity['max_abs_ref']:.3f}).

<details><summary>Raw measurements (every process)</summary>

| impl | measurement | seconds (median of passes, or load) | passes (s) | load (s) | VmHWM after load, or after first pass (GiB) | RSS before load (GiB) | process wall (s) | run delay (s) | others' CPU (s) | attempts |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(raw)}

</details>
{"" if not disturbed else f"{chr(10)}Warning: {len(disturbed)} kept measurement(s) were still delayed by other processes by more than 5% after {args.attempts} attempts (by at most {worst:.0%} of the timed region; see the run delay column).{chr(10)}"}
{END}"""

    out = Path(args.out)
    text = out.read_text() if out.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + body + tail
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    out.write_text(text)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
