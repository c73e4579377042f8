#!/usr/bin/env python3
"""GPU time of one POA tri-branch training step: poa's GPU step against the same step in PyTorch.

    python3 bench/step_gpu_torch.py [RECIPE] [section.field=value ...] [--batch B] [--find-max-batch]
        [--steps N] [--warmup W] [--ibot 0|1] [--compile] [--device cuda|cpu] [--dtype bf16|fp32]
        [--poa-build DIR] [--poa-cmd CMD] [--profile N] [--peak-tflops T] [--check] [--verbose]

RECIPE defaults to recipes/vit_l16_ee1200.lua (the paper's ViT-L family), --batch to 50 (the
reference's per-GPU batch). The shapes, the iBOT mask counts per global-crop slot and the
elastic members (warm-up steps included) come from DIR/bench/step_config (DIR = --poa-build,
default build): the same synthetic batch and the same draws as poa's trainer. The PyTorch side is
bench/torch_step.py's TorchStep with its "reference" backbone: the official model's computation
(F.scaled_dot_product_attention, drop path on the kept rows only), forward passes under
torch.autocast(bfloat16) with float32 master weights and float32 loss math, AdamW(fused=True).
poa's side is DIR/bench/step_gpu (or --poa-cmd), run with RECIPE --batch B --steps N --warmup W
--ibot I and the overrides; its "images/s X" is read back. Where it is not built, the PyTorch
numbers are printed alone.

Printed: the device and the peak bf16 FLOP/s assumed (bench/mfu.py; --peak-tflops to set it),
the forward GFLOPs of every member drawn as counted here beside `poa list`'s, and per batch size
the median ms per step, images/s, achieved TFLOP/s and MFU of each side (FLOPs of the members
drawn in the timed steps, bench/mfu.py), and poa / torch in images/s (> 1 means poa is faster).
--find-max-batch: also the largest batch PyTorch fits (doubling from --batch, then bisection to
--batch-resolution images, each try one step with the intact network as the elastic member, the
largest; out-of-memory errors caught), timed the same way, poa run at that batch too.
--profile N: the N device kernels taking the most time over two PyTorch steps (torch.profiler).
--check: first, the reference backbone against the golden one (float64 on the CPU).
--device cpu (with a small recipe, float32 unless --dtype bf16) runs everything but the GPU.
"""
import argparse
import os
import shlex
import subprocess
import sys
import time

import torch

import mfu
from torch_step import (HAVE_SDPA, ROOT, TorchStep, check_backbones, median, parse_step_lines,
                        reference_forward, time_steps)


def run(cmd):
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def step_config(args, batch, count):
    exe = os.path.join(ROOT, args.poa_build, "bench", "step_config")
    if not os.path.exists(exe):
        sys.exit(f"step_gpu_torch: {exe} not found (run ninja, or tools/device_bundle)")
    cmd = [exe, args.recipe, "--batch", str(batch), "--members", str(count), "--ibot", str(args.ibot)]
    return parse_step_lines(run(cmd + args.overrides))


def run_poa(args, batch):
    """poa's GPU step at this batch: (images/s or None, a line saying what happened, its output)."""
    cmd = shlex.split(args.poa_cmd) if args.poa_cmd else [os.path.join(args.poa_build, "bench", "step_gpu")]
    exe = cmd[0] if os.path.isabs(cmd[0]) else os.path.join(ROOT, cmd[0])
    if not os.path.exists(exe):
        return None, f"poa GPU step: not built ({cmd[0]})", ""
    cmd += [args.recipe, "--batch", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--ibot", str(args.ibot)] + args.overrides
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    info = parse_step_lines(p.stdout)
    if p.returncode != 0 or "images_per_s" not in info:
        return None, f"poa GPU step: failed (exit status {p.returncode}): {p.stderr.strip()[-300:]}", p.stdout
    return info["images_per_s"], "poa GPU step: " + " ".join(shlex.quote(c) for c in cmd), p.stdout


def is_out_of_memory(error):
    return isinstance(error, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in str(error)


def fits(step, args, batch, member):
    """One step at this batch with `member` as the elastic network, out-of-memory caught."""
    step.set_batch(step_config(args, batch, 1))
    ok = True
    try:
        step.step(member)
        if step.device.type == "cuda":
            torch.cuda.synchronize()
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        ok = False
    step.optimizer.zero_grad(set_to_none=True)
    if step.device.type == "cuda":
        torch.cuda.empty_cache()
    return ok


def find_max_batch(step, args, member):
    low, high, b = 0, None, args.batch
    while b <= args.max_batch:
        ok = fits(step, args, b, member)
        print(f"  batch {b}: {'fits' if ok else 'out of memory'}")
        if not ok:
            high = b
            break
        low, b = b, b * 2
    if low == 0 or high is None:
        return low
    while high - low > args.batch_resolution:
        mid = (low + high) // 2
        ok = fits(step, args, mid, member)
        print(f"  batch {mid}: {'fits' if ok else 'out of memory'}")
        low, high = (mid, high) if ok else (low, mid)
    return low


def profile(step, members, top):
    from torch.profiler import ProfilerActivity, profile as torch_profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if step.device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for m in members:
            step.step(m)
        if step.device.type == "cuda":
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0)
        if step.device.type != "cuda":
            t = e.self_cpu_time_total
        if t > 0:
            rows.append((t, e.count, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    where = "device kernel" if step.device.type == "cuda" else "CPU op"
    print(f"  PyTorch per-{where} time over {len(members)} steps (self time, top {top}; all: {total / 1e3:.1f} ms)")
    for t, count, name in rows[:top]:
        print(f"    {t / 1e3:9.2f} ms {100 * t / total:5.1f}% {count:6d}x  {name[:100]}")


def measure(step, args, batch, peak):
    """Times torch (and poa) at this batch; prints one block."""
    count = args.warmup + args.steps
    cfg = step_config(args, batch, count)
    members = cfg["members"]
    step.set_batch(cfg)
    wall, _ = time_steps(step, members, args.warmup, args.verbose)
    timed = members[args.warmup:]
    flops = sum(mfu.step_flops(cfg, m) for m in timed) / len(timed)
    flops_all_rows = sum(mfu.step_flops(cfg, m, drop_path=False) for m in timed) / len(timed)
    ms = median(wall)
    torch_ips = batch / ms * 1e3
    poa_ips, poa_line, poa_out = run_poa(args, batch)
    print(f"batch {batch}: members (warm-up {args.warmup} + timed {args.steps}): "
          + " ".join(f"{w}x{d}" for w, d in members))
    print(f"  step TFLOP (mean over the timed members): {flops / 1e12:.2f} with drop path on the kept rows "
          f"(used for MFU), {flops_all_rows / 1e12:.2f} counting every row; "
          f"{sum(cfg['masks'])} masked tokens")
    print(f"  {'side':<6} {'ms/step':>9} {'img/s':>9} {'TFLOP/s':>9} {'MFU':>7}")

    def row(side, ips):
        sec = batch / ips
        tflops = flops / sec / 1e12
        util = f"{100 * flops / sec / peak:6.1f}%" if peak else "    n/a"
        print(f"  {side:<6} {sec * 1e3:9.1f} {ips:9.2f} {tflops:9.1f} {util}")

    row("torch", torch_ips)
    if poa_ips:
        row("poa", poa_ips)
        print(f"  poa/torch images/s (> 1 = poa faster): {poa_ips / torch_ips:.2f}")
    print(f"  {poa_line}")
    if poa_out and args.verbose:
        print("  poa output:\n" + "\n".join("    " + line for line in poa_out.splitlines()))
    if poa_ips and "members" in parse_step_lines(poa_out):
        same = parse_step_lines(poa_out)["members"] == members
        print(f"  poa drew the same members: {'yes' if same else 'NO'}")
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recipe", nargs="?", default="recipes/vit_l16_ee1200.lua")
    ap.add_argument("overrides", nargs="*", help="section.field=value, passed to poa's programs")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--find-max-batch", action="store_true")
    ap.add_argument("--max-batch", type=int, default=4096)
    ap.add_argument("--batch-resolution", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--ibot", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None)
    ap.add_argument("--poa-build", default="build")
    ap.add_argument("--poa-cmd", default=None)
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()

    if args.check:
        ok, worst, lines = check_backbones()
        print(f"check: reference backbone against the golden one: {'PASS' if ok else 'FAIL'} "
              f"(worst relative difference {worst:.1e})")
        for line in lines:
            print("  " + line)
        if not ok:
            sys.exit(1)

    device = torch.device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    autocast = torch.bfloat16 if dtype == "bf16" else None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # as the reference (train.py); bf16 GEMMs are unaffected
        torch.backends.cudnn.allow_tf32 = True
    else:
        name = "cpu"
    peak, matched = (args.peak_tflops * 1e12, "--peak-tflops") if args.peak_tflops else mfu.peak_flops(name)
    print(f"{args.recipe} {' '.join(args.overrides)}")
    print(f"  device {name}, torch {torch.__version__}, {dtype}{' autocast' if autocast else ''}, attention "
          f"{'scaled_dot_product_attention' if HAVE_SDPA else 'plain softmax (no SDPA in this torch)'}, "
          f"AdamW {'fused' if device.type == 'cuda' else 'foreach'}{', torch.compile' if args.compile else ''}")
    print(f"  peak assumed: {peak / 1e12:.1f} TFLOP/s bf16 dense ({matched})" if peak
          else "  peak: unknown for this device (MFU n/a; --peak-tflops sets it)")

    cfg = step_config(args, args.batch, args.warmup + args.steps)
    listed = mfu.parse_poa_list(run([os.path.join(ROOT, args.poa_build, "poa"), "list", args.recipe]))
    S = int(cfg["global"][1])
    print(f"  forward GFLOPs of one {S} px image, counted here / `poa list`:")
    dmax, lmax = int(cfg["width"][1]), int(cfg["depth"][1])
    for w, d in sorted(set(cfg["members"]) | {(dmax, lmax)}):
        ours = mfu.vit_macs(cfg, w, d, S, 1) / 1e9
        theirs = listed.get((w, d))
        agree = theirs is not None and abs(ours - theirs) <= 0.005 + 1e-9 + 1e-4 * theirs
        print(f"    {w}x{d}: {ours:.3f} / {theirs if theirs is not None else 'missing'}"
              f"{'' if agree else '  MISMATCH'}")

    step = TorchStep(cfg, device=device, backbone="reference", autocast=autocast, fused=device.type == "cuda")
    if args.compile:
        if hasattr(torch, "_dynamo"):
            torch._dynamo.config.cache_size_limit = 256  # one graph per (width, depth, rows)
        step.forward = torch.compile(reference_forward)
    print(f"  set-up {time.perf_counter() - t0:.1f} s")

    measure(step, args, args.batch, peak)
    if args.profile:
        step.set_batch(cfg)
        profile(step, cfg["members"][:2], args.profile)
    if args.find_max_batch:
        t1 = time.perf_counter()
        largest = find_max_batch(step, args, (dmax, lmax))
        print(f"largest batch that fits (PyTorch, elastic member {dmax}x{lmax}, resolution "
              f"{args.batch_resolution}): {largest} ({time.perf_counter() - t1:.0f} s to find)")
        while largest > args.batch:
            try:
                measure(step, args, largest, peak)
                break
            except (RuntimeError, MemoryError) as error:  # a probe fit, 13 steps with other members may not
                if not is_out_of_memory(error):
                    raise
            step.optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(f"batch {largest}: out of memory while timing; {largest - args.batch_resolution} next")
            largest -= args.batch_resolution
    if device.type == "cuda":
        print(f"  peak device memory allocated by PyTorch: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"  total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
