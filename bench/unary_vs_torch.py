#!/usr/bin/env python3
"""Kiln's vectorised float math and randn against PyTorch's, side by side (issue 21).

    build/torch-venv/bin/python bench/unary_vs_torch.py BUILD_DIR [--level avx512|avx2|baseline]
        [--repeats N] [--threads 1,2] [--sizes 65536,1048576] [--ops exp,sin,...]

Starts two servers once, BUILD_DIR/bench/bench_unary --serve and bench/unary_torch.py (under the
--python given), and sends each case (op, size, threads) to both, one after the other, alternating
which goes first; so each pair of timings are neighbours in time, and neither side pays a process
start. --level caps both: KILN_CPU_CAPABILITY for Kiln; ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA and
MKL_ENABLE_INSTRUCTIONS for torch. Prints, per case, the median time per call of each side over the
repeats and the ratio torch / Kiln (> 1: Kiln faster), then each repeat's own ratio (min / median /
max: the host's drift). Not a test: nothing is asserted. On a shared host read only the ratios.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OPS = ["exp", "sin", "cos", "erf", "gelu", "gelu_tanh", "gelu_backward", "gelu_tanh_backward",
       "pow_2", "pow_0.5", "pow_-1", "pow_2.5", "pow_-1.3", "randn"]
TORCH_CAPS = {"avx512": ("AVX512", "AVX512_CORE", "AVX512"), "avx2": ("AVX2", "AVX2", "AVX2"),
              "baseline": ("DEFAULT", "SSE41", "SSE4_2")}


class Server:
    def __init__(self, cmd, env):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.banner = self.proc.stdout.readline().strip()
        if not self.banner.startswith("READY"):
            sys.exit(f"unary_vs_torch.py: {' '.join(cmd)} did not start: {self.banner!r}")

    def time(self, op, n, threads):
        self.proc.stdin.write(f"{op} {n} {threads}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        if not line.startswith("RESULT"):
            sys.exit(f"unary_vs_torch.py: asked for {op} {n} {threads}, got {line!r}")
        return float(dict(f.split("=", 1) for f in line.split()[1:])["ns"])

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("build_dir")
    parser.add_argument("--level", choices=("avx512", "avx2", "baseline"), default=None,
                        help="cap both sides at this CPU level (default: each side's best)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--sizes", default="65536,1048576")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--python", default=sys.executable, help="the Python whose torch is the reference")
    args = parser.parse_args()
    ops = args.ops.split(",")
    for op in ops:
        if op not in OPS:
            parser.error(f"unknown op '{op}'; valid: {', '.join(OPS)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]

    env = dict(os.environ, OMP_NUM_THREADS=str(max(threads)))
    if args.level:
        aten, onednn, mkl = TORCH_CAPS[args.level]
        env.update(KILN_CPU_CAPABILITY=args.level, ATEN_CPU_CAPABILITY=aten.lower(), ONEDNN_MAX_CPU_ISA=onednn,
                   MKL_ENABLE_INSTRUCTIONS=mkl)
    kiln = Server([os.path.join(args.build_dir, "bench", "bench_unary"), "--serve"], env)
    torch = Server([args.python, os.path.join(HERE, "unary_torch.py")], env)
    print(f"== Kiln vs PyTorch, float math and randn, f32, time per call")
    print(f"{kiln.banner}; {torch.banner}")
    print(f"repeats {args.repeats}, load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    cases = [(op, n, t) for op in ops for n in sizes for t in threads]
    times = {c: ([], []) for c in cases}
    for repeat in range(args.repeats):
        for i, case in enumerate(cases):
            first_kiln = (repeat + i) % 2 == 0
            for side in ((kiln, torch) if first_kiln else (torch, kiln)):
                times[case][0 if side is kiln else 1].append(side.time(*case))
        print(f"[{repeat + 1}/{args.repeats}] done, load average {os.getloadavg()[0]:.2f}", flush=True)
    kiln.close()
    torch.close()

    print(f"\n{'op':<19} {'n':>8} {'thr':>3} {'Kiln us':>10} {'torch us':>10} {'torch/Kiln':>10}   "
          f"each repeat's ratio (min / median / max)")
    for case in cases:
        k, t = times[case]
        ratios = [b / a for a, b in zip(k, t)]
        print(f"{case[0]:<19} {case[1]:>8} {case[2]:>3} {statistics.median(k) / 1e3:>10.2f} "
              f"{statistics.median(t) / 1e3:>10.2f} {statistics.median(t) / statistics.median(k):>9.2f}x   "
              f"{min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
