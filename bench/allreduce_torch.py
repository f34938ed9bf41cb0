#!/usr/bin/env python3
"""Kiln's Gloo all-reduce against torch.distributed's, side by side (issue 16).

    python3 bench/allreduce_torch.py BUILD_DIR [--max-mib 256] [--budget-mib 256] [--repeats 2]

Runs BUILD_DIR/bench/bench_allreduce (2 Kiln processes) and the same schedule with
torch.distributed's gloo backend (2 processes, f32 sum, loopback), alternately per repeat, and
prints per size the median time per call of each and the ratio torch / Kiln (> 1: Kiln faster),
with bench_allreduce's other columns beside them: Kiln's group without its agreement check, and
the Debian Gloo that Kiln links called directly (torch ships its own, newer Gloo).
Torch comes from BUILD_DIR/torch-venv (scripts/make-torch-venv.sh makes it): when this python has
no torch, the script runs itself again with that one. Not a test; take figures from an idle machine.
"""
import argparse
import os
import statistics
import subprocess
import sys


def torch_rank(rank, port, sizes, budget, queue):
    import time
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    out = {}
    for nbytes in sizes:
        x = torch.ones(nbytes // 4)
        iters = max(3, min(2000, budget // nbytes))
        dist.all_reduce(x)
        dist.barrier()
        t = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(x)
        out[nbytes] = (time.perf_counter() - t) / iters
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        queue.put(out)


def run_torch(sizes, budget):
    import socket
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=torch_rank, args=(r, port, sizes, budget, queue)) for r in range(2)]
    for p in procs:
        p.start()
    result = queue.get()
    for p in procs:
        p.join()
    return result


def run_kiln(build, max_mib, budget_mib):
    env = dict(os.environ, KILN_BENCH_MAX_MIB=str(max_mib), KILN_BENCH_BUDGET_MIB=str(budget_mib))
    text = subprocess.run([os.path.join(build, "bench", "bench_allreduce")], env=env, check=True,
                          capture_output=True, text=True).stdout
    out = {}
    for line in text.splitlines():
        fields = line.replace("|", " ").split()  # bytes iters kiln nocheck direct TCP ...
        if fields and fields[0].isdigit():
            out[int(fields[0])] = [float(f) * 1e-6 for f in fields[2:5]]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build")
    parser.add_argument("--max-mib", type=int, default=256)
    parser.add_argument("--budget-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    build = os.path.abspath(args.build)
    try:
        import torch  # noqa: F401
    except ImportError:
        python = os.path.join(build, "torch-venv", "bin", "python")
        if not os.path.exists(python):
            sys.exit(f"no torch here and no {python} (scripts/make-torch-venv.sh makes it)")
        os.execv(python, [python] + sys.argv)
    sizes = []
    n = 1024
    while n <= args.max_mib << 20:
        sizes.append(n)
        n *= 4
    budget = args.budget_mib << 20
    kiln, ref = {s: [] for s in sizes}, {s: [] for s in sizes}
    for _ in range(args.repeats):
        for s, t in run_kiln(build, args.max_mib, args.budget_mib).items():
            kiln[s].append(t)  # [kiln, nocheck, direct]
        for s, t in run_torch(sizes, budget).items():
            ref[s].append(t)
    import torch
    print(f"all-reduce f32 sum, 2 processes on loopback; kiln vs torch {torch.__version__} gloo; "
          f"median of {args.repeats} alternating runs; ratio = torch / kiln (> 1: kiln faster)")
    print(f"{'bytes':>10} {'kiln us':>10} {'torch us':>10} {'kiln GB/s':>10} {'torch GB/s':>10} {'ratio':>7}"
          f" | {'nocheck us':>10} {'direct us':>10}")
    for s in sizes:
        k, nocheck, direct = (statistics.median(v[i] for v in kiln[s]) for i in range(3))
        t = statistics.median(ref[s])
        print(f"{s:>10} {k * 1e6:>10.1f} {t * 1e6:>10.1f} {s / k / 1e9:>10.3f} {s / t / 1e9:>10.3f} {t / k:>7.2f}"
              f" | {nocheck * 1e6:>10.1f} {direct * 1e6:>10.1f}")


if __name__ == "__main__":
    main()
