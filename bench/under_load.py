#!/usr/bin/env python3
"""Training-step time on a busy machine: Kiln against PyTorch, idle and beside competing load (issue 21).

    build/torch-venv/bin/python bench/under_load.py BUILD_DIR [--load busy compile] [--repeats N]

For each load (idle first, then each of --load) and each model (mlp, cnn), runs Kiln's
bench/bench_training and bench/training_torch.py alternately, --repeats times, each with
OMP_NUM_THREADS = --threads (the machine's cores by default, as a user would run). The loads:
  busy     one process spinning in a loop (one core's worth of demand);
  compile  --jobs g++ processes compiling one of Kiln's sources in a loop (a `make -jN` beside
           the training).
Prints the median step time of each side under each load and its slowdown against that side's idle
median: the issue's goal is Kiln's slowdown under `busy` at most 2.5x and no worse than torch's.
Extra Kiln builds to compare (say, before and after a change) are given as --kiln NAME=LIBDIR: the
same bench binary then runs with LD_LIBRARY_PATH=LIBDIR, so LIBDIR's libkiln.so is the one timed.
Not a test: nothing is asserted.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from vs_torch import REMOVED_ENV, launch  # noqa: E402  (one way to run a side and read its RESULT line)


def start_load(kind, jobs, source_dir):
    """Starts the competing processes of one load; returns them (empty for idle)."""
    if kind == "idle":
        return []
    if kind == "busy":
        return [subprocess.Popen([sys.executable, "-c", "while True: pass"])]
    source = os.path.join(source_dir, "kernels", "cpu", "binary.cpp")
    compile_loop = (f"while :; do g++ -std=c++20 -O2 -I{source_dir} -DKILN_CPU_NS=load -DKILN_CPU_LEVEL=0 "
                    f"-c {source} -o /dev/null 2>/dev/null; done")
    return [subprocess.Popen(["sh", "-c", compile_loop], start_new_session=True) for _ in range(jobs)]


def stop_load(procs):
    for p in procs:
        try:
            os.killpg(p.pid, 9) if p.args[0] == "sh" else p.kill()
        except ProcessLookupError:
            pass
        p.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("build_dir", help="a Kiln build configured with -DKILN_BUILD_BENCH=ON")
    parser.add_argument("--load", nargs="+", choices=("busy", "compile"), default=["busy"])
    parser.add_argument("--models", nargs="+", choices=("mlp", "cnn"), default=["mlp", "cnn"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="compile load: concurrent compilers")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--kiln", action="append", default=[], metavar="NAME=LIBDIR",
                        help="another libkiln.so to time with the same bench binary")
    parser.add_argument("--python", default=sys.executable, help="the Python whose torch is the reference")
    parser.add_argument("--no-torch", action="store_true", help="time only Kiln")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in REMOVED_ENV}
    env["OMP_NUM_THREADS"] = str(args.threads)
    bench = os.path.join(os.path.abspath(args.build_dir), "bench", "bench_training")
    sides = [("kiln", bench, {})]
    for spec in args.kiln:
        name, libdir = spec.split("=", 1)
        sides.append((name, bench, {"LD_LIBRARY_PATH": os.path.abspath(libdir)}))
    if not args.no_torch:
        sides.append(("torch", os.path.join(HERE, "training_torch.py"), {}))
    source_dir = os.path.dirname(HERE)
    loads = ["idle"] + args.load
    print(f"== step time under load: threads {args.threads}, {args.steps} steps, repeats {args.repeats}, "
          f"cpus {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}")
    ms = {}  # (load, model, side) -> [ms per step]
    for load in loads:
        procs = start_load(load, args.jobs, source_dir)
        time.sleep(0.5 if procs else 0)  # let the load reach its steady state
        try:
            for repeat in range(args.repeats):
                for model in args.models:
                    for side, exe, extra in sides:
                        cmd = ([args.python, exe] if exe.endswith(".py") else [exe]) + [
                            "--model", model, "--steps", str(args.steps), "--warmup", "5", "--threads", str(args.threads)]
                        _, fields, _, _ = launch(cmd, dict(env, **extra))
                        step_ms = 1e3 * 128 / float(fields["samples_per_s"])
                        ms.setdefault((load, model, side), []).append(step_ms)
                        print(f"[{load} {repeat + 1}/{args.repeats}] {model} {side}: {step_ms:.3f} ms/step", flush=True)
        finally:
            stop_load(procs)
    print(f"\n{'load':<8} {'model':<5} " + " ".join(f"{s:>18}" for s, _, _ in sides))
    for load in loads:
        for model in args.models:
            cells = []
            for side, _, _ in sides:
                median = statistics.median(ms[(load, model, side)])
                idle = statistics.median(ms[("idle", model, side)])
                cells.append(f"{median:8.3f} ms {median / idle:5.2f}x" if load != "idle" else f"{median:8.3f} ms      ")
            print(f"{load:<8} {model:<5} " + " ".join(f"{c:>18}" for c in cells))
    print("(each cell: median ms per step; under a load, also its slowdown against the same side idle)")


if __name__ == "__main__":
    main()
