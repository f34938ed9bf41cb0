#!/usr/bin/env python3
"""The PyTorch reference for bench/bench_checkpoint.cpp: torch.save / torch.load of the same state
(16 float32 tensors, KILN_BENCH_CKPT_MIB MiB in all) in the same folder, with an fsync after save and
the page cache dropped for the file before each cold load, best of KILN_BENCH_REPEATS.
Usage: build/torch-venv/bin/python bench/checkpoint_torch.py"""
import os
import time

import torch

mib = int(os.environ.get("KILN_BENCH_CKPT_MIB", "1024"))
repeats = int(os.environ.get("KILN_BENCH_REPEATS", "3"))
folder = os.environ.get("KILN_BENCH_DIR") or os.environ.get("TMPDIR") or "/tmp"
n = 16
per = mib * (1 << 20) // n // 4
state = {f"layer{i}.weight": torch.full((per,), 0.5 + i) for i in range(n)}
gib = per * 4 * n / (1 << 30)
path = os.path.join(folder, "kiln-bench-torch.pt")


def drop_cache():
    fd = os.open(path, os.O_RDONLY)
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def best(run, before=lambda: None):
    out = 1e30
    for _ in range(repeats):
        before()
        t0 = time.perf_counter()
        run()
        out = min(out, time.perf_counter() - t0)
    return out


def save():
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


print(f"torch {torch.__version__}: {n} tensors, {gib:.2f} GiB in {folder}, best of {repeats}")
for what, seconds in [
    ("write: torch.save + fsync", best(save)),
    ("read cold: torch.load", best(lambda: torch.load(path, weights_only=True), drop_cache)),
    ("read warm: torch.load", best(lambda: torch.load(path, weights_only=True))),
]:
    print(f"  {what:44s} {seconds:8.3f} s  {gib / seconds:6.2f} GiB/s")
drop_cache()
t0 = time.perf_counter()
lazy = torch.load(path, mmap=True, weights_only=True)["layer7.weight"]
first = float(lazy[0])
print(f"  lazy: torch.load(mmap=True) + one tensor: {(time.perf_counter() - t0) * 1e3:.3f} ms (first element {first})")
os.unlink(path)
