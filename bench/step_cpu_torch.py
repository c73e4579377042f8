#!/usr/bin/python3
"""CPU time of one POA tri-branch training step: poa against the same step in PyTorch.

    /usr/bin/python3 bench/step_cpu_torch.py [RECIPE] [--steps N] [--warmup W] [--ibot 0|1]
        [--batch B] [--threads T] [--member WxD] [--rounds R] [section.field=value ...]

Runs build/bench/step_cpu (poa's CPU trainer) with the recipe, batch, overrides and options
given, reads back its shapes, the iBOT mask counts per global-crop slot and the elastic members
it drew (warm-up steps included), then times the same steps in PyTorch (float32, the same
number of threads, OMP_WAIT_POLICY=PASSIVE on both sides unless set) and prints a table with the
median wall ms per step, the median process-CPU ms per step, images/s and torch / poa
(> 1 means poa is faster). With --rounds R the two sides alternate R times and the medians are
taken over every timed step of every round (the machine's load drifts).

The PyTorch step follows reference/poa-vit-and-training.md §3-§5 (SSLMetaArch.forward_backward):
  teacher (no grad, no drop path) on the global crops -> CLS (and masked patch tokens when iBOT
  is on) -> the teacher heads -> Sinkhorn-Knopp (3 iterations, no max subtraction) per head;
  intact then elastic student, each: backbone on the global crops (masked when iBOT is on) and
  on the local crops with exact-count drop path (keep = max(int(b (1 - rate)), 1) random rows
  scaled b / keep, per block and residual branch), heads (torch.nn.utils.weight_norm last
  layers, first layer sliced and alpha-scaled) on [local CLS; global CLS; masked patches];
  cross-view DINO CE over G*L + G*(G-1) pairs, same-view distillation with softmax(intact /
  0.1) detached targets (elastic only), KoLeo (nn.PairwiseDistance eps 1e-8) on the global CLS
  per crop, iBOT per-token weights 1 / masked tokens of the image over G*B images;
  one backward of the summed loss, clip_grad_norm_ per module (backbone, heads),
  torch.optim.AdamW (foreach) with the reference's parameter groups (layer decay, patch-embed
  multiplier, no decay for biases / norms / gammas, last-layer groups), then the EMA of every
  teacher parameter with torch._foreach_mul_ / _foreach_add_.
The backbone is the golden tests' dynamic ViT (tests/golden/make_vit_fixtures.py forward()).
The crops are N(0, 1) values and the masks random positions with poa's per-slot counts: the
values differ from poa's, the shapes, counts and members are the same. This is a benchmark,
not a test.
"""
import argparse
import math
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "golden"))
import make_vit_fixtures as vit  # noqa: E402  (the golden tests' PyTorch model)
from make_head_loss_fixtures import sinkhorn_reference  # noqa: E402


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
    info = {}
    for line in out.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "config":
            w = words[1:]
            i = 0
            while i < len(w):
                key = w[i]
                j = i + 1
                vals = []
                while j < len(w) and re.match(r"^-?[\d.e+-]+$", w[j]):
                    vals.append(float(w[j]))
                    j += 1
                info[key] = vals if len(vals) > 1 else vals[0]
                i = j
        elif words[0] == "masks":
            info["masks"] = [int(v) for v in words[1:]]
        elif words[0] == "members":
            info["members"] = [tuple(int(x) for x in m.split("x")) for m in words[1:]]
        elif line.startswith("step median"):
            m = re.search(r"wall ms ([\d.]+) cpu ms ([\d.]+)", line)
            info["wall"], info["cpu"] = float(m.group(1)), float(m.group(2))
    info["raw"] = out
    return info


# ---------------------------------------------------------------- heads


class Head(torch.nn.Module):
    """MDINOHead's head h: Linear(in, hidden) GELU Linear GELU Linear(hidden, bottleneck),
    L2 normalise, weight_norm Linear(bottleneck, K, bias=False); the first layer takes a width-d
    input through its first d columns with the input scaled by in / d (DynamicLinear)."""

    def __init__(self, in_dim, hidden, bottleneck, k):
        super().__init__()
        self.in_dim = in_dim
        self.w0 = torch.nn.Parameter(torch.empty(hidden, in_dim))
        self.b0 = torch.nn.Parameter(torch.zeros(hidden))
        self.l2 = torch.nn.Linear(hidden, hidden)
        self.l4 = torch.nn.Linear(hidden, bottleneck)
        for w in (self.w0, self.l2.weight, self.l4.weight):
            torch.nn.init.trunc_normal_(w, std=0.02)
        torch.nn.init.zeros_(self.l2.bias), torch.nn.init.zeros_(self.l4.bias)
        self.last = torch.nn.utils.weight_norm(torch.nn.Linear(bottleneck, k, bias=False))
        self.last.weight_g.data.fill_(1)

    def forward(self, x, d):
        y = F.gelu(F.linear(x * (self.in_dim / d), self.w0[:, :d], self.b0))
        y = F.gelu(self.l2(y))
        y = F.normalize(self.l4(y), p=2, dim=-1, eps=1e-12)
        return self.last(y)


def sinkhorn(logits, tau, iterations):
    """SK as the reference (no max subtraction), in float32: the golden fixtures' version."""
    return sinkhorn_reference(logits.float(), tau, iterations)


def koleo(x, pdist):
    """KoLeoLoss.forward (DINOv2): normalise, nearest neighbour by inner product, -mean log d."""
    x = F.normalize(x, eps=1e-8, p=2, dim=-1)
    with torch.no_grad():
        dots = torch.mm(x, x.t())
        n = x.shape[0]
        dots.view(-1)[:: (n + 1)].fill_(-1)
        _, nn_index = torch.max(dots, dim=1)
    return -torch.log(pdist(x, x[nn_index]) + 1e-8).mean()


def ce(targets, logits, temp):
    """Row-wise soft cross entropy -sum_k t_k log softmax(s / T)_k (rows x 1)."""
    return -(targets * F.log_softmax(logits / temp, dim=-1)).sum(dim=-1)


# ---------------------------------------------------------------- the step


class TorchStep:
    def __init__(self, cfg, threads):
        torch.manual_seed(0)
        torch.set_num_threads(threads)
        wmin, wmax = (int(v) for v in cfg["width"])
        dmin, dmax = (int(v) for v in cfg["depth"])
        patch, self.head_dim, mlp_ratio = int(cfg["patch"]), int(cfg["head_dim"]), int(cfg["mlp_ratio"])
        self.G, self.S = (int(v) for v in cfg["global"])
        self.L, self.s = (int(v) for v in cfg["local"])
        self.B = int(cfg["batch"])
        self.cfg = cfg
        vit.DMAX, vit.LMAX, vit.PATCH, vit.HEAD_DIM, vit.MLP_RATIO = wmax, dmax, patch, self.head_dim, mlp_ratio
        vit.FMAX, vit.GLOBAL_PX = mlp_ratio * wmax, self.S
        self.D, self.depth = wmax, dmax
        self.N = (self.S // patch) ** 2
        # backbone: random values at the init's scale (LayerScale = the recipe's value)
        p = vit.random_params(torch.Generator().manual_seed(0))
        for name in p:
            if name.endswith("gamma"):
                p[name] = torch.full_like(p[name], float(cfg["layerscale"]))
        self.student = {n: t.clone().requires_grad_() for n, t in p.items()}
        self.teacher = {n: t.clone() for n, t in p.items()}
        protos = cfg["prototypes"] if isinstance(cfg["prototypes"], list) else [cfg["prototypes"]]
        self.heads = torch.nn.ModuleList(
            Head(wmax, int(cfg["hidden"]), int(cfg["bottleneck"]), int(k)) for k in protos)
        self.teacher_heads = torch.nn.ModuleList(
            Head(wmax, int(cfg["hidden"]), int(cfg["bottleneck"]), int(k)) for k in protos)
        self.teacher_heads.load_state_dict(self.heads.state_dict())  # the teacher starts as a copy
        for q in self.teacher_heads.parameters():
            q.requires_grad_(False)
        self.pdist = torch.nn.PairwiseDistance(2, eps=1e-8)
        # parameter groups (§5.2), fused by identical (lr_mult, wd_mult, last_layer)
        decay, pe_mult = float(cfg["layerwise_decay"]), float(cfg["patch_embed_lr_mult"])
        fused = {}

        def add(param, lr_mult, wd_mult, last):
            fused.setdefault((lr_mult, wd_mult, last), []).append(param)

        for name, t in self.student.items():
            if name.startswith(("patch_embed", "pos_embed", "cls_token", "mask_token")):
                layer = 0
            elif name.startswith("blocks."):
                layer = int(name.split(".")[1]) + 1
            else:
                layer = dmax + 1
            lr_mult = decay ** (dmax + 1 - layer) * (pe_mult if name.startswith("patch_embed") else 1)
            wd_mult = 0.0 if name.endswith(".bias") or "norm" in name or "gamma" in name else 1.0
            add(t, lr_mult, wd_mult, False)
        for name, t in self.heads.named_parameters():
            add(t, 1.0, 0.0 if name.endswith("b0") or name.endswith(".bias") else 1.0, "last" in name)
        lr, wd = 1e-4, 0.04
        groups = [{"params": ps, "lr": lr * lm, "weight_decay": wd * wm} for (lm, wm, _), ps in fused.items()]
        self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=(float(cfg["beta1"]), float(cfg["beta2"])),
                                           eps=float(cfg["eps"]), foreach=True)
        self.backbone_params = list(self.student.values())
        self.head_params = list(self.heads.parameters())
        self.student_all = self.backbone_params + self.head_params
        self.teacher_all = list(self.teacher.values()) + list(self.teacher_heads.parameters())

        # one synthetic batch: crops crop-major, masks with poa's per-slot counts
        g = torch.Generator().manual_seed(1)
        self.global_crops = torch.randn(self.G * self.B, 3, self.S, self.S, generator=g)
        self.local_crops = torch.randn(self.L * self.B, 3, self.s, self.s, generator=g)
        counts = cfg["masks"]
        mask = torch.zeros(self.G * self.B, self.N, dtype=torch.bool)
        weights = torch.zeros(self.G * self.B, self.N)
        for slot, c in enumerate(counts):
            if c:
                mask[slot, torch.randperm(self.N, generator=g)[:c]] = True
                weights[slot] = 1.0 / c
        self.mask = mask
        self.mask_index = mask.flatten().nonzero().flatten()
        self.mask_weights = weights.flatten()[self.mask_index]
        self.ibot = int(cfg["ibot"]) and len(self.mask_index) > 0

    def drop_scales(self, depth, rows):
        rate = float(self.cfg["drop_path"])
        if rate <= 0:
            return torch.ones(depth, 2, rows)
        keep = max(int(rows * (1 - rate)), 1)
        s = torch.zeros(depth, 2, rows)
        for j in range(depth):
            for b in range(2):
                s[j, b, torch.randperm(rows)[:keep]] = rows / keep
        return s

    def student_branch(self, width, depth):
        GB, LB = self.G * self.B, self.L * self.B
        g = vit.forward(self.student, width, depth, self.global_crops,
                        self.mask if self.ibot else None, self.drop_scales(depth, GB))
        loc = vit.forward(self.student, width, depth, self.local_crops, None, self.drop_scales(depth, LB))
        rows = [loc[:, 0], g[:, 0]]
        if self.ibot:
            rows.append(g[:, 1:].reshape(-1, width)[self.mask_index])
        feats = torch.cat(rows)
        logits = [head(feats, width) for head in self.heads]
        return g[:, 0], logits

    def step(self, member, temp=0.04):
        c = self.cfg
        G, L, B = self.G, self.L, self.B
        GB, LB = G * B, L * B
        H = len(self.heads)
        T, lam = float(c["student_temp"]), float(c["lambda"])
        self.optimizer.zero_grad(set_to_none=True)
        # teacher (no grad, eval: no drop path, no masks)
        with torch.no_grad():
            t = vit.forward(self.teacher, self.D, self.depth, self.global_crops, None,
                            torch.ones(self.depth, 2, GB))
            rows = [t[:, 0]]
            if self.ibot:
                rows.append(t[:, 1:].reshape(-1, self.D)[self.mask_index])
            tin = torch.cat(rows)
            P_cls, P_patch = [], []
            for head in self.teacher_heads:
                z = head(tin, self.D)
                P_cls.append(sinkhorn(z[:GB], temp, int(c["sinkhorn"])))
                if self.ibot:
                    P_patch.append(sinkhorn(z[GB:], temp, int(c["sinkhorn"])))
        pairs = G * L + G * (G - 1)
        loss = 0.0
        intact_logits = None
        branches = [((self.D, self.depth), lam), (member, 1 - lam)]
        for x, ((width, depth), weight) in enumerate(branches):
            cls, logits = self.student_branch(width, depth)
            for h in range(H):
                S = logits[h]
                S_local, S_global = S[:LB], S[LB:LB + GB]
                P = P_cls[h]
                # (a) cross-view DINO: teacher crop g against every local crop and every other global crop
                dino = 0.0
                for gi in range(G):
                    Pg = P[gi * B:(gi + 1) * B]
                    for li in range(L):
                        dino = dino + ce(Pg, S_local[li * B:(li + 1) * B], T).mean()
                    for s2 in range(G):
                        if s2 != gi:
                            dino = dino + ce(Pg, S_global[s2 * B:(s2 + 1) * B], T).mean()
                loss = loss + float(c["dino_weight"]) * weight / H * dino / pairs
                # (b) same-view distillation intact -> elastic
                if x == 1:
                    SI = intact_logits[h].detach()
                    Q = F.softmax(SI / float(c["distill_temp"]), dim=-1)
                    sv = ce(Q[:LB], S_local, T).mean() + ce(Q[LB:LB + GB], S_global, T).mean()
                    loss = loss + (1 - lam) / H * sv
                # (d) iBOT
                if self.ibot:
                    ib = (self.mask_weights * ce(P_patch[h], S[LB + GB:], T)).sum() / GB
                    loss = loss + float(c["ibot_weight"]) * weight / H * ib
            # (c) KoLeo per global crop
            ko = sum(koleo(cls[gi * B:(gi + 1) * B], self.pdist) for gi in range(G))
            loss = loss + float(c["koleo_weight"]) * 0.5 * ko
            if x == 0:
                intact_logits = logits
        loss.backward()
        if not math.isnan(float(loss)):
            clip = float(c["clip"])
            torch.nn.utils.clip_grad_norm_(self.backbone_params, clip)
            torch.nn.utils.clip_grad_norm_(self.head_params, clip)
            self.optimizer.step()
            with torch.no_grad():
                m = 0.99
                torch._foreach_mul_(self.teacher_all, m)
                torch._foreach_add_(self.teacher_all, self.student_all, alpha=1 - m)
        return float(loss)


def time_torch(cfg, threads, members, warmup, verbose):
    st = TorchStep(cfg, threads)
    wall, cpu = [], []
    for i, member in enumerate(members):
        w0, c0 = time.perf_counter(), time.process_time()
        loss = st.step(member)
        w1, c1 = time.perf_counter(), time.process_time()
        if i >= warmup:
            wall.append((w1 - w0) * 1e3)
            cpu.append((c1 - c0) * 1e3)
        if verbose:
            print(f"  torch step {i - warmup} member {member[0]}x{member[1]} loss {loss:.4f} "
                  f"wall ms {(w1 - w0) * 1e3:.1f}", file=sys.stderr)
    return wall, cpu


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


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
