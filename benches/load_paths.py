#!/usr/bin/env python3
"""Ways of getting a safetensors file's f32 weights into torch tensors, timed (an experiment behind the
findings in BENCHMARKS.md; the same libtorch allocator and conversion kernels libdiffmine uses).

Usage: load_paths.py FILE.safetensors MODE   (one fresh process per measurement)

MODE: pread-per-tensor-f32 (libdiffmine's f32 path), pread-one-arena-f32, mmap-view-f32 (safetensors'
/diffusers' zero-copy f32 path), pread-per-tensor-to-bf16 (libdiffmine's bf16 path: an f32 temporary per
tensor), pread-scratch-to-bf16 (one reused f32 buffer), mmap-view-to-bf16 (convert straight from the
mapped file, then unmap it).
"""
import json, mmap, os, struct, sys, time
import torch
torch.set_num_threads(2)
f = sys.argv[1]
mode = sys.argv[2]
fd = os.open(f, os.O_RDONLY)
with open(f, "rb") as fh:
    n = struct.unpack("<Q", fh.read(8))[0]; h = json.loads(fh.read(n))
ents = sorted((v["data_offsets"][0], v["data_offsets"][1], v["shape"]) for k, v in h.items() if k != "__metadata__")
base = 8 + n
def rss(field="VmHWM:"):
    for l in open("/proc/self/status"):
        if l.startswith(field): return int(l.split()[1]) / 1024
hwm0 = rss("VmRSS:")
t = time.perf_counter(); kept = []
if mode == "pread-per-tensor-f32":      # libdiffmine's f32 path
    for a, b, s in ents:
        x = torch.empty(s, dtype=torch.float32); os.preadv(fd, [memoryview(x.numpy()).cast("B")], base + a); kept.append(x)
elif mode == "pread-one-arena-f32":
    arena = torch.empty(ents[-1][1], dtype=torch.uint8); mv = memoryview(arena.numpy()); done = 0
    while done < len(mv):  # one read returns at most ~2 GiB
        done += os.preadv(fd, [mv[done:done + (1 << 30)]], base + done)
    kept = [arena[a:b].view(torch.float32).view(s) for a, b, s in ents]
elif mode == "mmap-view-f32":           # diffusers/safetensors' f32 path: zero-copy, lazy
    m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    buf = torch.frombuffer(m, dtype=torch.uint8)
    kept = [buf[base + a: base + b].view(torch.float32).view(s) for a, b, s in ents]
elif mode == "pread-per-tensor-to-bf16": # libdiffmine's bf16 path: f32 temporary per tensor
    for a, b, s in ents:
        x = torch.empty(s, dtype=torch.float32); os.preadv(fd, [memoryview(x.numpy()).cast("B")], base + a); kept.append(x.to(torch.bfloat16)); del x
elif mode == "pread-scratch-to-bf16":   # one reusable f32 scratch buffer
    scratch = torch.empty(max(b - a for a, b, s in ents), dtype=torch.uint8)
    for a, b, s in ents:
        v = scratch[: b - a]; os.preadv(fd, [memoryview(v.numpy())], base + a); kept.append(v.view(torch.float32).view(s).to(torch.bfloat16))
elif mode == "mmap-view-to-bf16":       # diffusers' bf16 path
    m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    buf = torch.frombuffer(m, dtype=torch.uint8)
    kept = [buf[base + a: base + b].view(torch.float32).view(s).to(torch.bfloat16) for a, b, s in ents]
    del buf; m.close()  # unmap the file once converted
secs = time.perf_counter() - t
print(json.dumps({"mode": mode, "seconds": round(secs, 3), "rss_before_mib": round(hwm0), "vmhwm_mib": round(rss()), "rss_after_mib": round(rss("VmRSS:"))}))
