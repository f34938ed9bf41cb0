"""PyTorch's side of bench/unary_vs_torch.py: reads "OP N THREADS" lines from stdin and answers each
with one RESULT line, the time per call of PyTorch's op on f32 inputs. The cases (names, input
ranges, timing rule) mirror bench/bench_unary.cpp's `--serve` mode; see that file.
"""
import sys
import time

import torch


def backward(approximate):
    return lambda x, g: torch.ops.aten.gelu_backward(g, x, approximate=approximate)


CASES = {
    "exp": (-10, 10, lambda x, g: torch.exp(x)),
    "sin": (-10, 10, lambda x, g: torch.sin(x)),
    "cos": (-10, 10, lambda x, g: torch.cos(x)),
    "erf": (-3, 3, lambda x, g: torch.erf(x)),
    "gelu": (-5, 5, lambda x, g: torch.nn.functional.gelu(x)),
    "gelu_tanh": (-5, 5, lambda x, g: torch.nn.functional.gelu(x, approximate="tanh")),
    "gelu_backward": (-5, 5, backward("none")),
    "gelu_tanh_backward": (-5, 5, backward("tanh")),
    "pow_2": (-4, 4, lambda x, g: torch.pow(x, 2)),
    "pow_0.5": (0, 4, lambda x, g: torch.pow(x, 0.5)),
    "pow_-1": (-4, 4, lambda x, g: torch.pow(x, -1)),
    "pow_2.5": (0, 4, lambda x, g: torch.pow(x, 2.5)),
    "pow_-1.3": (0, 4, lambda x, g: torch.pow(x, -1.3)),
    "randn": (0, 1, lambda x, g: torch.randn(x.shape)),
}


def make_input(n, lo, hi):
    f = torch.arange(n, dtype=torch.float64) * 0.6180339887498949
    return (lo + (hi - lo) * (f - torch.floor(f))).to(torch.float32)


def ns_per_call(call):
    """One warm-up call, then calls timed one by one for at least 0.2 s and 10 calls: the fastest."""
    call()
    best, total, calls = float("inf"), 0.0, 0
    while calls < 10 or total < 0.2:
        t0 = time.perf_counter()
        call()
        s = time.perf_counter() - t0
        best, total, calls = min(best, s), total + s, calls + 1
    return best * 1e9


def main():
    print(f"READY torch {torch.__version__} cpu_capability={torch.backends.cpu.get_cpu_capability()}", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 3 or parts[0] not in CASES:
            print(f"ERROR bad request '{line.strip()}'", flush=True)
            continue
        op, n, threads = parts[0], int(parts[1]), int(parts[2])
        lo, hi, fn = CASES[op]
        torch.set_num_threads(threads)
        x, g = make_input(n, lo, hi), make_input(n, -1, 1)
        with torch.no_grad():
            ns = ns_per_call(lambda: fn(x, g))
        print(f"RESULT op={op} n={n} threads={threads} ns={ns:.1f}", flush=True)


if __name__ == "__main__":
    main()
