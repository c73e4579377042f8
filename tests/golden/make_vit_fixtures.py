#!/usr/bin/python3
"""Golden fixtures for the elastic ViT of tests/recipes/tiny_vit.lua, in plain PyTorch (float64).

Run: /usr/bin/python3 tests/golden/make_vit_fixtures.py      (Debian's python3-torch, CPU; ~20 s)
It rewrites tests/golden/fixtures/vit_*.safetensors deterministically (fixed seeds) and prints
its self-checks; it exits non-zero if one fails.

The model is the reference's dynamic ViT (reference/poa-vit-and-training.md §1.1-1.7):
patch 8, head_dim 32, widths 32/64/96 (Dmax = 96), depths 2..4 (Lmax = 4), MLP hidden 4D
(Fmax = 384), qkv/proj/fc biases, LayerScale, LayerNorm eps 1e-6, exact-erf GELU, attention scale
1/sqrt(32). A member (D, L) uses prefix slices of the intact parameters: qkv rows
[0:D] U [96:96+D] U [192:192+D] and cols [0:D] (head n = rows 32n..32n+31 of each q/k/v group),
proj [:D,:D], fc1 [:4D,:D], fc2 [:D,:4D]; alpha = 96/D multiplies the INPUT of qkv, proj, fc1 and
fc2 (biases unscaled); LayerNorms normalise over the D active channels with weight[:D], bias[:D];
gamma[:D]; cls_token, pos_embed, mask_token: first D channels; patch conv output channels [:D].
Blocks run: int(numpy.linspace(0, 3, L)) in increasing order (L=2: 0,3; L=3: 0,1,3; L=4: 0..3).
Tokens: conv(8x8, stride 8) -> flatten row-major (token 1 + r*w + c) -> masked patches replaced by
mask_token[:D] -> cls_token prepended -> + pos_embed. Global crops (32 px, 4x4 patches) use
pos_embed as is; local crops (16 px, 2x2 patches) use pos_embed[:, 0] for the cls token and the
4x4 patch table resampled to 2x2 by F.interpolate(mode="bicubic", align_corners=False,
scale_factor=(2 + 0.1) / 4) (so source coordinate = (o + 0.5) / 0.525 - 0.5, cubic A = -0.75,
indices clamped to [0, 3]); computed here in float64 (PyTorch uses 1/0.525 in the input dtype).
Block: x = x + s[b] * ls1.gamma * proj(attn(LN1(x))); x = x + s[b] * ls2.gamma * fc2(GELU(fc1(LN2(x)))),
s = the drop-path scale of sample b for that (active block, branch). Output: the final LayerNorm
of all tokens. Loss = sum(out.global * dout.global) + sum(out.local * dout.local).

Files (all little-endian safetensors, C-order):
  vit_tiny_params.safetensors    every parameter at its INTACT shape, F32, reference names:
      patch_embed.proj.weight (96,3,8,8), patch_embed.proj.bias (96), cls_token (1,1,96),
      pos_embed (1,17,96), mask_token (1,96), blocks.{0..3}.norm1.norm.weight/bias (96),
      blocks.i.attn.qkv.linear.weight (288,96)/bias (288), blocks.i.attn.proj.linear.weight (96,96)/bias,
      blocks.i.ls1.gamma (96), blocks.i.norm2.norm.weight/bias, blocks.i.mlp.fc1.linear.weight (384,96)
      /bias (384), blocks.i.mlp.fc2.linear.weight (96,384)/bias (96), blocks.i.ls2.gamma, norm.norm.weight/bias.
      metadata: recipe = tests/recipes/tiny_vit.lua.
  vit_<case>.safetensors, one per case (intact_96x4, elastic_32x2, elastic_64x3, elastic_96x2, elastic_32x4):
      input.global     F32 (2,3,32,32)   global crops, Bg = 2
      input.mask       U8  (2,16)        1 = patch replaced by mask_token (patch index r*4+c); all 0 when unmasked
      input.local      F32 (3,3,16,16)   local crops, Bl = 3, never masked
      droppath.global  F32 (L,2,2)       scale s per active block j (0..L-1, in run order), branch (0 attn,
                                         1 mlp), sample; in {0, Bg/keep} with keep = max(int(Bg*0.8),1) = 1
                                         samples at Bg/keep = 2, or all 1 when the case has no drop path
      droppath.local   F32 (L,2,3)       same for the local batch: keep = 2 samples at 1.5, one at 0
      dout.global      F32 (2,17,96)[..., :D] -> (2,17,D)   the fixed upstream gradient G of out.global
      dout.local       F32 (3,5,D)
      out.global       F64 (2,17,D)      final-LN tokens (cls first) of the global crops
      out.local        F64 (3,5,D)
      loss             F64 ()            sum(out.global*dout.global) + sum(out.local*dout.local)
      grad.<param>     F32, intact shape, d loss / d param for every parameter above (exact zeros outside
                                         the member's slice and for blocks it does not run)
      metadata: case, width, depth, blocks (e.g. "0,3"), alpha (repr of 96/D), masked ("0"/"1"),
                drop_path ("0"/"1"), recipe.
Parameters and inputs are random float32 values (weights N(0,1)/sqrt(fan_in), LN weights 1+N(0,0.1),
biases and LN biases N(0,0.1), gammas U(0.5,1.5), tokens N(0,0.5), images and G N(0,1)); the model
computes in float64 from those float32 values and rounds outputs/grads to the stored dtype.

Self-checks (printed): grads outside each member's active slice are exactly zero (and nonzero
inside); every case (the intact one included) equals, in loss and in every gradient, an
independent plain implementation of the standalone member (weights extracted with alpha baked in,
blocks renumbered; F.conv2d, F.layer_norm, F.multi_head_attention_forward, F.linear, a hand-built
bicubic matrix); the bicubic resampling equals the hand-built matrix; torch.autograd.gradcheck
(float64) on a tiny case; a float32 run of the same code stays within 1e-4 (outputs, absolute;
grads, relative to each tensor's largest entry): measured 2e-6..7e-6 and 1e-6..2e-5.
Note for comparisons: the gradient of the k part of the qkv bias is analytically zero (softmax
ignores a constant added to every logit of a row); its stored values are rounding noise near 0,
so compare with an absolute tolerance scaled by the tensor's (or the qkv bias's) magnitude.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

DMAX, LMAX, PATCH, HEAD_DIM, MLP_RATIO, EPS = 96, 4, 8, 32, 4, 1e-6
FMAX = MLP_RATIO * DMAX
BG, BL, GLOBAL_PX, LOCAL_PX = 2, 3, 32, 16
RECIPE = "tests/recipes/tiny_vit.lua"
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
CASES = [  # name, width, depth, masked, drop_path
    ("intact_96x4", 96, 4, True, False),
    ("elastic_32x2", 32, 2, True, True),
    ("elastic_64x3", 64, 3, True, False),
    ("elastic_96x2", 96, 2, False, True),
    ("elastic_32x4", 32, 4, False, False),
]

# ---------------------------------------------------------------- parameters


def param_shapes():
    shapes = {
        "patch_embed.proj.weight": (DMAX, 3, PATCH, PATCH),
        "patch_embed.proj.bias": (DMAX,),
        "cls_token": (1, 1, DMAX),
        "pos_embed": (1, 1 + (GLOBAL_PX // PATCH) ** 2, DMAX),
        "mask_token": (1, DMAX),
    }
    for i in range(LMAX):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.norm.weight": (DMAX,), b + "norm1.norm.bias": (DMAX,),
            b + "attn.qkv.linear.weight": (3 * DMAX, DMAX), b + "attn.qkv.linear.bias": (3 * DMAX,),
            b + "attn.proj.linear.weight": (DMAX, DMAX), b + "attn.proj.linear.bias": (DMAX,),
            b + "ls1.gamma": (DMAX,),
            b + "norm2.norm.weight": (DMAX,), b + "norm2.norm.bias": (DMAX,),
            b + "mlp.fc1.linear.weight": (FMAX, DMAX), b + "mlp.fc1.linear.bias": (FMAX,),
            b + "mlp.fc2.linear.weight": (DMAX, FMAX), b + "mlp.fc2.linear.bias": (DMAX,),
            b + "ls2.gamma": (DMAX,),
        })
    shapes["norm.norm.weight"] = (DMAX,)
    shapes["norm.norm.bias"] = (DMAX,)
    return shapes


def random_params(gen):
    """Random float32 values (not the init values) so that every path matters."""
    params = {}
    for name, shape in param_shapes().items():
        n = torch.randn(shape, generator=gen, dtype=torch.float32)
        if name.endswith("gamma"):
            t = 0.5 + torch.rand(shape, generator=gen, dtype=torch.float32)
        elif name.endswith("norm.weight"):
            t = 1 + 0.1 * n
        elif name.endswith("bias"):
            t = 0.1 * n
        elif name in ("cls_token", "pos_embed", "mask_token"):
            t = 0.5 * n
        else:  # conv and linear weights: N(0, 1/fan_in)
            t = n / math.sqrt(float(np.prod(shape[1:])))
        params[name] = t.to(torch.float32)
    return params


# ---------------------------------------------------------------- the dynamic (sliced) model


def block_ids(depth):
    return [int(v) for v in np.linspace(0, LMAX - 1, depth)]


def layer_norm(x, weight, bias, d):
    return F.layer_norm(x, (d,), weight[:d], bias[:d], EPS)


def linear(x, weight, bias, out_rows, in_cols, alpha):
    """DynamicLinear: F.linear(x * alpha, W[:out, :in], b[:out])."""
    return F.linear(x * alpha, weight[:out_rows, :in_cols], bias[:out_rows])


def qkv_linear(x, weight, bias, d, alpha):
    """GroupedDynamicLinear: rows [0:d] U [96:96+d] U [192:192+d], cols [0:d]."""
    rows = torch.cat([torch.arange(g * DMAX, g * DMAX + d) for g in range(3)])
    return F.linear(x * alpha, weight[rows][:, :d], bias[rows])


def attention(x, p, b, d, alpha):
    bsz, n, _ = x.shape
    heads = d // HEAD_DIM
    qkv = qkv_linear(x, p[b + "attn.qkv.linear.weight"], p[b + "attn.qkv.linear.bias"], d, alpha)
    q, k, v = qkv.reshape(bsz, n, 3, heads, HEAD_DIM).permute(2, 0, 3, 1, 4)
    a = torch.softmax((q @ k.transpose(-2, -1)) * HEAD_DIM ** -0.5, dim=-1)
    o = (a @ v).transpose(1, 2).reshape(bsz, n, d)
    return linear(o, p[b + "attn.proj.linear.weight"], p[b + "attn.proj.linear.bias"], d, d, alpha)


def mlp(x, p, b, d, alpha):
    h = linear(x, p[b + "mlp.fc1.linear.weight"], p[b + "mlp.fc1.linear.bias"], MLP_RATIO * d, d, alpha)
    h = F.gelu(h)  # exact erf
    return linear(h, p[b + "mlp.fc2.linear.weight"], p[b + "mlp.fc2.linear.bias"], d, MLP_RATIO * d, alpha)


def pos_embed_for(p, d, grid):
    """§1.7: the table as is for the 4x4 grid, else bicubic resampling by scale factor (grid+0.1)/4."""
    pe = p["pos_embed"][:, :, :d]
    side = int(math.sqrt(pe.shape[1] - 1))
    if grid == side:
        return pe
    patch = pe[:, 1:].reshape(1, side, side, d).permute(0, 3, 1, 2)
    s = (grid + 0.1) / side
    patch = F.interpolate(patch, scale_factor=(s, s), mode="bicubic", align_corners=False)
    assert patch.shape[-1] == grid
    return torch.cat([pe[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, d)], dim=1)


def forward(p, d, depth, images, mask, scales):
    """One crop batch through member (d, depth); scales (depth, 2, B); mask (B, N) bool or None."""
    alpha = DMAX / d
    x = F.conv2d(images, p["patch_embed.proj.weight"][:d], p["patch_embed.proj.bias"][:d], stride=PATCH)
    grid = x.shape[-1]
    x = x.flatten(2).transpose(1, 2)
    if mask is not None:
        x = torch.where(mask.unsqueeze(-1), p["mask_token"][:, :d].unsqueeze(0), x)
    x = torch.cat([p["cls_token"][:, :, :d].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + pos_embed_for(p, d, grid)
    for j, i in enumerate(block_ids(depth)):
        b = f"blocks.{i}."
        s1 = scales[j, 0].view(-1, 1, 1)
        s2 = scales[j, 1].view(-1, 1, 1)
        y = layer_norm(x, p[b + "norm1.norm.weight"], p[b + "norm1.norm.bias"], d)
        x = x + s1 * p[b + "ls1.gamma"][:d] * attention(y, p, b, d, alpha)
        y = layer_norm(x, p[b + "norm2.norm.weight"], p[b + "norm2.norm.bias"], d)
        x = x + s2 * p[b + "ls2.gamma"][:d] * mlp(y, p, b, d, alpha)
    return layer_norm(x, p["norm.norm.weight"], p["norm.norm.bias"], d)


def loss_and_outputs(p, d, depth, inputs):
    out_g = forward(p, d, depth, inputs["input.global"], inputs["input.mask"].bool(), inputs["droppath.global"])
    out_l = forward(p, d, depth, inputs["input.local"], None, inputs["droppath.local"])
    loss = (out_g * inputs["dout.global"]).sum() + (out_l * inputs["dout.local"]).sum()
    return loss, out_g, out_l


# ---------------------------------------------------------------- an independent plain model (D = 96)


def bicubic_matrix(in_size, out_size, scale):
    """PyTorch's bicubic (A = -0.75, align_corners=False, given scale): (out, in) weights."""
    def cubic(t):
        a, t = -0.75, abs(t)
        if t <= 1:
            return ((a + 2) * t - (a + 3)) * t * t + 1
        if t < 2:
            return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return 0.0
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    for o in range(out_size):
        src = (o + 0.5) / scale - 0.5
        base = math.floor(src)
        for k in range(-1, 3):
            m[o, min(max(base + k, 0), in_size - 1)] += cubic(src - (base + k))
    return m


def extract(p, d, depth):
    """The standalone member (d, depth) as an exporter writes it: weights sliced with alpha baked in
    (W' = alpha * W_slice, biases as they are), blocks renumbered 0..depth-1. Differentiable in p."""
    alpha, h = DMAX / d, MLP_RATIO * d
    rows = torch.cat([torch.arange(g * DMAX, g * DMAX + d) for g in range(3)])
    sub = {"patch_embed.proj.weight": p["patch_embed.proj.weight"][:d],
           "patch_embed.proj.bias": p["patch_embed.proj.bias"][:d],
           "cls_token": p["cls_token"][..., :d], "pos_embed": p["pos_embed"][..., :d],
           "mask_token": p["mask_token"][..., :d],
           "norm.norm.weight": p["norm.norm.weight"][:d], "norm.norm.bias": p["norm.norm.bias"][:d]}
    for j, i in enumerate(block_ids(depth)):
        a, b = f"blocks.{j}.", f"blocks.{i}."
        for n in ("norm1.norm.weight", "norm1.norm.bias", "norm2.norm.weight", "norm2.norm.bias", "ls1.gamma",
                  "ls2.gamma", "attn.proj.linear.bias", "mlp.fc2.linear.bias"):
            sub[a + n] = p[b + n][:d]
        sub[a + "attn.qkv.linear.weight"] = alpha * p[b + "attn.qkv.linear.weight"][rows][:, :d]
        sub[a + "attn.qkv.linear.bias"] = p[b + "attn.qkv.linear.bias"][rows]
        sub[a + "attn.proj.linear.weight"] = alpha * p[b + "attn.proj.linear.weight"][:d, :d]
        sub[a + "mlp.fc1.linear.weight"] = alpha * p[b + "mlp.fc1.linear.weight"][:h, :d]
        sub[a + "mlp.fc1.linear.bias"] = p[b + "mlp.fc1.linear.bias"][:h]
        sub[a + "mlp.fc2.linear.weight"] = alpha * p[b + "mlp.fc2.linear.weight"][:d, :h]
    return sub


def plain_forward(sub, d, depth, images, mask, scales):
    """A standalone ViT of width d written independently of the sliced code: whole tensors, no alpha,
    torch's own multi-head attention (F.multi_head_attention_forward) and a hand-built bicubic matrix."""
    x = F.conv2d(images, sub["patch_embed.proj.weight"], sub["patch_embed.proj.bias"], stride=PATCH)
    grid = x.shape[-1]
    x = x.flatten(2).transpose(1, 2)
    if mask is not None:
        m = mask.unsqueeze(-1).double()
        x = x * (1 - m) + m * sub["mask_token"]
    x = torch.cat([sub["cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    side = int(math.sqrt(sub["pos_embed"].shape[1] - 1))
    if grid == side:
        x = x + sub["pos_embed"]
    else:
        r = bicubic_matrix(side, grid, (grid + 0.1) / side)
        table = sub["pos_embed"][0, 1:].reshape(side, side, d)
        table = torch.einsum("ai,bj,ijc->abc", r, r, table).reshape(grid * grid, d)
        x = x + torch.cat([sub["pos_embed"][0, :1], table]).unsqueeze(0)
    for i in range(depth):
        b = f"blocks.{i}."
        y = F.layer_norm(x, (d,), sub[b + "norm1.norm.weight"], sub[b + "norm1.norm.bias"], EPS).transpose(0, 1)
        a = F.multi_head_attention_forward(
            y, y, y, d, d // HEAD_DIM, sub[b + "attn.qkv.linear.weight"], sub[b + "attn.qkv.linear.bias"],
            None, None, False, 0.0, sub[b + "attn.proj.linear.weight"], sub[b + "attn.proj.linear.bias"],
            training=False, need_weights=False)[0].transpose(0, 1)
        x = x + scales[i, 0].view(-1, 1, 1) * sub[b + "ls1.gamma"] * a
        y = F.layer_norm(x, (d,), sub[b + "norm2.norm.weight"], sub[b + "norm2.norm.bias"], EPS)
        h = F.gelu(F.linear(y, sub[b + "mlp.fc1.linear.weight"], sub[b + "mlp.fc1.linear.bias"]))
        h = F.linear(h, sub[b + "mlp.fc2.linear.weight"], sub[b + "mlp.fc2.linear.bias"])
        x = x + scales[i, 1].view(-1, 1, 1) * sub[b + "ls2.gamma"] * h
    return F.layer_norm(x, (d,), sub["norm.norm.weight"], sub["norm.norm.bias"], EPS)


# ---------------------------------------------------------------- inputs, checks, files


def drop_path_scales(gen, depth, batch, enabled):
    s = torch.ones(depth, 2, batch, dtype=torch.float32)
    if enabled:
        keep = max(int(batch * 0.8), 1)
        for j in range(depth):
            for branch in range(2):
                row = torch.zeros(batch, dtype=torch.float32)
                row[torch.randperm(batch, generator=gen)[:keep]] = batch / keep
                s[j, branch] = row
    return s


def make_inputs(gen, d, depth, masked, drop_path):
    grid = GLOBAL_PX // PATCH
    mask = torch.zeros(BG, grid * grid, dtype=torch.uint8)
    if masked:  # a different number of masked patches per crop, at random places
        for b, count in enumerate((5, 9)):
            mask[b, torch.randperm(grid * grid, generator=gen)[:count]] = 1
    return {
        "input.global": torch.randn(BG, 3, GLOBAL_PX, GLOBAL_PX, generator=gen),
        "input.mask": mask,
        "input.local": torch.randn(BL, 3, LOCAL_PX, LOCAL_PX, generator=gen),
        "droppath.global": drop_path_scales(gen, depth, BG, drop_path),
        "droppath.local": drop_path_scales(gen, depth, BL, drop_path),
        "dout.global": torch.randn(BG, 1 + grid * grid, d, generator=gen),
        "dout.local": torch.randn(BL, 1 + (LOCAL_PX // PATCH) ** 2, d, generator=gen),
    }


def active_mask(name, shape, d, depth):
    """True where a member (d, depth) can touch the parameter."""
    m = torch.zeros(shape, dtype=torch.bool)
    if name.startswith("blocks.") and int(name.split(".")[1]) not in block_ids(depth):
        return m
    h = MLP_RATIO * d
    if name == "patch_embed.proj.weight":
        m[:d] = True
    elif name in ("cls_token", "pos_embed", "mask_token"):
        m[..., :d] = True
    elif name.endswith("qkv.linear.weight"):
        for g in range(3):
            m[g * DMAX:g * DMAX + d, :d] = True
    elif name.endswith("qkv.linear.bias"):
        for g in range(3):
            m[g * DMAX:g * DMAX + d] = True
    elif name.endswith("fc1.linear.weight"):
        m[:h, :d] = True
    elif name.endswith("fc1.linear.bias"):
        m[:h] = True
    elif name.endswith("fc2.linear.weight"):
        m[:d, :h] = True
    elif len(shape) == 2:  # proj weight
        m[:d, :d] = True
    else:  # biases, LayerNorm, gammas
        m[:d] = True
    return m


DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.uint8: "U8"}


def write_safetensors(path, tensors, metadata):
    """The safetensors layout by hand: u64 LE header size, JSON header padded with spaces to 8, data."""
    itemsize = {"F64": 8, "F32": 4, "U8": 1}
    order = sorted(tensors, key=lambda n: (-itemsize[DTYPES[tensors[n].dtype]], n))
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    for name in order:
        t = tensors[name].contiguous()
        raw = t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    size = os.path.getsize(path)
    assert size < 2_000_000, f"{path} is {size} bytes"
    return size


class Checks:
    def __init__(self):
        self.failed = 0

    def __call__(self, name, ok, detail=""):
        print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""))
        self.failed += 0 if ok else 1


def run_case(params32, case, gen, check):
    name, d, depth, masked, drop_path = case
    inputs = make_inputs(gen, d, depth, masked, drop_path)
    p = {k: v.double().requires_grad_(True) for k, v in params32.items()}
    x = {k: (v.double() if v.dtype == torch.float32 else v) for k, v in inputs.items()}
    loss, out_g, out_l = loss_and_outputs(p, d, depth, x)
    loss.backward()
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in p.items()}
    outside_zero, inside_nonzero = True, True
    for k, g in grads.items():
        m = active_mask(k, g.shape, d, depth)
        outside_zero &= bool((g[~m] == 0).all())
        if masked or k != "mask_token":
            inside_nonzero &= bool(m.sum() == 0 or (g[m] != 0).float().mean() > 0.9)
    check(f"{name}_grads_zero_outside_slice", outside_zero)
    check(f"{name}_grads_nonzero_inside_slice", inside_nonzero)
    # The same member as a standalone network (extract + plain_forward), gradients through extract.
    q = {k: v.double().requires_grad_(True) for k, v in params32.items()}
    sub = extract(q, d, depth)
    plain_loss = (plain_forward(sub, d, depth, x["input.global"], x["input.mask"].bool(), x["droppath.global"])
                  * x["dout.global"]).sum() + (
        plain_forward(sub, d, depth, x["input.local"], None, x["droppath.local"]) * x["dout.local"]).sum()
    plain_loss.backward()
    diff = max(float((grads[k] - (q[k].grad if q[k].grad is not None else 0)).abs().max()) for k in grads)
    check(f"{name}_equals_standalone_model", abs(float(loss - plain_loss)) < 1e-9 and diff < 1e-9,
          f"loss {float(loss):.12g} vs {float(plain_loss):.12g}, max grad difference {diff:.3g}")
    # How far a float32 evaluation of the same code lands (a guide for the C tolerances).
    p32 = {k: v.clone().requires_grad_(True) for k, v in params32.items()}
    x32 = {k: v for k, v in inputs.items()}
    loss32, out_g32, out_l32 = loss_and_outputs(p32, d, depth, x32)
    loss32.backward()
    out_err = max(float((out_g32.double() - out_g).abs().max()), float((out_l32.double() - out_l).abs().max()))
    grad_err = max(float((p32[k].grad.double() - grads[k]).abs().max()) / float(grads[k].abs().max())
                   for k in grads if p32[k].grad is not None and float(grads[k].abs().max()) > 0)
    check(f"{name}_float32_close", out_err < 1e-4 and grad_err < 1e-4,
          f"float32 run: max |out error| {out_err:.2g}, max grad error / max |grad| per tensor {grad_err:.2g}")
    tensors = {k: v for k, v in inputs.items()}
    tensors["out.global"] = out_g.detach()
    tensors["out.local"] = out_l.detach()
    tensors["loss"] = loss.detach().reshape(())
    for k, g in grads.items():
        tensors["grad." + k] = g.to(torch.float32)
    metadata = {"case": name, "width": str(d), "depth": str(depth),
                "blocks": ",".join(str(i) for i in block_ids(depth)), "alpha": repr(DMAX / d),
                "masked": str(int(masked)), "drop_path": str(int(drop_path)), "recipe": RECIPE}
    path = os.path.join(FIXTURES, f"vit_{name}.safetensors")
    size = write_safetensors(path, tensors, metadata)
    print(f"wrote {path}: {size} bytes, loss {float(loss):.9g}, |out.global| max {float(out_g.abs().max()):.4g}")


def check_interpolation(check):
    table = torch.randn(1, 5, 4, 4, dtype=torch.float64)
    s = (2 + 0.1) / 4
    got = F.interpolate(table, scale_factor=(s, s), mode="bicubic", align_corners=False)
    r = bicubic_matrix(4, 2, s)
    want = torch.einsum("ai,bj,cij->cab", r, r, table[0]).unsqueeze(0)
    check("bicubic_equals_hand_matrix", got.shape == want.shape and float((got - want).abs().max()) < 1e-12,
          "resampling matrix rows " + str([[round(float(v), 6) for v in row] for row in r]))


def check_gradcheck(params32, gen, check):
    """gradcheck (float64) of the loss of member (32, 2) with masks and drop path w.r.t. a few parameters."""
    d, depth = 32, 2
    x = {k: (v.double() if v.dtype == torch.float32 else v) for k, v in make_inputs(gen, d, depth, True, True).items()}
    base = {k: v.double() for k, v in params32.items()}
    names = ["mask_token", "blocks.3.ls1.gamma", "blocks.0.norm2.norm.bias", "norm.norm.weight"]

    def f(*leaves):
        p = dict(base)
        p.update(zip(names, leaves))
        p["pos_embed"] = base["pos_embed"].clone()
        p["pos_embed"][0, :, :4] = leaves[-1]
        return loss_and_outputs(p, d, depth, x)[0]

    leaves = [base[n].clone().requires_grad_(True) for n in names]
    leaves.append(base["pos_embed"][0, :, :4].clone().requires_grad_(True))
    ok = torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-5, raise_exception=False)
    check("gradcheck_32x2", ok, "mask_token, blocks.3.ls1.gamma, blocks.0.norm2.norm.bias, norm.norm.weight, "
          "pos_embed[0, :, :4]")


def main():
    gen = torch.Generator().manual_seed(20240617)
    params32 = random_params(gen)
    os.makedirs(FIXTURES, exist_ok=True)
    size = write_safetensors(os.path.join(FIXTURES, "vit_tiny_params.safetensors"), params32, {"recipe": RECIPE})
    print(f"wrote vit_tiny_params.safetensors: {size} bytes, {sum(v.numel() for v in params32.values())} parameters")
    check = Checks()
    for depth in range(2, LMAX + 1):
        print(f"depth {depth}: blocks {block_ids(depth)}")
    check_interpolation(check)
    for case in CASES:
        run_case(params32, case, gen, check)
    check_gradcheck(params32, torch.Generator().manual_seed(7), check)
    print(f"{check.failed} self-checks failed")
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    main()
