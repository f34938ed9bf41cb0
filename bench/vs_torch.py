#!/usr/bin/env python3
"""Kiln against PyTorch and PyTorch Lightning, side by side (issues 3 and 5).

    build/torch-venv/bin/python bench/vs_torch.py BUILD_DIR [--which training|lightning|all] [--repeats N]

Runs each pair alternately (Kiln, reference, Kiln, reference, ...) so both sides see the machine in
the same state, every process with the same environment (OMP_NUM_THREADS = --threads, the
OPENBLAS_* presets removed), and prints the median over repeats of each measurement, with the ratio
oriented so that > 1 always means Kiln is better:
  training  BUILD_DIR/bench/bench_training against bench/training_torch.py, per model (mlp, cnn,
            transformer) in --precision 32-true or bf16-mixed (each side under its autocast):
            samples/s of forward + backward + optimizer step; ratio = Kiln / torch.
  lightning BUILD_DIR/bench/bench_fit_cnn against bench/fit_cnn_lightning.py: mean epoch wall time,
            process start to the first training step, process wall time (start to exit) and peak
            RSS (from os.wait4's rusage of each child); ratio = Lightning / Kiln.
Process start is the driver's clock just before launching, handed to the child as KILN_BENCH_T0.
After the medians: each repeat's own ratio (the two runs of a repeat are neighbours in time, so
they see the same host speed; the spread across repeats is the host's drift), and for the MLP each
side's `# mlp floor` line: Kiln's floor is its step's products and optimizer step alone, so where
it exceeds half of torch's step no Kiln overhead could be cut to reach 2x in that repeat; and
Kiln's `# mlp peak` line, the step's products at the machine's FMA peak, which no f32 step can beat.
Not a test: nothing is asserted. Take figures only from an otherwise idle machine.
"""
import argparse
import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Presets some machines carry for old OpenBLAS builds (see bench/run.sh); neither side needs them.
REMOVED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


class Measurement:
    def __init__(self, key, label, unit, higher_is_better, source="result"):
        self.key, self.label, self.unit = key, label, unit
        self.higher_is_better = higher_is_better
        self.source = source  # "result": the RESULT line; "rusage": the driver's wait4; "wall": the driver's clock


class Pair:
    """One comparison: the two command lines and what to read from each run."""

    def __init__(self, name, reference_name, kiln_cmd, reference_cmd, measurements):
        self.name, self.reference_name = name, reference_name
        self.kiln_cmd, self.reference_cmd = kiln_cmd, reference_cmd
        self.measurements = measurements
        self.values = {"kiln": {m.key: [] for m in measurements}, "reference": {m.key: [] for m in measurements}}
        self.floors = {"kiln": [], "reference": []}  # (floor ms, step ms) of each run's `# mlp floor` line
        self.peaks = []  # ms of the products at FMA peak, from each Kiln run's `# mlp peak` line


FLOOR_LINE = re.compile(r"^# mlp floor: products \+ optimizer step alone ([0-9.]+) ms, the training step ([0-9.]+) ms",
                        re.MULTILINE)
PEAK_LINE = re.compile(r"^# mlp peak: .* take ([0-9.]+) ms", re.MULTILINE)


def parse_result(stdout, cmd):
    """The key=value fields of the one RESULT line in stdout."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if len(lines) != 1:
        raise RuntimeError(f"{' '.join(cmd)} printed {len(lines)} RESULT lines, expected 1:\n{stdout}")
    return dict(field.split("=", 1) for field in lines[0].split()[1:])


def launch(cmd, env):
    """Runs cmd; returns (stdout, RESULT fields, peak RSS in MiB from wait4, wall seconds from launch to exit)."""
    with tempfile.TemporaryFile(mode="w+") as stderr:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env=dict(env, KILN_BENCH_T0=repr(t0)))
        stdout = proc.stdout.read()
        proc.stdout.close()
        # wait4 rather than proc.wait(): it is the call that returns the child's own rusage.
        _, status, rusage = os.wait4(proc.pid, 0)
        wall = time.time() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            stderr.seek(0)
            tail = "".join(stderr.readlines()[-20:])
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{stdout[-2000:]}\n{tail}")
    return stdout, parse_result(stdout, cmd), rusage.ru_maxrss / 1024.0, wall  # ru_maxrss: KiB on Linux


def record(pair, side, fields, peak_rss_mib, wall, stdout):
    floor = FLOOR_LINE.search(stdout)
    if floor:
        pair.floors[side].append((float(floor.group(1)), float(floor.group(2))))
    peak = PEAK_LINE.search(stdout)  # Kiln's side only prints it
    if peak:
        pair.peaks.append(float(peak.group(1)))
    for m in pair.measurements:
        if m.source == "rusage":
            value = peak_rss_mib
        elif m.source == "wall":
            value = wall
        else:
            value = float(fields[m.key])
        pair.values[side][m.key].append(value)


def make_pairs(args):
    bench = os.path.join(args.build_dir, "bench")
    threads = ["--threads", str(args.threads)]
    pairs = []
    if args.which in ("training", "all"):
        for model in ("mlp", "cnn", "transformer"):
            loop = ["--model", model, "--precision", args.precision, "--steps", str(args.steps),
                    "--warmup", str(args.warmup)] + threads
            pairs.append(Pair(f"training {model} {args.precision}", "torch", [os.path.join(bench, "bench_training")] + loop,
                              [args.python, os.path.join(HERE, "training_torch.py")] + loop,
                              [Measurement("samples_per_s", "samples/s", "1/s", True)]))
    if args.which in ("lightning", "all"):
        fit = ["--epochs", str(args.epochs), "--limit-batches", str(args.limit_batches), "--data", args.data] + threads
        pairs.append(Pair("fit cnn", "lightning", [os.path.join(bench, "bench_fit_cnn")] + fit,
                          [args.python, os.path.join(HERE, "fit_cnn_lightning.py")] + fit,
                          [Measurement("epoch_s", "time per epoch", "s", False),
                           Measurement("first_step_s", "start to first step", "s", False),
                           Measurement("process_s", "start to exit", "s", False, source="wall"),
                           Measurement("peak_rss_mib", "peak RSS", "MiB", False, source="rusage")]))
    for pair in pairs:
        if not os.access(pair.kiln_cmd[0], os.X_OK):
            sys.exit(f"vs_torch.py: {pair.kiln_cmd[0]} is not built (configure BUILD_DIR with -DKILN_BUILD_BENCH=ON "
                     f"and build {os.path.basename(pair.kiln_cmd[0])})")
    return pairs


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def print_header(args, env):
    print("== Kiln vs PyTorch / Lightning")
    print(f"kiln build: {os.path.abspath(args.build_dir)}")
    print(f"reference python: {args.python} (this driver: python {platform.python_version()}, torch "
          f"{version('torch')}, lightning {version('lightning')})")
    print(f"threads: {args.threads} (OMP_NUM_THREADS={env['OMP_NUM_THREADS']}; removed: {', '.join(REMOVED_ENV)}), "
          f"repeats: {args.repeats}, load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"training: {args.warmup} warm-up + {args.steps} timed steps per model, batch 128; "
          f"fit: {args.epochs} epoch(s), limit-batches {args.limit_batches}")


def print_table(pairs):
    print("\n== medians (ratio > 1: Kiln better; higher-is-better: Kiln / ref, lower-is-better: ref / Kiln)")
    header = (f"{'benchmark':<13} {'measurement':<20} {'unit':<5} {'Kiln':>11} {'reference':>11} {'ref':<10} "
              f"{'ratio':>7}")
    print(header)
    print("-" * len(header))
    for pair in pairs:
        for m in pair.measurements:
            kiln = statistics.median(pair.values["kiln"][m.key])
            ref = statistics.median(pair.values["reference"][m.key])
            ratio = ratio_of(m, kiln, ref) if kiln > 0 and ref > 0 else float("nan")
            print(f"{pair.name:<13} {m.label:<20} {m.unit:<5} {kiln:>11.4g} {ref:>11.4g} {pair.reference_name:<10} "
                  f"{ratio:>6.2f}x")
    print_repeats(pairs)


def ratio_of(m, kiln, ref):
    return kiln / ref if m.higher_is_better else ref / kiln


def print_repeats(pairs):
    print("\n== each repeat's ratio (its two runs are neighbours in time), min / median / max")
    for pair in pairs:
        for m in pair.measurements:
            ratios = [ratio_of(m, k, r) for k, r in zip(pair.values["kiln"][m.key], pair.values["reference"][m.key])
                      if k > 0 and r > 0]
            if ratios:
                print(f"{pair.name:<13} {m.label:<20} {' '.join(f'{x:.2f}' for x in ratios)}   "
                      f"({min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f})")
    for pair in pairs:
        kiln, ref = pair.floors["kiln"], pair.floors["reference"]
        if not kiln or len(kiln) != len(ref):
            continue
        peaks = pair.peaks if len(pair.peaks) == len(kiln) else [float("nan")] * len(kiln)
        print(f"\n== {pair.name}: the floor (products + optimizer step alone, no autograd) and the products at the "
              f"FMA peak, ms per step")
        print(f"{'repeat':<7} {'Kiln at peak':>12} {'Kiln floor':>10} {'Kiln step':>10} {'torch floor':>11} "
              f"{'torch step':>10} {'torch step / 2':>14} {'floor / (torch step / 2)':>25}")
        for i, ((kf, ks), (tf, ts), kp) in enumerate(zip(kiln, ref, peaks)):
            print(f"{i + 1:<7} {kp:>12.3f} {kf:>10.3f} {ks:>10.3f} {tf:>11.3f} {ts:>10.3f} {ts / 2:>14.3f} "
                  f"{kf / (ts / 2):>24.2f}x")
        print("(where the last column exceeds 1, even a Kiln step with no cost beyond its floor is under 2x torch; "
              "where 'Kiln at peak' exceeds torch step / 2, no f32 step could reach 2x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("build_dir", help="a Kiln build configured with -DKILN_BUILD_BENCH=ON")
    parser.add_argument("--which", choices=("training", "lightning", "all"), default="all")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true",
                        help="training: f32, or each side's forward under bf16 autocast")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the table shows medians")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200,
                        help="training: timed steps per model (fewer leave the figures to the machine's drift)")
    parser.add_argument("--warmup", type=int, default=5, help="training: untimed steps before them")
    parser.add_argument("--epochs", type=int, default=1, help="fit: epochs")
    parser.add_argument("--limit-batches", type=int, default=-1, help="fit: batches per epoch; -1: all")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="fit: Fashion-MNIST IDX folder")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python whose torch and lightning are the reference")
    parser.add_argument("--verbose", action="store_true", help="print every child's whole stdout")
    args = parser.parse_args()
    for name in ("repeats", "threads", "steps", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} expects an integer >= 1, got {getattr(args, name)}")

    env = {k: v for k, v in os.environ.items() if k not in REMOVED_ENV}
    env["OMP_NUM_THREADS"] = str(args.threads)
    pairs = make_pairs(args)
    print_header(args, env)
    configs_shown = set()  # reference scripts whose configuration (non-RESULT output) was printed
    for repeat in range(args.repeats):
        for pair in pairs:
            for side, cmd in (("kiln", pair.kiln_cmd), ("reference", pair.reference_cmd)):
                try:
                    stdout, fields, peak_rss_mib, wall = launch(cmd, env)
                except RuntimeError as error:
                    sys.exit(f"vs_torch.py: {error}")
                if args.verbose or (side == "reference" and cmd[1] not in configs_shown):
                    configs_shown.add(cmd[1])
                    print("\n" + "\n".join(line for line in stdout.splitlines() if not line.startswith("RESULT ")))
                record(pair, side, fields, peak_rss_mib, wall, stdout)
                line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
                print(f"[{repeat + 1}/{args.repeats}] {line} wait4_peak_rss_mib={peak_rss_mib:.1f} "
                      f"process_s={wall:.3f}", flush=True)
    print_table(pairs)


if __name__ == "__main__":
    main()
