#!/usr/bin/python3
"""Golden fixtures for runtime/optim.c: AdamW, clipping and EMA from PyTorch, and the schedules of
reference/poa-vit-and-training.md §5.3 written from the reference text with NumPy.

Run: /usr/bin/python3 tests/golden/make_optim_fixtures.py     (Debian's python3-torch 1.13, CPU; ~2 s)
It rewrites tests/golden/fixtures/optim_{f32,f64,schedules}.safetensors deterministically (fixed
seeds), prints its self-checks and exits non-zero if one fails.

optim_f32.safetensors and optim_f64.safetensors (all tensors in that dtype unless said otherwise):
  AdamW, torch.optim.AdamW(foreach=False) with two param groups stepped STEPS = 6 times:
    group 0 = tensors a.w (5,7), a.b (13);  group 1 = tensor b.t (3,4,5)
    group.lr          F64 (STEPS, 2)  the lr of each group at each step (set before the step, like a
                                      schedule; group 1 has lr 0 for its first 2 steps, a frozen last layer)
    group.weight_decay, group.beta1, group.beta2, group.eps   F64 (2)
    param.<t>                          initial values
    grad.<k>.<t>                       gradient at step k = 1..STEPS (entries spread over 1e-9..10,
                                       so that eps matters for some)
    step1.{param,exp_avg,exp_avg_sq}.<t>   state after step 1
    final.{param,exp_avg,exp_avg_sq}.<t>   state after step STEPS
  Clipping, torch.nn.utils.clip_grad_norm_ over the three tensors x.0 (11), x.1 (4,6), x.2 (50):
    clip.<case>.in.<i>, clip.<case>.out.<i>, clip.<case>.norm F64 () (the returned total norm),
    clip.<case>.max_norm F64 (); case "big" is clipped (norm ~ 10 > 1.5), case "small" is not.
  EMA, DINOv2's update_teacher (torch._foreach_mul_(t, m); torch._foreach_add_(t, s, alpha=1-m)):
    ema.teacher (97), ema.student (97), ema.momentum F64 (), ema.out (97).

optim_schedules.safetensors (F64): for each schedule S of the ViT-L recipe (reference §0, §5.3),
  S.params = (base, final, total, warmup, start_warmup, iter_num_scale), S.iterations, S.values,
  S = lr, weight_decay, momentum, teacher_temp, and last_layer_lr (the lr schedule with 0 for
  iterations below S.freeze = 800, written S.params like lr), plus small edge cases (warmup 1 and 2,
  base == start_warmup, iter_num_scale 1 and 0.7). Values are CosineScheduler written from the reference
  text: numpy.linspace(start_warmup, base, W) for 0..W-1, then final + 0.5 (base - final)
  (1 + cos(pi j / Lc)) for j = 0..T-W-1 with Lc = int(T / s) - W, final from T on.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vit_fixtures import write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
STEPS = 6
failed = 0


def check(name, ok, detail=""):
    global failed
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""))
    failed += 0 if ok else 1


def f64(x):
    return torch.tensor(x, dtype=torch.float64)


def spread(gen, shape, dtype):
    """N(0,1) times 10^U(-9, 1): gradients over ten decades."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    x *= torch.pow(10.0, torch.rand(shape, generator=gen, dtype=torch.float64) * 10 - 9)
    return x.to(dtype)


def adamw_tensors(dtype, gen):
    shapes = {"a.w": (5, 7), "a.b": (13,), "b.t": (3, 4, 5)}
    params = {k: torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for k, s in shapes.items()}
    out = {"param." + k: v.clone() for k, v in params.items()}
    p = {k: torch.nn.Parameter(v.clone()) for k, v in params.items()}
    hyper = [dict(weight_decay=0.04, betas=(0.9, 0.999), eps=1e-8),
             dict(weight_decay=0.3, betas=(0.8, 0.99), eps=1e-6)]
    lrs = [[5e-3, 4e-3, 3e-3, 2.5e-3, 1e-3, 6.17e-4], [0.0, 0.0, 2e-2, 1e-2, 5e-3, 1e-3]]
    opt = torch.optim.AdamW([dict(params=[p["a.w"], p["a.b"]], lr=lrs[0][0], **hyper[0]),
                             dict(params=[p["b.t"]], lr=lrs[1][0], **hyper[1])], foreach=False)
    for k in range(1, STEPS + 1):
        for gi, group in enumerate(opt.param_groups):
            group["lr"] = lrs[gi][k - 1]
        for name, t in p.items():
            t.grad = spread(gen, shapes[name], dtype)
            out[f"grad.{k}.{name}"] = t.grad.clone()
        opt.step()
        if k in (1, STEPS):
            tag = "step1" if k == 1 else "final"
            for name, t in p.items():
                out[f"{tag}.param.{name}"] = t.detach().clone()
                out[f"{tag}.exp_avg.{name}"] = opt.state[t]["exp_avg"].clone()
                out[f"{tag}.exp_avg_sq.{name}"] = opt.state[t]["exp_avg_sq"].clone()
    check(f"{dtype} group 1 at lr 0 keeps its parameters at step 1",
          bool((out["step1.param.b.t"] == out["param.b.t"]).all()))
    out["group.lr"] = f64(lrs).t().contiguous()
    out["group.weight_decay"] = f64([h["weight_decay"] for h in hyper])
    out["group.beta1"] = f64([h["betas"][0] for h in hyper])
    out["group.beta2"] = f64([h["betas"][1] for h in hyper])
    out["group.eps"] = f64([h["eps"] for h in hyper])
    return out


def clip_tensors(dtype, gen):
    out = {}
    for case, scale, max_norm in (("big", 1.0, 1.5), ("small", 0.02, 1.5)):
        xs = [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in ((11,), (4, 6), (50,))]
        for i, x in enumerate(xs):
            x.grad = (torch.randn(x.shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
            out[f"clip.{case}.in.{i}"] = x.grad.clone()
        norm = torch.nn.utils.clip_grad_norm_(xs, max_norm)
        for i, x in enumerate(xs):
            out[f"clip.{case}.out.{i}"] = x.grad.clone()
        out[f"clip.{case}.norm"] = f64(float(norm))
        out[f"clip.{case}.max_norm"] = f64(max_norm)
        check(f"{dtype} clip {case} is {'' if case == 'big' else 'not '}clipped",
              (float(norm) > max_norm) == (case == "big"), f"norm {float(norm):.6g}")
    return out


def ema_tensors(dtype, gen):
    teacher = torch.randn(97, generator=gen, dtype=torch.float64).to(dtype)
    student = torch.randn(97, generator=gen, dtype=torch.float64).to(dtype)
    m = 0.992
    t = [teacher.clone()]
    torch._foreach_mul_(t, m)
    torch._foreach_add_(t, [student], alpha=1 - m)
    return {"ema.teacher": teacher, "ema.student": student, "ema.momentum": f64(m), "ema.out": t[0]}


class CosineScheduler:
    """reference §5.3, from its text."""

    def __init__(self, base, final, total, warmup=0, start_warmup=0.0, iter_num_scale=1.0):
        assert 0.7 <= iter_num_scale <= 1
        self.params = (base, final, total, warmup, start_warmup, iter_num_scale)
        self.final, self.total = final, total
        warm = np.linspace(start_warmup, base, warmup)
        cosine_length = int(total / iter_num_scale) - warmup
        j = np.arange(total - warmup)
        cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * j / cosine_length))
        self.schedule = np.concatenate((warm, cosine))
        assert len(self.schedule) == total

    def __getitem__(self, it):
        return self.final if it >= self.total else float(self.schedule[it])


def schedule_tensors():
    # reference §0: 346 epochs x 800, lr 0.004 x sqrt(1600 / 1024), warmup 10 epochs, s = 0.78.
    epoch, total, s = 800, 346 * 800, 0.78
    lr_base = 0.004 * math.sqrt(50 * 32 / 1024)
    schedules = {
        "lr": CosineScheduler(lr_base, 2e-5, total, 10 * epoch, 0.0, s),
        "weight_decay": CosineScheduler(0.04, 0.4, total, 0, 0.0, s),
        "momentum": CosineScheduler(0.992, 0.9999, total, 0, 0.0, s),
        # DINOv2's teacher-temperature schedule: base = final = 0.07, total = warmup = 30 epochs.
        "teacher_temp": CosineScheduler(0.07, 0.07, 30 * epoch, 30 * epoch, 0.04, 1.0),
        "warmup1": CosineScheduler(1.0, 0.1, 10, 1, 0.5, 1.0),
        "warmup2": CosineScheduler(1.0, 0.1, 10, 2, 0.5, 1.0),
        "flat_warmup": CosineScheduler(0.3, 0.1, 20, 5, 0.3, 0.9),
        "scale_0.7": CosineScheduler(2.0, -1.0, 1000, 100, 0.25, 0.7),
    }
    last_layer = CosineScheduler(*schedules["lr"].params)
    last_layer.schedule[: 1 * epoch] = 0  # freeze_last_layer_epochs = 1 (train.py does exactly this)
    schedules["last_layer_lr"] = last_layer

    main_its = [0, 1, 2, 799, 800, 801, 4000, 7998, 7999, 8000, 8001, 24000, 100000, 138400, 200000,
                276798, 276799, 276800, 276801, 400000]
    iterations = {
        "lr": main_its, "last_layer_lr": main_its, "weight_decay": main_its, "momentum": main_its,
        "teacher_temp": [0, 1, 2, 12000, 23998, 23999, 24000, 24001, 276799],
        "warmup1": list(range(12)), "warmup2": list(range(12)), "flat_warmup": list(range(22)),
        "scale_0.7": [0, 1, 50, 98, 99, 100, 101, 500, 998, 999, 1000, 5000],
    }
    out = {}
    for name, sch in schedules.items():
        its = iterations[name]
        out[f"{name}.params"] = f64(list(sch.params))
        out[f"{name}.iterations"] = f64([float(i) for i in its])
        out[f"{name}.values"] = f64([sch[i] for i in its])
    out["last_layer_lr.freeze"] = f64(1.0 * epoch)

    end = total - 1
    lr, wd, mom, temp = (schedules[k][end] for k in ("lr", "weight_decay", "momentum", "teacher_temp"))
    check("reference lr 0.005 after the scaling rule", abs(lr_base - 0.005) < 1e-15, repr(lr_base))
    check("reference: lr at 276,799 = 6.17e-4", round(lr, 6) == 6.17e-4, repr(lr))
    check("reference: weight decay at 276,799 = 0.3587", round(wd, 4) == 0.3587, repr(wd))
    check("reference: momentum at 276,799 = 0.99899", round(mom, 5) == 0.99899, repr(mom))
    check("reference: teacher temp 0.04 at 0, 0.07 from 23,999", schedules["teacher_temp"][0] == 0.04
          and schedules["teacher_temp"][23999] == 0.07 and temp == 0.07)
    check("reference: last-layer lr 0 below 800, = lr from 800",
          last_layer[799] == 0 and last_layer[800] == schedules["lr"][800] > 0)
    check("reference: int(T / s) = 354,871", int(total / s) == 354871)
    print(f"  lr[276799] = {lr!r}  wd = {wd!r}  momentum = {mom!r}")
    return out


def main():
    torch.manual_seed(0)
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        gen = torch.Generator().manual_seed(1234 if tag == "f32" else 5678)
        tensors = {}
        tensors.update(adamw_tensors(dtype, gen))
        tensors.update(clip_tensors(dtype, gen))
        tensors.update(ema_tensors(dtype, gen))
        size = write_safetensors(os.path.join(OUT, f"optim_{tag}.safetensors"), tensors,
                                 {"script": "tests/golden/make_optim_fixtures.py", "steps": str(STEPS)})
        print(f"  optim_{tag}.safetensors: {size} bytes")
    size = write_safetensors(os.path.join(OUT, "optim_schedules.safetensors"), schedule_tensors(),
                             {"script": "tests/golden/make_optim_fixtures.py"})
    print(f"  optim_schedules.safetensors: {size} bytes")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
