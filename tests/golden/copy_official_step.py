#!/usr/bin/env python3
"""Copies the recorded official step (../shared/reference/official-step/, the official POA code
at alipay/POA 00d9074 run unmodified in float32; see its README) into
tests/golden/fixtures/official_step/ for tests/c/test_official_step.c.

The recordings are data, copied byte for byte: inputs and student_init (the same in both
recordings, checked here, so stored once), and per recording student_grads, student_after,
teacher_after and intermediates. Of the two JSON files only what the test reads is kept, as a
Lua table (record.lua), since the test reads it through Lua: the schedule values, the drawn
member and its block ids, the gradient norms before clipping, the drop-path call tags, every
raw loss call and the total, the sampling list and every parameter group. Standard library
only:  python3 tests/golden/copy_official_step.py [SOURCE]"""
import hashlib, json, os, shutil, sys

here = os.path.dirname(os.path.abspath(__file__))
source = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "../../../shared/reference/official-step")
out = os.path.join(here, "fixtures/official_step")
runs = ["dp0", "dp02"]


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def lua(value, indent=""):
    """A JSON value as a Lua literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid Lua string here (ASCII, no \u)
    inner = indent + "  "
    if isinstance(value, list):
        if all(not isinstance(v, (list, dict)) for v in value):
            return "{ " + ", ".join(lua(v) for v in value) + " }"
        return "{\n" + "".join(inner + lua(v, inner) + ",\n" for v in value) + indent + "}"
    return "{\n" + "".join(f"{inner}{k} = {lua(v, inner)},\n" for k, v in value.items()) + indent + "}"


def record(run):
    meta = json.load(open(os.path.join(source, run, "meta.json")))
    losses = json.load(open(os.path.join(source, run, "losses.json")))
    kept = {
        "drop_path": meta["args"]["drop_path"],
        "schedule": meta["schedule"],
        "member": [meta["elastic_width"], meta["elastic_depth"]],
        "intact": meta["intact"],
        "elastic_block_idx": meta["elastic_block_idx"],
        "activate_ibot": meta["activate_ibot"],
        "clip_grad": meta["clip_grad"],
        "grad_norms": {"backbone": meta["grad_norms_before_clip"]["backbone"],
                       "heads": meta["grad_norms_before_clip"]["dino_head"]},
        "droppath_tags": meta.get("droppath_tags", []),
        "networks": meta["networks"],
        "param_groups": [{"lr": g["lr"], "weight_decay": g["weight_decay"], "params": g["params"]}
                         for g in meta["param_groups"]],
        "total": losses["total_loss_backpropagated"],
        "raw_calls": [{k: c[k] for k in ("module", "branch", "crops", "term", "head", "global_crop", "raw")
                       if k in c} for c in losses["raw_calls"]],
    }
    return "-- " + run + ": copied from the official step's meta.json and losses.json by\n" \
        "-- tests/golden/copy_official_step.py (do not edit)\nreturn " + lua(kept) + "\n"


def main():
    for name in ["inputs", "student_init"]:
        a, b = (digest(os.path.join(source, r, name + ".safetensors")) for r in runs)
        assert a == b, f"{name} differs between the recordings"
    os.makedirs(out, exist_ok=True)
    for name in ["inputs", "student_init"]:
        shutil.copyfile(os.path.join(source, "dp0", name + ".safetensors"), os.path.join(out, name + ".safetensors"))
    for run in runs:
        os.makedirs(os.path.join(out, run), exist_ok=True)
        for name in ["student_grads", "student_after", "teacher_after", "intermediates"]:
            shutil.copyfile(os.path.join(source, run, name + ".safetensors"),
                            os.path.join(out, run, name + ".safetensors"))
        with open(os.path.join(out, run, "record.lua"), "w") as f:
            f.write(record(run))
    print("copied into", out)


main()
