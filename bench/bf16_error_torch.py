#!/usr/bin/python3
"""How far bf16 mixed precision moves a ViT member's output and gradients in PyTorch, the peer of
tests/c/test_cuda_vit.c's bf16 checks (poa's bf16 pass against its fp32 CPU pass).

    /usr/bin/python3 bench/bf16_error_torch.py [--seed S]

The golden tests' model (tests/golden/make_vit_fixtures.py) with random parameters, members 64x3
(global crops with a mask and stochastic depth) and 96x4 (local crops), run in float64 and under
torch.autocast("cpu", dtype=torch.bfloat16) (linear, conv and matmul in bf16, fp32 accumulation);
prints ||bf16 - fp64|| / ||fp64|| of the output and the worst gradient tensor, the measure the C
test prints. This is a measurement, not a test."""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "golden"))
import make_vit_fixtures as vit  # noqa: E402


def run(params, d, depth, images, mask, scales, dout, dtype, autocast):
    p = {k: v.to(dtype).clone().requires_grad_(True) for k, v in params.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = vit.forward(p, d, depth, images.to(dtype), mask, scales.to(dtype))
    (out.float().to(dtype) * dout.to(dtype)).sum().backward()
    return out.detach().double(), {k: (v.grad.double() if v.grad is not None else None) for k, v in p.items()}


def norm_error(a, b):
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    params = vit.random_params(gen)
    for d, depth, batch, px, masked in ((64, 3, 3, 32, True), (96, 4, 2, 16, False)):
        grid = px // vit.PATCH
        images = torch.randn(batch, 3, px, px, generator=gen)
        mask = (torch.rand(batch, grid * grid, generator=gen) < 0.2) if masked else None
        scales = vit.drop_path_scales(gen, depth, batch, masked)
        dout = torch.randn(batch, 1 + grid * grid, d, generator=gen)
        ref_out, ref_grads = run(params, d, depth, images, mask, scales, dout, torch.float64, False)
        out, grads = run(params, d, depth, images, mask, scales, dout, torch.float32, True)
        worst, worst_name = 0.0, ""
        for k, g in ref_grads.items():
            if g is None or torch.count_nonzero(g) == 0:
                continue
            err = norm_error(grads[k], g)
            if err > worst:
                worst, worst_name = err, k
        print(f"torch bf16 autocast {d}x{depth} batch {batch} at {px} px: norm-relative error: output "
              f"{norm_error(out, ref_out):.3g}, worst gradient {worst_name} {worst:.3g}")


if __name__ == "__main__":
    main()
