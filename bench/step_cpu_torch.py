#!/usr/bin/python3
"""CPU time of one POA tri-branch training step: poa against the same step in PyTorch.

    /usr/bin/python3 bench/step_cpu_torch.py [RECIPE] [--steps N] [--warmup W] [--ibot 0|1]
        [--batch B] [--threads T] [--member WxD] [--rounds R] [section.field=value ...]

Runs build/bench/step_cpu (poa's CPU trainer) with the recipe, batch, overrides and options
given, reads back its shapes, the iBOT mask counts per global-crop slot and the elastic members
it drew (warm-up steps included), then times the same steps in PyTorch (float32, the same
number of threads, OMP_WAIT_POLICY=PASSIVE on both sides unless set, and
the OpenBLAS kernels poa chooses on both sides: bench/blas_env.py) and prints a table with the
median wall ms per step, the median process-CPU ms per step, images/s and torch / poa
(> 1 means poa is faster). With --rounds R the two sides alternate R times and the medians are
taken over every timed step of every round (the machine's load drifts).

The PyTorch step is bench/torch_step.py's TorchStep (reference/poa-vit-and-training.md §3-§5)
with its "golden" backbone (tests/golden/make_vit_fixtures.py forward(), drop path as per-sample
scales on every row, as poa's CPU step computes it).
The crops are N(0, 1) values and the masks random positions with poa's per-slot counts: the
values differ from poa's, the shapes, counts and members are the same. This is a benchmark,
not a test.
"""
import argparse
import os
import subprocess
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import blas_env  # noqa: E402  (before torch: its OpenBLAS runs the kernels poa runs)
import torch  # noqa: E402

from torch_step import ROOT, TorchStep, median, parse_step_lines, time_steps  # noqa: E402


def run_poa(args, extra):
    cmd = [os.path.join(ROOT, "build/bench/step_cpu"), args.recipe, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--ibot", str(args.ibot), "--threads", str(args.threads)]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if args.member:
        cmd += ["--member", args.member]
    cmd += extra
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return parse_step_lines(out)


def time_torch(cfg, threads, members, warmup, verbose):
    torch.set_num_threads(threads)
    return time_steps(TorchStep(cfg), members, warmup, verbose)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe", nargs="?", default="recipes/quickstart.lua")
    ap.add_argument("overrides", nargs="*", help="section.field=value, passed to step_cpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--ibot", type=int, default=1)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--member", default=None, help="fix the elastic member (WxD); default: poa's cycle")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    poa_wall, poa_cpu, torch_wall, torch_cpu = [], [], [], []
    load_before = os.getloadavg()
    for r in range(args.rounds):
        info = run_poa(args, args.overrides)
        if int(info["elastic"]) != 1:
            sys.exit("step_cpu_torch: the recipe must be elastic")
        # poa prints medians only; rerun-free: take its median as one sample per round,
        # and every torch step as samples (see the note printed below)
        poa_wall.append(info["wall"])
        poa_cpu.append(info["cpu"])
        w, c = time_torch(info, args.threads, info["members"], args.warmup, args.verbose)
        torch_wall.append(median(w))
        torch_cpu.append(median(c))
        if args.verbose:
            print(f"round {r}: poa {info['wall']:.1f} ms, torch {median(w):.1f} ms", file=sys.stderr)
    load_after = os.getloadavg()
    B = int(info["batch"])
    mem = "fixed member " + args.member if args.member else "poa's elastic cycle"
    print(f"{args.recipe} {' '.join(args.overrides)}")
    print(f"OpenBLAS kernels on both sides: {blas_env.CORETYPE}")
    print(f"  batch {B}, {int(info['global'][0])} x {int(info['global'][1])} px global + "
          f"{int(info['local'][0])} x {int(info['local'][1])} px local crops, heads "
          f"{info['prototypes']} hidden {int(info['hidden'])} bottleneck {int(info['bottleneck'])}, "
          f"iBOT {'on' if int(info['ibot']) else 'off'} ({sum(info['masks'])} masked tokens), "
          f"{args.threads} threads, torch {torch.__version__}")
    print(f"  members ({mem}; warm-up {args.warmup} + timed {args.steps}, both sides): "
          + " ".join(f"{w}x{d}" for w, d in info["members"]))
    print(f"  median over {args.rounds} round(s) of per-round medians; load average before "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, after "
          f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    pw, pc, tw, tc = median(poa_wall), median(poa_cpu), median(torch_wall), median(torch_cpu)
    print(f"  {'side':<6} {'wall ms/step':>13} {'cpu ms/step':>12} {'img/s':>8}")
    print(f"  {'poa':<6} {pw:13.1f} {pc:12.1f} {B / pw * 1e3:8.2f}")
    print(f"  {'torch':<6} {tw:13.1f} {tc:12.1f} {B / tw * 1e3:8.2f}")
    print(f"  torch/poa (> 1 = poa faster): wall {tw / pw:.2f}, cpu {tc / pc:.2f}")
    if args.verbose:
        print("  per round poa wall " + " ".join(f"{v:.1f}" for v in poa_wall)
              + " | torch wall " + " ".join(f"{v:.1f}" for v in torch_wall))


if __name__ == "__main__":
    main()
