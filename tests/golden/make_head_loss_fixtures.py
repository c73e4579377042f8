#!/usr/bin/python3
"""Golden fixtures for the projection heads and the loss math, in plain PyTorch (float64).

Run: /usr/bin/python3 tests/golden/make_head_loss_fixtures.py   (Debian's python3-torch, CPU; ~2 s)
Rewrites tests/golden/fixtures/head_*.safetensors and loss_*.safetensors deterministically (fixed
seeds), prints its self-checks and exits non-zero if one fails. Read by tests/c/test_heads.c and
tests/c/test_losses.c.

Heads (reference/poa-vit-and-training.md §2): H = 2 heads, in_dim 96, hidden 48, bottleneck 16,
K = 40 and 56. Head h: mlp{h}.0 Linear(96 -> 48) GELU(exact erf) mlp{h}.2 Linear(48 -> 48) GELU
mlp{h}.4 Linear(48 -> 16), F.normalize(p=2, dim=-1, eps=1e-12), last_layer{h} =
torch.nn.utils.weight_norm(Linear(16 -> K, bias=False)) (weight_g (K,1), weight_v (K,16)).
The elastic case feeds width D = 64: the first layer is F.linear(alpha * x, W0[:, :D], b0) with
alpha = 96 / 64; everything after is shared. The intact case is D = 96, alpha = 1.
Loss of a case = sum_h sum(logits_h * dlogits_h) with fixed random dlogits.

Files:
  head_params.safetensors    F32, every head parameter at its intact shape, names as runtime/head.h:
      mlp{h}.0.weight (48,96), mlp{h}.0.bias (48), mlp{h}.2.weight (48,48), mlp{h}.2.bias (48),
      mlp{h}.4.weight (16,48), mlp{h}.4.bias (16), last_layer{h}.weight_g (K,1),
      last_layer{h}.weight_v (K,16). Random: weights N(0,1)/sqrt(fan_in), biases N(0,0.1),
      weight_g U(0.5,1.5) (1 at init in the reference; randomised here so its gradient path is
      tested), weight_v N(0,1)/4.
      metadata: heads, in_dim, hidden, bottleneck, prototypes ("40,56").
  head_<case>.safetensors, case intact_96 / elastic_64 (rows = 7):
      input.x        F32 (7, D)       head input features
      dlogits.{h}    F32 (7, K_h)     upstream gradient
      logits.{h}     F64 (7, K_h)     forward output
      dx             F64 (7, D)       d loss / d x (summed over heads)
      grad.<param>   F64, intact shape, d loss / d param (zero outside mlp{h}.0.weight[:, :D])
      metadata: width, alpha, rows.

Losses (reference §3.3-3.5):
  loss_sinkhorn.safetensors: logits.{a,b} F32 (n, K) and targets.{a,b} F64 (n, K):
      case a: n = 12, K = 40, tau = 0.04, 3 iterations; case b: n = 9, K = 56, tau = 0.07,
      3 iterations; plus targets.a1 (case a logits, 1 iteration) and targets.a0 (0 iterations).
      The reference's algorithm as written (no max subtraction): Q = exp(logits / tau)^T (K, n);
      Q /= sum(Q); repeat: Q /= Q.sum(1) (per prototype), Q /= K; Q /= Q.sum(0) (per sample),
      Q /= n; finally Q *= n, transposed back. Self-check: equal to the global-max-subtracted
      version. metadata: tau_a, tau_b, iterations.
  loss_softmax.safetensors: logits F32 (7, 40), targets F64 = softmax(logits / 0.1, dim=-1).
  loss_ce.safetensors: soft cross-entropy sum_r w_r CE(p_r, logits_r / T),
      CE(p, s) = -sum_j p_j log_softmax(s)_j, T = 0.1, w_r = scale * weight_r:
      targets F32 (10, 40) (rows 0..7 SK-like probability rows, row 8 all zero as an iBOT padding
      row, row 9 a row summing to 0.7), logits F32 (10, 40), weight F32 (10) (one 0),
      value F64 (), dlogits F64 (10, 40) by autograd. metadata: temperature, scale.
  loss_koleo.safetensors: case a x.a F32 (9, 24), scale 0.1; case b x.b F32 (6, 16) with one
      row scaled to 1e-9 (below the eps of the normalisation), scale 1; case c x.c F32 (5, 8) with
      rows 1 and 3 equal (their distance is the eps alone: ||1e-8 * ones||), scale 0.1;
      value.{a,b,c} F64 () = scale * KoLeo, dx.{a,b,c} F64 by autograd, nn.{a,b,c} F64 (the neighbour
      indices). KoLeo(z) = -mean_i log(PairwiseDistance(2, eps=1e-8)(zhat_i, zhat_nn(i)) + 1e-8),
      zhat = F.normalize(z, eps=1e-8), nn = argmax of zhat zhat^T with the diagonal set to -1.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vit_fixtures import write_safetensors  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
H, IN_DIM, HIDDEN, BOTTLENECK, PROTOTYPES, ROWS = 2, 96, 48, 16, [40, 56], 7
torch.set_default_dtype(torch.float64)


class Checks:
    def __init__(self):
        self.failed = 0

    def __call__(self, name, ok, detail=""):
        print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""))
        self.failed += 0 if ok else 1


def random_head_params(gen):
    """float32 values, returned as float64 tensors (the model computes in float64)."""
    p = {}
    for h in range(H):
        k = PROTOTYPES[h]
        for name, out_f, in_f in (("0", HIDDEN, IN_DIM), ("2", HIDDEN, HIDDEN), ("4", BOTTLENECK, HIDDEN)):
            p[f"mlp{h}.{name}.weight"] = torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)
            p[f"mlp{h}.{name}.bias"] = 0.1 * torch.randn(out_f, generator=gen)
        p[f"last_layer{h}.weight_g"] = 0.5 + torch.rand(k, 1, generator=gen)
        p[f"last_layer{h}.weight_v"] = torch.randn(k, BOTTLENECK, generator=gen) / 4
    return {n: t.float().double() for n, t in p.items()}


class Head(torch.nn.Module):
    """One head as torch modules; the first layer is applied by hand (sliced, alpha-scaled)."""

    def __init__(self, p, h):
        super().__init__()
        k = PROTOTYPES[h]
        self.w0 = torch.nn.Parameter(p[f"mlp{h}.0.weight"].clone())
        self.b0 = torch.nn.Parameter(p[f"mlp{h}.0.bias"].clone())
        self.l2 = torch.nn.Linear(HIDDEN, HIDDEN)
        self.l4 = torch.nn.Linear(HIDDEN, BOTTLENECK)
        self.last = torch.nn.utils.weight_norm(torch.nn.Linear(BOTTLENECK, k, bias=False))
        with torch.no_grad():
            self.l2.weight.copy_(p[f"mlp{h}.2.weight"]), self.l2.bias.copy_(p[f"mlp{h}.2.bias"])
            self.l4.weight.copy_(p[f"mlp{h}.4.weight"]), self.l4.bias.copy_(p[f"mlp{h}.4.bias"])
            self.last.weight_g.copy_(p[f"last_layer{h}.weight_g"])
            self.last.weight_v.copy_(p[f"last_layer{h}.weight_v"])
        self.h = h

    def forward(self, x, d):
        alpha = IN_DIM / d
        y = F.gelu(F.linear(alpha * x, self.w0[:, :d], self.b0))
        y = F.gelu(self.l2(y))
        y = F.normalize(self.l4(y), p=2, dim=-1, eps=1e-12)
        return self.last(y)

    def grads(self):
        h = self.h
        return {f"mlp{h}.0.weight": self.w0.grad, f"mlp{h}.0.bias": self.b0.grad,
                f"mlp{h}.2.weight": self.l2.weight.grad, f"mlp{h}.2.bias": self.l2.bias.grad,
                f"mlp{h}.4.weight": self.l4.weight.grad, f"mlp{h}.4.bias": self.l4.bias.grad,
                f"last_layer{h}.weight_g": self.last.weight_g.grad,
                f"last_layer{h}.weight_v": self.last.weight_v.grad}


def plain_head(p, h, x, d):
    """The same head written out by hand: an independent check of the module version."""
    a = F.linear(x * (IN_DIM / d), p[f"mlp{h}.0.weight"][:, :d], p[f"mlp{h}.0.bias"])
    a = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
    a = a @ p[f"mlp{h}.2.weight"].T + p[f"mlp{h}.2.bias"]
    a = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
    z = a @ p[f"mlp{h}.4.weight"].T + p[f"mlp{h}.4.bias"]
    u = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    v = p[f"last_layer{h}.weight_v"]
    w = p[f"last_layer{h}.weight_g"] * v / v.norm(dim=1, keepdim=True)
    return u @ w.T


def head_case(params, name, d, gen, check):
    x = torch.randn(ROWS, d, generator=gen).float().double().requires_grad_(True)
    dlogits = [torch.randn(ROWS, k, generator=gen).float().double() for k in PROTOTYPES]
    heads = [Head(params, h) for h in range(H)]
    logits = [heads[h](x, d) for h in range(H)]
    loss = sum((logits[h] * dlogits[h]).sum() for h in range(H))
    loss.backward()
    out = {"input.x": x.detach().float(), "dx": x.grad.clone()}
    grads = {}
    for h in range(H):
        out[f"dlogits.{h}"] = dlogits[h].float()
        out[f"logits.{h}"] = logits[h].detach()
        grads.update(heads[h].grads())
    for n, g in grads.items():
        out["grad." + n] = g.clone()
    # self-checks: an independent plain version (value and autograd of it) agrees
    pp = {n: t.clone().requires_grad_(True) for n, t in params.items()}
    x2 = x.detach().clone().requires_grad_(True)
    plain = [plain_head(pp, h, x2, d) for h in range(H)]
    loss2 = sum((plain[h] * dlogits[h]).sum() for h in range(H))
    loss2.backward()
    err = max(float((plain[h] - logits[h]).abs().max()) for h in range(H))
    err = max(err, float((x2.grad - x.grad).abs().max()))
    err = max(err, max(float((pp[n].grad - g).abs().max()) for n, g in grads.items()))
    check(f"head {name}: modules (weight_norm) == plain formulas, values and grads", err < 1e-12, f"{err:.2g}")
    outside = max(float(grads[f"mlp{h}.0.weight"][:, d:].abs().max()) if d < IN_DIM else 0.0 for h in range(H))
    inside = min(float(grads[f"mlp{h}.0.weight"][:, :d].abs().max()) for h in range(H))
    check(f"head {name}: mlp.0.weight grad zero outside [:, :{d}], nonzero inside", outside == 0 and inside > 0)
    # a float32 run of the same modules stays close (what the C fp32 build will see)
    x32 = x.detach().float().requires_grad_(True)
    heads32 = [Head(params, h).float() for h in range(H)]
    l32 = [heads32[h](x32, d) for h in range(H)]
    sum((l32[h] * dlogits[h].float()).sum() for h in range(H)).backward()
    rel = max(float((l32[h].double() - logits[h]).abs().max() / logits[h].abs().max()) for h in range(H))
    grel = max(float((heads32[h].grads()[n].double() - g).abs().max() / g.abs().max())
               for h in range(H) for n, g in heads[h].grads().items())
    check(f"head {name}: float32 run within 1e-4", rel < 1e-4 and grel < 1e-4, f"logits {rel:.2g}, grads {grel:.2g}")
    path = os.path.join(FIXTURES, f"head_{name}.safetensors")
    size = write_safetensors(path, out, {"width": str(d), "alpha": repr(IN_DIM / d), "rows": str(ROWS)})
    print(f"wrote {path} ({size} bytes)")


def sinkhorn_reference(logits, tau, iterations):
    """The reference's text: no max subtraction."""
    q = torch.exp(logits / tau).t()
    k, n = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True)
        q = q / k
        q = q / q.sum(dim=0, keepdim=True)
        q = q / n
    return (q * n).t()


def sinkhorn_max_subtracted(logits, tau, iterations):
    return sinkhorn_reference(logits - logits.max(), tau, iterations)


def loss_fixtures(gen, check):
    # Sinkhorn-Knopp: logits as the head makes them (|logit| <= g ~ 1)
    out, sk = {}, {}
    for case, n, k, tau in (("a", 12, 40, 0.04), ("b", 9, 56, 0.07)):
        logits = (torch.rand(n, k, generator=gen) * 2 - 1).float().double()
        out[f"logits.{case}"] = logits.float()
        out[f"targets.{case}"] = sinkhorn_reference(logits, tau, 3)
        sk[case] = out[f"targets.{case}"]
        err = float((sinkhorn_max_subtracted(logits, tau, 3) - out[f"targets.{case}"]).abs().max())
        check(f"sinkhorn {case}: global-max-subtracted == reference text", err < 1e-14, f"{err:.2g}")
        rows = float((out[f"targets.{case}"].sum(1) - 1).abs().max())
        check(f"sinkhorn {case}: rows sum to 1", rows < 1e-14, f"{rows:.2g}")
    out["targets.a1"] = sinkhorn_reference(out["logits.a"].double(), 0.04, 1)
    out["targets.a0"] = sinkhorn_reference(out["logits.a"].double(), 0.04, 0)
    write_safetensors(os.path.join(FIXTURES, "loss_sinkhorn.safetensors"), out,
                      {"tau_a": "0.04", "tau_b": "0.07", "iterations": "3"})

    logits = (torch.randn(7, 40, generator=gen)).float().double()
    write_safetensors(os.path.join(FIXTURES, "loss_softmax.safetensors"),
                      {"logits": logits.float(), "targets": torch.softmax(logits / 0.1, dim=-1)},
                      {"temperature": "0.1"})

    # soft cross-entropy
    t, scale = 0.1, 0.37
    targets = torch.cat([sk["a"][:8, :40], torch.zeros(1, 40), 0.7 * torch.softmax(torch.randn(1, 40, generator=gen), -1)])
    targets = targets.float().double()
    logits = (torch.rand(10, 40, generator=gen) * 2 - 1).float().double().requires_grad_(True)
    weight = torch.rand(10, generator=gen).float().double()
    weight[3] = 0
    per_row = -(targets * F.log_softmax(logits / t, dim=-1)).sum(-1)
    value = (scale * weight * per_row).sum()
    value.backward()
    soft = torch.softmax(logits.detach() / t, -1)
    closed = (scale * weight)[:, None] * (targets.sum(-1, keepdim=True) * soft - targets) / t
    err = float((closed - logits.grad).abs().max())
    check("cross-entropy: autograd == w (sum(p) softmax - p) / T", err < 1e-12, f"{err:.2g}")
    write_safetensors(os.path.join(FIXTURES, "loss_ce.safetensors"),
                      {"targets": targets.float(), "logits": logits.detach().float(), "weight": weight.float(),
                       "value": value.detach(), "dlogits": logits.grad.clone()},
                      {"temperature": repr(t), "scale": repr(scale)})

    # KoLeo
    out = {}
    pdist = torch.nn.PairwiseDistance(2, eps=1e-8)
    for case, n, d, scale in (("a", 9, 24, 0.1), ("b", 6, 16, 1.0), ("c", 5, 8, 0.1)):
        x = torch.randn(n, d, generator=gen)
        if case == "b":
            x[4] *= 1e-9
        if case == "c":
            x[3] = x[1]
        x = x.float().double().requires_grad_(True)
        z = F.normalize(x, eps=1e-8, p=2, dim=-1)
        dots = z @ z.t()
        dots.view(-1)[:: n + 1].fill_(-1)
        nn = dots.max(dim=1).indices
        dist = pdist(z, z[nn])
        value = scale * -torch.log(dist + 1e-8).mean()
        value.backward()
        out[f"x.{case}"] = x.detach().float()
        out[f"value.{case}"] = value.detach()
        out[f"dx.{case}"] = x.grad.clone()
        out[f"nn.{case}"] = nn.double()
        # the neighbours are well separated (no near-ties that float32 could flip), counting the
        # equal rows of case c once; their exact ties go to the first index, as in the C code
        dd = dots.detach().clone()
        if case == "c":
            dd[:, 3] = -2
            check("koleo c: exact ties between the equal rows go to the first index (1)",
                  all(int(nn[i]) != 3 for i in range(n) if i not in (1, 3)) and int(nn[1]) == 3 and int(nn[3]) == 1)
        srt = dd.sort(dim=1, descending=True).values
        gap = float((srt[:, 0] - srt[:, 1]).min())
        check(f"koleo {case}: nearest-neighbour margin {gap:.2g} > 1e-4", gap > 1e-4)
    write_safetensors(os.path.join(FIXTURES, "loss_koleo.safetensors"), out,
                      {"scale_a": "0.1", "scale_b": "1", "scale_c": "0.1"})


def main():
    check = Checks()
    gen = torch.Generator().manual_seed(20240604)
    params = random_head_params(gen)
    write_safetensors(os.path.join(FIXTURES, "head_params.safetensors"), {n: t.float() for n, t in params.items()},
                      {"heads": str(H), "in_dim": str(IN_DIM), "hidden": str(HIDDEN),
                       "bottleneck": str(BOTTLENECK), "prototypes": ",".join(map(str, PROTOTYPES))})
    head_case(params, "intact_96", 96, gen, check)
    head_case(params, "elastic_64", 64, gen, check)
    loss_fixtures(gen, check)
    print(f"{check.failed} self-check(s) failed" if check.failed else "all self-checks passed")
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    main()
