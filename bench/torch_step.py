"""The POA tri-branch training step in PyTorch, shared by the step benchmarks' peers:
bench/step_cpu_torch.py (CPU, float32) and bench/step_gpu_torch.py (CUDA, bf16 autocast).

The step follows reference/poa-vit-and-training.md §3-§5 (SSLMetaArch.forward_backward):
  teacher (no grad, no drop path) on the global crops -> CLS (and masked patch tokens when iBOT
  is on) -> the teacher heads -> Sinkhorn-Knopp (3 iterations, no max subtraction) per head;
  intact then elastic student, each: backbone on the global crops (masked when iBOT is on) and
  on the local crops with exact-count drop path, heads (torch.nn.utils.weight_norm last layers,
  first layer sliced and alpha-scaled) on [local CLS; global CLS; masked patches]; cross-view
  DINO CE over G*L + G*(G-1) pairs (one log-softmax per student row, as DINOLoss), same-view
  distillation with softmax(intact / 0.1) detached targets (elastic only), KoLeo
  (nn.PairwiseDistance eps 1e-8) on the global CLS per crop, iBOT per-token weights
  1 / masked tokens of the image over G*B images; all loss math in float32; one backward of the
  summed loss, the NaN check on the loss (a host sync, as the reference), clip_grad_norm_ per
  module (backbone, heads), AdamW with the reference's parameter groups (layer decay,
  patch-embed multiplier, no decay for biases / norms / gammas, last-layer groups), then the
  EMA of every teacher parameter.
Not reproduced: the zero rows that pad the reference's head input up to `upperbound` (about 1%
more head rows; leaving them out only makes this peer faster) and fp16 with a loss scaler
(the reference's precision; the GPU peer runs bf16 autocast, as poa).

Two backbones compute the reference's dynamic ViT (tests/golden/make_vit_fixtures.py's
parameters and conventions):
  "golden": make_vit_fixtures.forward itself, drop path as a per-sample scale (0 or b / keep)
    on every row: the same arithmetic as poa's CPU step;
  "reference": what the official DinoVisionTransformer runs: the full patch-embed conv then the
    first D channels, qkv weights sliced per q/k/v group, F.scaled_dot_product_attention (plain
    softmax attention where this torch has none), and drop_add_residual_stochastic_depth: each
    residual branch evaluated on the keep = max(int(b (1 - rate)), 1) rows of a random
    permutation only and index_add-ed back times b / keep.
check_backbones() shows that both compute the same outputs and gradients.
"""
import math
import os
import re
import sys
import time
import warnings

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "golden"))
import make_vit_fixtures as vit  # noqa: E402  (the golden tests' PyTorch model)
from make_head_loss_fixtures import sinkhorn_reference  # noqa: E402

torch.set_default_dtype(torch.float32)  # make_head_loss_fixtures sets float64 when imported

HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


def parse_step_lines(out):
    """The lines of bench/step_cpu, bench/step_config (and a GPU step printing the same):
    "config key value...", "masks n...", "members WxD...", "step median ... images/s X"."""
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
            if m:
                info["wall"], info["cpu"] = float(m.group(1)), float(m.group(2))
            m = re.search(r"images/s ([\d.]+)", line)
            if m:
                info["images_per_s"] = float(m.group(1))
    info["raw"] = out
    return info


# ---------------------------------------------------------------- heads and losses


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
        with warnings.catch_warnings():  # the reference's (older) weight_norm, deprecated in torch 2
            warnings.simplefilter("ignore")
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
    x = F.normalize(x.float(), eps=1e-8, p=2, dim=-1)
    with torch.no_grad():
        dots = torch.mm(x, x.t())
        n = x.shape[0]
        dots.view(-1)[:: (n + 1)].fill_(-1)
        _, nn_index = torch.max(dots, dim=1)
    return -torch.log(pdist(x, x[nn_index]) + 1e-8).mean()


def soft_ce(targets, log_probs):
    """Row-wise soft cross entropy -sum_k t_k log p_k (rows x 1)."""
    return -(targets * log_probs).sum(dim=-1)


# ---------------------------------------------------------------- backbones


def qkv_linear(x, weight, bias, d, alpha):
    """GroupedDynamicLinear: rows [0:d] of each of the q, k, v groups, cols [0:d], input * alpha."""
    dmax = weight.shape[1]
    w = weight.view(3, dmax, dmax)[:, :d, :d].reshape(3 * d, d)
    b = bias.view(3, dmax)[:, :d].reshape(3 * d)
    return F.linear(x * alpha, w, b)


def attention(y, p, b, d, alpha):
    """DynamicAttention with the heads 0 .. d/64-1, scale 1/sqrt(head_dim)."""
    bsz, n, _ = y.shape
    heads = d // vit.HEAD_DIM
    qkv = qkv_linear(y, p[b + "attn.qkv.linear.weight"], p[b + "attn.qkv.linear.bias"], d, alpha)
    q, k, v = qkv.reshape(bsz, n, 3, heads, vit.HEAD_DIM).permute(2, 0, 3, 1, 4)
    if HAVE_SDPA:
        o = F.scaled_dot_product_attention(q, k, v)
    else:
        o = torch.softmax((q @ k.transpose(-2, -1)) * vit.HEAD_DIM ** -0.5, dim=-1) @ v
    o = o.transpose(1, 2).reshape(bsz, n, d)
    return vit.linear(o, p[b + "attn.proj.linear.weight"], p[b + "attn.proj.linear.bias"], d, d, alpha)


def random_subset(rows, keep, device):
    return torch.randperm(rows, device=device)[:keep]


def residual(x, branch, rate, draw):
    """x + branch(x), or with drop path rate > 0 drop_add_residual_stochastic_depth: the branch
    on keep rows only, added back times rows / keep."""
    if rate <= 0:
        return x + branch(x)
    rows = x.shape[0]
    keep = max(int(rows * (1 - rate)), 1)
    index = draw(rows, keep, x.device)
    r = branch(x[index])
    return torch.index_add(x.flatten(1), 0, index, r.flatten(1).to(x.dtype), alpha=rows / keep).view_as(x)


def reference_forward(p, d, depth, images, mask, rate, draw=random_subset):
    """One crop batch through member (d, depth) as the official backbone computes it."""
    alpha = vit.DMAX / d
    x = F.conv2d(images, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=vit.PATCH)[:, :d]
    grid = x.shape[-1]
    x = x.flatten(2).transpose(1, 2)
    if mask is not None:
        x = torch.where(mask.unsqueeze(-1), p["mask_token"][:, :d].unsqueeze(0).to(x.dtype), x)
    x = torch.cat([p["cls_token"][:, :, :d].expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
    x = x + vit.pos_embed_for(p, d, grid)
    for i in vit.block_ids(depth):
        b = f"blocks.{i}."

        def attn_branch(y, b=b):
            y = vit.layer_norm(y, p[b + "norm1.norm.weight"], p[b + "norm1.norm.bias"], d)
            return p[b + "ls1.gamma"][:d] * attention(y, p, b, d, alpha)

        def mlp_branch(y, b=b):
            y = vit.layer_norm(y, p[b + "norm2.norm.weight"], p[b + "norm2.norm.bias"], d)
            return p[b + "ls2.gamma"][:d] * vit.mlp(y, p, b, d, alpha)

        x = residual(x, attn_branch, rate, draw)
        x = residual(x, mlp_branch, rate, draw)
    return vit.layer_norm(x, p["norm.norm.weight"], p["norm.norm.bias"], d)


def golden_scales(depth, rows, rate):
    """Exact-count drop path as per-sample scales (depth, 2, rows): b / keep on keep random rows."""
    if rate <= 0:
        return torch.ones(depth, 2, rows)
    keep = max(int(rows * (1 - rate)), 1)
    s = torch.zeros(depth, 2, rows)
    for j in range(depth):
        for b in range(2):
            s[j, b, torch.randperm(rows)[:keep]] = rows / keep
    return s


def golden_forward(p, d, depth, images, mask, rate):
    scales = golden_scales(depth, images.shape[0], rate).to(images.device, images.dtype)
    return vit.forward(p, d, depth, images, mask, scales)


BACKBONES = {"golden": golden_forward, "reference": reference_forward}


def set_family(width_max, depth_max, patch, head_dim, mlp_ratio, global_px):
    """make_vit_fixtures' model is configured by module globals."""
    vit.DMAX, vit.LMAX, vit.PATCH, vit.HEAD_DIM, vit.MLP_RATIO = width_max, depth_max, patch, head_dim, mlp_ratio
    vit.FMAX, vit.GLOBAL_PX = mlp_ratio * width_max, global_px


def check_backbones(dtype=torch.float64, tolerance=1e-9):
    """The reference backbone against make_vit_fixtures.forward on a small family (widths 32..96,
    depths 2..4, 32 px global and 16 px local crops): outputs and every parameter's gradient,
    with and without masks, with drop path (the golden side gets the scales of the reference
    side's recorded subsets). Returns (worst relative difference, lines)."""
    set_family(96, 4, 8, 32, 4, 32)
    g = torch.Generator().manual_seed(5)
    p0 = {n: t.to(dtype) for n, t in vit.random_params(g).items()}
    worst, lines = 0.0, []
    for d, depth, px, masked, rate in [(96, 4, 32, True, 0.0), (32, 2, 32, True, 0.2), (64, 3, 16, False, 0.2),
                                       (96, 2, 16, False, 0.5), (64, 4, 32, False, 0.0)]:
        rows = 5
        images = torch.randn(rows, 3, px, px, generator=g, dtype=dtype)
        mask = (torch.rand(rows, (px // 8) ** 2, generator=g) < 0.4) if masked else None
        upstream = torch.randn(rows, 1 + (px // 8) ** 2, d, generator=g, dtype=dtype)
        picks = []

        def draw(n, keep, device):
            index = torch.randperm(n, generator=g)[:keep].to(device)
            picks.append(index)
            return index

        results = []
        for side in ("reference", "golden"):
            p = {n: t.clone().requires_grad_() for n, t in p0.items()}
            if side == "reference":
                out = reference_forward(p, d, depth, images, mask, rate, draw)
            else:
                scales = torch.ones(depth, 2, rows, dtype=dtype)
                for k, index in enumerate(picks):
                    scales[k // 2, k % 2] = 0
                    scales[k // 2, k % 2, index] = rows / len(index)
                out = vit.forward(p, d, depth, images, mask, scales)
            (out * upstream).sum().backward()
            results.append((out.detach(), {n: torch.zeros_like(t) if t.grad is None else t.grad
                                           for n, t in p.items()}))
        (oa, ga), (ob, gb) = results
        diff = float((oa - ob).abs().max() / ob.abs().max())
        for n in ga:
            scale = float(gb[n].abs().max())
            if scale > 0:
                diff = max(diff, float((ga[n] - gb[n]).abs().max()) / scale)
            elif float(ga[n].abs().max()) != 0:
                diff = math.inf
        worst = max(worst, diff)
        lines.append(f"{d}x{depth} {px} px mask {int(masked)} drop path {rate}: "
                     f"{len(picks)} subsets, max relative difference {diff:.2e}")
    return worst <= tolerance, worst, lines


# ---------------------------------------------------------------- the step


class TorchStep:
    """One tri-branch step of the family `cfg` (parse_step_lines' dict) on `device`; forward
    passes under autocast(`autocast`) when given; `fused`: torch.optim.AdamW(fused=True), else
    foreach."""

    def __init__(self, cfg, device="cpu", backbone="golden", autocast=None, fused=False):
        torch.manual_seed(0)
        self.device = torch.device(device)
        self.forward = BACKBONES[backbone]
        self.autocast = autocast
        wmin, wmax = (int(v) for v in cfg["width"])
        dmin, dmax = (int(v) for v in cfg["depth"])
        patch, self.head_dim, mlp_ratio = int(cfg["patch"]), int(cfg["head_dim"]), int(cfg["mlp_ratio"])
        self.G, self.S = (int(v) for v in cfg["global"])
        self.L, self.s = (int(v) for v in cfg["local"])
        set_family(wmax, dmax, patch, self.head_dim, mlp_ratio, self.S)
        self.D, self.depth = wmax, dmax
        self.N = (self.S // patch) ** 2
        # backbone: random values at the init's scale (LayerScale = the recipe's value)
        p = vit.random_params(torch.Generator().manual_seed(0))
        for name in p:
            if name.endswith("gamma"):
                p[name] = torch.full_like(p[name], float(cfg["layerscale"]))
        self.student = {n: t.to(self.device).requires_grad_() for n, t in p.items()}
        self.teacher = {n: t.to(self.device).clone() for n, t in p.items()}
        protos = cfg["prototypes"] if isinstance(cfg["prototypes"], list) else [cfg["prototypes"]]
        self.heads = torch.nn.ModuleList(
            Head(wmax, int(cfg["hidden"]), int(cfg["bottleneck"]), int(k)) for k in protos).to(self.device)
        self.teacher_heads = torch.nn.ModuleList(
            Head(wmax, int(cfg["hidden"]), int(cfg["bottleneck"]), int(k)) for k in protos).to(self.device)
        self.teacher_heads.load_state_dict(self.heads.state_dict())  # the teacher starts as a copy
        for q in self.teacher_heads.parameters():
            q.requires_grad_(False)
        self.pdist = torch.nn.PairwiseDistance(2, eps=1e-8)
        # parameter groups (§5.2), fused by identical (lr_mult, wd_mult, last_layer)
        decay, pe_mult = float(cfg["layerwise_decay"]), float(cfg["patch_embed_lr_mult"])
        groups_by_key = {}

        def add(param, lr_mult, wd_mult, last):
            groups_by_key.setdefault((lr_mult, wd_mult, last), []).append(param)

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
        groups = [{"params": ps, "lr": lr * lm, "weight_decay": wd * wm}
                  for (lm, wm, _), ps in groups_by_key.items()]
        kind = {"fused": True} if fused else {"foreach": True}
        self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=(float(cfg["beta1"]), float(cfg["beta2"])),
                                           eps=float(cfg["eps"]), **kind)
        self.backbone_params = list(self.student.values())
        self.head_params = list(self.heads.parameters())
        self.student_all = self.backbone_params + self.head_params
        self.teacher_all = list(self.teacher.values()) + list(self.teacher_heads.parameters())
        self.set_batch(cfg)

    def set_batch(self, cfg):
        """One synthetic batch of cfg's size: crops crop-major, masks with cfg's per-slot counts
        (the values differ from poa's, the shapes and counts are the same)."""
        self.cfg = cfg
        self.B = int(cfg["batch"])
        g = torch.Generator().manual_seed(1)
        self.global_crops = torch.randn(self.G * self.B, 3, self.S, self.S, generator=g).to(self.device)
        self.local_crops = torch.randn(self.L * self.B, 3, self.s, self.s, generator=g).to(self.device)
        counts = cfg["masks"]
        mask = torch.zeros(self.G * self.B, self.N, dtype=torch.bool)
        weights = torch.zeros(self.G * self.B, self.N)
        for slot, c in enumerate(counts):
            if c:
                mask[slot, torch.randperm(self.N, generator=g)[:c]] = True
                weights[slot] = 1.0 / c
        mask_index = mask.flatten().nonzero().flatten()
        self.mask = mask.to(self.device)
        self.mask_index = mask_index.to(self.device)
        self.mask_weights = weights.flatten()[mask_index].to(self.device)
        self.ibot = int(cfg["ibot"]) and len(mask_index) > 0

    def autocast_context(self):
        if self.autocast is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast)

    def student_branch(self, width, depth):
        rate = float(self.cfg["drop_path"])
        g = self.forward(self.student, width, depth, self.global_crops, self.mask if self.ibot else None, rate)
        loc = self.forward(self.student, width, depth, self.local_crops, None, rate)
        rows = [loc[:, 0], g[:, 0]]
        if self.ibot:
            rows.append(g[:, 1:].reshape(-1, width)[self.mask_index])
        feats = torch.cat(rows)
        logits = [head(feats, width).float() for head in self.heads]
        return g[:, 0], logits

    def step(self, member, temp=0.04):
        c = self.cfg
        G, L, B = self.G, self.L, self.B
        GB, LB = G * B, L * B
        H = len(self.heads)
        T, lam = float(c["student_temp"]), float(c["lambda"])
        self.optimizer.zero_grad(set_to_none=True)
        # teacher (no grad, eval: no drop path, no masks)
        with torch.no_grad(), self.autocast_context():
            t = self.forward(self.teacher, self.D, self.depth, self.global_crops, None, 0.0)
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
            with self.autocast_context():
                cls, logits = self.student_branch(width, depth)
            for h in range(H):
                lsm = F.log_softmax(logits[h] / T, dim=-1)  # float32, one per row (DINOLoss)
                lsm_local, lsm_global = lsm[:LB], lsm[LB:LB + GB]
                P = P_cls[h]
                # (a) cross-view DINO: teacher crop g against every local crop and every other global crop
                dino = 0.0
                for gi in range(G):
                    Pg = P[gi * B:(gi + 1) * B]
                    for li in range(L):
                        dino = dino + soft_ce(Pg, lsm_local[li * B:(li + 1) * B]).mean()
                    for s2 in range(G):
                        if s2 != gi:
                            dino = dino + soft_ce(Pg, lsm_global[s2 * B:(s2 + 1) * B]).mean()
                loss = loss + float(c["dino_weight"]) * weight / H * dino / pairs
                # (b) same-view distillation intact -> elastic
                if x == 1:
                    Q = F.softmax(intact_logits[h].detach() / float(c["distill_temp"]), dim=-1)
                    sv = soft_ce(Q[:LB], lsm_local).mean() + soft_ce(Q[LB:LB + GB], lsm_global).mean()
                    loss = loss + (1 - lam) / H * sv
                # (d) iBOT
                if self.ibot:
                    ib = (self.mask_weights * soft_ce(P_patch[h], lsm[LB + GB:])).sum() / GB
                    loss = loss + float(c["ibot_weight"]) * weight / H * ib
            # (c) KoLeo per global crop
            ko = sum(koleo(cls[gi * B:(gi + 1) * B], self.pdist) for gi in range(G))
            loss = loss + float(c["koleo_weight"]) * 0.5 * ko
            if x == 0:
                intact_logits = logits
        loss.backward()
        value = float(loss)  # the reference's NaN check reads the loss on the host
        if not math.isnan(value):
            clip = float(c["clip"])
            torch.nn.utils.clip_grad_norm_(self.backbone_params, clip)
            torch.nn.utils.clip_grad_norm_(self.head_params, clip)
            self.optimizer.step()
            with torch.no_grad():
                m = 0.99
                torch._foreach_mul_(self.teacher_all, m)
                torch._foreach_add_(self.teacher_all, self.student_all, alpha=1 - m)
        return value


def time_steps(step, members, warmup, verbose=False, label="torch"):
    """Runs step.step(member) for every member; returns (wall ms, process-CPU ms) of the steps
    after the first `warmup`. On CUDA the device is synchronised around every step."""
    cuda = step.device.type == "cuda"
    wall, cpu = [], []
    for i, member in enumerate(members):
        if cuda:
            torch.cuda.synchronize(step.device)
        w0, c0 = time.perf_counter(), time.process_time()
        loss = step.step(member)
        if cuda:
            torch.cuda.synchronize(step.device)
        w1, c1 = time.perf_counter(), time.process_time()
        if i >= warmup:
            wall.append((w1 - w0) * 1e3)
            cpu.append((c1 - c0) * 1e3)
        if verbose:
            print(f"  {label} step {i - warmup} member {member[0]}x{member[1]} loss {loss:.4f} "
                  f"wall ms {(w1 - w0) * 1e3:.1f}", file=sys.stderr)
    return wall, cpu


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])
