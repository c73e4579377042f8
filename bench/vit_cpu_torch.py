#!/usr/bin/python3
"""CPU forward + backward of the elastic ViT: poa against PyTorch on the same machine.

    /usr/bin/python3 bench/vit_cpu_torch.py [--recipe recipes/small_vit.lua] [--batch 32]

Runs build/bench/vit_cpu (poa's CPU backend, generated kernels + OpenBLAS) and the same step in
PyTorch: the reference's dynamic ViT as tests/golden/make_vit_fixtures.py writes it (prefix slices
taken per call, alpha on every linear input, exact GELU, LayerScale), float32, with the same number
of threads. Both time forward + backward (loss = sum(out * G)) on one batch of global crops for the
intact net and the smallest member, median of N steps after two warm-up steps, and the script
prints the ratio torch / poa (> 1 means poa is faster). This is a benchmark, not a test.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import blas_env  # noqa: E402  (before torch: its OpenBLAS runs the kernels poa runs)
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "golden"))
import make_vit_fixtures as vit  # noqa: E402  (the golden tests' PyTorch model)


def recipe_numbers(path):
    """The few recipe fields the peer needs, read with the generator's own loader."""
    script = ('package.path = "./?.lua;" .. package.path '
              'local r = require("gen.recipe").load(' + '"' + path + '"' + ') local m = r.model '
              'print(m.width[1], m.width[2], m.depth[1], m.depth[2], m.patch_size, m.head_dim, '
              'm.mlp_ratio, r.global_crops.size)')
    out = subprocess.run(["lua5.4", "-e", script], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.split()
    return [int(v) for v in out]


def torch_step_ms(params, width, depth, batch, size, iterations):
    images = torch.randn(batch, 3, size, size)
    scales = torch.ones(depth, 2, batch)
    for p in params.values():
        p.grad = None
    times = []
    for it in range(iterations + 2):
        t0 = time.perf_counter()
        out = vit.forward(params, width, depth, images, None, scales)
        if it == 0:
            dout = torch.randn_like(out)
        (out * dout).sum().backward()
        if it >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="recipes/small_vit.lua")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    wmin, wmax, dmin, dmax, patch, head_dim, mlp_ratio, size = recipe_numbers(args.recipe)
    vit.DMAX, vit.LMAX, vit.PATCH, vit.HEAD_DIM, vit.MLP_RATIO = wmax, dmax, patch, head_dim, mlp_ratio
    vit.FMAX, vit.GLOBAL_PX = mlp_ratio * wmax, size
    torch.manual_seed(0)
    params = {k: v.requires_grad_() for k, v in vit.random_params(torch.Generator().manual_seed(0)).items()}
    torch.set_num_threads(args.threads)

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    ours = subprocess.run([os.path.join(ROOT, "build/bench/vit_cpu"), args.recipe, str(args.batch),
                           str(args.iterations)], cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True).stdout
    print(f"{args.recipe}: batch {args.batch} x {size} px, {args.threads} threads, "
          f"torch {torch.__version__}, median of {args.iterations} steps")
    print(f"{'member':>8} {'poa ms':>10} {'torch ms':>10} {'torch/poa':>10}")
    for line in ours.splitlines():
        m = re.match(r"member (\d+)x(\d+) .* forward\+backward ms ([\d.]+)", line)
        if not m:
            continue
        width, depth, poa_ms = int(m.group(1)), int(m.group(2)), float(m.group(3))
        torch_ms = torch_step_ms(params, width, depth, args.batch, size, args.iterations)
        print(f"{width}x{depth:<4} {poa_ms:10.2f} {torch_ms:10.2f} {torch_ms / poa_ms:10.2f}")


if __name__ == "__main__":
    main()
