#!/usr/bin/python3
"""tests/golden/vit_param_counts.py: parameter counts and forward multiply-accumulates of the
named ViT members (ViT-S/B/L, patch 16, 224 px), measured on PyTorch modules.

Writes tests/golden/fixtures/vit_param_counts.json, which tests/lua/test_space.lua compares
with gen/space.lua. Run with Debian's torch: /usr/bin/python3 tests/golden/vit_param_counts.py

The module is a plain DINOv2-style backbone as the POA reference (§1.1) lists it: Conv2d patch
embed (weight + bias), cls_token (1, 1, D), pos_embed (1, 197, D), mask_token (1, D), per block
norm1, qkv Linear(D, 3D) with bias, proj with bias, ls1 gamma, norm2, fc1, fc2 with biases,
ls2 gamma, then the final norm. No classifier head.

How this relates to timm: timm's vit_small_patch16_224 has 22,050,664 parameters. It has a
classifier head Linear(384, 1000) (385,000 parameters) and has no mask_token (384) and no
LayerScale (2 x 384 per block x 12 = 9,216). So this count for ViT-S must be
22,050,664 - 385,000 + 384 + 9,216 = 21,675,264; the script asserts that. For ViT-L the
reference gives "backbone ~ 303.4 M"; the script asserts the count rounds to it.

MACs: the forward of one image is run under torch.profiler with with_flops=True; PyTorch
reports 2 FLOPs per multiply-accumulate for aten::conv2d / mm / addmm / bmm, so MACs are their
flops / 2 (elementwise ops are left out, as gen/space.lua does).
"""
import json
import os

import torch
import torch.nn as nn


class Attention(nn.Module):
    def __init__(self, dim, head_dim):
        super().__init__()
        self.heads = dim // head_dim
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q * self.scale) @ k.transpose(-2, -1)
        a = a.softmax(dim=-1)
        x = (a @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(x)


class LayerScale(nn.Module):
    def __init__(self, dim, init):
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim, head_dim, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, head_dim)
        self.ls1 = LayerScale(dim, 1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self.ls2 = LayerScale(dim, 1e-5)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.fc2(nn.functional.gelu(self.fc1(self.norm2(x)))))


class ViT(nn.Module):
    def __init__(self, dim, depth, patch=16, image=224, head_dim=64, mlp_ratio=4, chans=3):
        super().__init__()
        tokens = 1 + (image // patch) ** 2
        self.patch_embed = nn.Conv2d(chans, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList([Block(dim, head_dim, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, img):
        x = self.patch_embed(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def measured_macs(model, image):
    x = torch.zeros(1, 3, image, image)
    with torch.no_grad(), torch.profiler.profile(with_flops=True) as prof:
        model(x)
    flops = {}
    for e in prof.key_averages():
        if e.key in ("aten::conv2d", "aten::mm", "aten::addmm", "aten::bmm") and e.flops:
            flops[e.key] = flops.get(e.key, 0) + e.flops
    total = sum(flops.values())
    assert total % 2 == 0
    return total // 2, {k: v // 2 for k, v in flops.items()}


def main():
    torch.manual_seed(0)
    out = {"image_size": 224, "patch_size": 16, "members": []}
    for name, dim, depth in (("ViT-S", 384, 12), ("ViT-B", 768, 12), ("ViT-L", 1024, 24)):
        model = ViT(dim, depth).eval()
        params = sum(p.numel() for p in model.parameters())
        macs, by_op = measured_macs(model, 224)
        print(f"{name}: width {dim} depth {depth}: {params} params, {macs} MACs {by_op}")
        out["members"].append({"name": name, "width": dim, "depth": depth,
                               "params": params, "macs": macs})
    by_name = {m["name"]: m for m in out["members"]}
    assert by_name["ViT-S"]["params"] == 22050664 - 385000 + 384 + 9216
    assert round(by_name["ViT-L"]["params"] / 1e6, 1) == 303.4
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                        "vit_param_counts.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
