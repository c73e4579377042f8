#!/usr/bin/env python3
"""Writes tests/golden/fixtures/export_timm_64x3.txt, read by tests/c/test_export.c.

timm's own state-dict key list and shapes, one "name d0,d1,..." a line (sorted), for the
VisionTransformer that member 64x3 of tests/recipes/tiny_train.lua is: width 64, depth 3,
2 heads of 32, MLP ratio 4, patch 8, 32 px images, LayerScale (init_values 0.1), a class
token with its position embedding, no classifier (num_classes 0), qkv and projection
biases. The model is built here from these numbers alone (not from poa's config.json), so
the C test checks poa's export against timm's names, not against itself.

Needs timm (PyPI) over torch: a virtual environment that sees Debian's python3-torch, e.g.
  /usr/bin/python3 -m venv --system-site-packages /work/venv-timm
  /work/venv-timm/bin/pip install timm safetensors
  /work/venv-timm/bin/python tests/golden/make_export_fixture.py
"""
import os

import timm


def main():
    model = timm.create_model(
        "vit_base_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
        embed_dim=64, depth=3, num_heads=2, mlp_ratio=4.0, qkv_bias=True, init_values=0.1)
    lines = sorted("%s %s" % (name, ",".join(str(d) for d in t.shape))
                   for name, t in model.state_dict().items())
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "export_timm_64x3.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("%s: %d tensors (timm %s)" % (path, len(lines), timm.__version__))


if __name__ == "__main__":
    main()
