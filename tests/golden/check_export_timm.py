#!/usr/bin/env python3
"""Loads a `poa export` folder into timm and compares its features with `poa forward`.

  check_export_timm.py --poa build/poa --recipe R.lua --checkpoint C.safetensors --export DIR --net WxD --work W

Two loads, both strict: timm.create_model("local-dir:DIR", pretrained=True) (config.json and
model.safetensors, as a user would), and timm.create_model(architecture, **model_args) with
load_state_dict(safetensors.torch.load_file(DIR/model.safetensors), strict=True). Each model's
forward_features (the final LayerNorm's tokens) on random images at the export's input size is
compared with `poa forward --net WxD` of the checkpoint: max |timm - poa| / max |poa| of the CLS
token and of the patch tokens, at most 1e-5. Prints one PASS/FAIL line per load and member;
run by tests/golden/test_export_timm.sh.
"""
import argparse
import json
import os
import subprocess
import sys

import torch
import timm
from safetensors.torch import load_file, save_file


def relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def main():
    p = argparse.ArgumentParser()
    for name in ("poa", "recipe", "checkpoint", "export", "net", "work"):
        p.add_argument("--" + name, required=True)
    a = p.parse_args()
    config = json.load(open(os.path.join(a.export, "config.json")))
    size = config["model_args"]["img_size"]
    images = torch.randn(3, config["model_args"]["in_chans"], size, size, generator=torch.Generator().manual_seed(5))
    inputs, outputs = os.path.join(a.work, "timm_input.safetensors"), os.path.join(a.work, "timm_poa.safetensors")
    save_file({"images": images}, inputs)
    subprocess.run([a.poa, "forward", a.recipe, "--params", a.checkpoint, "--input", inputs, "--net", a.net,
                    "--out", outputs], check=True)
    reference = load_file(outputs)
    by_config = timm.create_model("local-dir:" + a.export, pretrained=True)
    by_args = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
    by_args.load_state_dict(load_file(os.path.join(a.export, "model.safetensors")), strict=True)
    failed = 0
    for label, model in (("local-dir", by_config), ("load_state_dict(strict=True)", by_args)):
        model.eval()
        with torch.no_grad():
            tokens = model.forward_features(images)
        cls = relative(tokens[:, 0], reference["x_norm_clstoken"])
        patches = relative(tokens[:, 1:], reference["x_norm_patchtokens"])
        ok = cls <= 1e-5 and patches <= 1e-5
        failed += not ok
        print("%s %s %s: timm features = poa forward: relative error CLS %.3g, patch tokens %.3g" %
              ("PASS" if ok else "FAIL", a.net, label, cls, patches))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
