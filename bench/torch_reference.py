#!/usr/bin/env python3
"""PyTorch reference figures for Kiln's benchmarks, on the same machine and thread count.

Measures, with torch.set_num_threads(N) (default 2): f32 a + b, a.add_(b), a * b, exp, sum at 1M and
16M elements in GB/s (bytes read + written, as bench_elementwise counts them); mm in f32 and bf16 in
GFLOP/s; and the per-call cost of a 1-element a + b, a.add_(b) and torch.empty(1) in ns (these
include the Python interpreter; bench/libtorch/ gives the C++-only figure). Prints the configuration
first so a number can be traced to the BLAS, oneDNN and environment that produced it.
Not a test: nothing is checked, and Kiln is not imported.
"""
import argparse
import os
import re
import sys
import time

import torch

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
            "OPENBLAS_NUM_THREADS", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "KMP_AFFINITY",
            "OMP_PROC_BIND", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "DNNL_DEFAULT_FPMATH_MODE")


def time_per_call(fn, min_time, repeats=3):
    """Seconds per call of fn: the best of `repeats` means, each over batches lasting >= min_time."""
    for _ in range(3):
        fn()
    means = []
    for _ in range(repeats):
        batch, calls, elapsed = 1, 0, 0.0
        while elapsed < min_time:
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            elapsed += time.perf_counter() - start
            calls += batch
            batch = min(batch * 2, 1 << 16)
        means.append(elapsed / calls)
    return min(means)


def summarize_config():
    """The lines of torch.__config__.show() that say which math libraries and CPU paths run."""
    show = torch.__config__.show()
    keep = [line.strip(" -") for line in show.splitlines()
            if re.search(r"Math Kernel|MKL-DNN|oneDNN|OpenMP|OpenBLAS|CPU capability", line)
            and "Build settings" not in line]
    settings = re.search(r"Build settings: (.*)", show)
    if settings:
        wanted = ("BLAS_INFO", "LAPACK_INFO", "USE_MKL", "USE_MKLDNN", "USE_OPENMP", "BUILD_TYPE")
        pairs = [p.strip() for p in settings.group(1).split(",")]
        keep.append(", ".join(p for p in pairs if p.split("=")[0] in wanted))
    return keep


def print_config(threads):
    print("== PyTorch reference configuration")
    print(f"torch {torch.__version__} (python {sys.version.split()[0]}), from {os.path.dirname(torch.__file__)}")
    for line in summarize_config():
        print(f"  {line}")
    print(f"  torch threads: {torch.get_num_threads()} (asked {threads}), interop: {torch.get_num_interop_threads()}")
    print(f"  mkldnn (oneDNN) available: {torch.backends.mkldnn.is_available()}, "
          f"bf16 supported by oneDNN here: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    for name in ENV_VARS:
        print(f"  {name}={os.environ.get(name, '(unset)')}")


def elementwise(min_time):
    print("\n== elementwise, f32 (GB/s = bytes read + written / time)")
    print(f"{'op':<9} {'size':<5} {'time/call':>12} {'GB/s':>8}")
    gen = torch.Generator().manual_seed(0)
    for n, label in ((1 << 20, "1M"), (1 << 24, "16M")):
        a = torch.rand(n, generator=gen)
        b = torch.rand(n, generator=gen)
        acc, out = torch.zeros(n), torch.empty(n)
        # "add out=" writes into a preallocated tensor: torch's CPU allocator keeps no cache, so the
        # allocating forms pay for fresh pages (page faults) on every call at 16M; this row does not.
        cases = (("add", lambda: a + b, 3), ("add out=", lambda: torch.add(a, b, out=out), 3),
                 ("add_", lambda: acc.add_(b), 3), ("mul", lambda: a * b, 3),
                 ("exp", lambda: torch.exp(a), 2), ("sum", lambda: torch.sum(a), 1))
        for name, fn, streams in cases:
            t = time_per_call(fn, min_time)
            print(f"{name:<9} {label:<5} {t * 1e6:>9.1f} us {streams * 4 * n / t / 1e9:>8.2f}")


def matmul(min_time):
    print("\n== matmul, torch.mm allocating its output (GFLOP/s = 2*M*N*K / time)")
    print(f"{'dtype':<6} {'M x K . K x N':<20} {'time/call':>12} {'GFLOP/s':>9}")
    gen = torch.Generator().manual_seed(0)
    shapes = [(s, s, s) for s in (128, 256, 512, 1024, 2048)] + [(128, 784, 512)]
    for dtype, name in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
        for m, k, n in shapes:
            a = torch.randn(m, k, generator=gen).to(dtype)
            b = torch.randn(k, n, generator=gen).to(dtype)
            t = time_per_call(lambda: torch.mm(a, b), min_time)
            print(f"{name:<6} {f'{m}x{k} . {k}x{n}':<20} {t * 1e6:>9.1f} us {2 * m * n * k / t / 1e9:>9.1f}")


def dispatch(min_time):
    print("\n== per-call overhead, 1-element f32 (includes the Python interpreter)")
    a, b, acc = torch.ones(1), torch.ones(1), torch.zeros(1)
    cases = (("a + b", lambda: a + b), ("a.add_(b)", lambda: acc.add_(b)), ("torch.empty(1)", lambda: torch.empty(1)),
             ("torch.ones(1)", lambda: torch.ones(1)))
    for name, fn in cases:
        print(f"{name:<24} {time_per_call(fn, min_time) * 1e9:>8.0f} ns")
    with torch.inference_mode():
        print(f"{'a + b (inference_mode)':<24} {time_per_call(lambda: a + b, min_time) * 1e9:>8.0f} ns")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2") or 2))
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per measurement (3 per figure)")
    parser.add_argument("--only", choices=("elementwise", "matmul", "dispatch"), help="run one section")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print_config(args.threads)
    sections = {"elementwise": elementwise, "matmul": matmul, "dispatch": dispatch}
    for name, fn in sections.items():
        if args.only in (None, name):
            fn(args.min_time)


if __name__ == "__main__":
    main()
