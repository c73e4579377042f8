#!/usr/bin/env python3
"""bench/export_cpu.py: the exported C program of a member (`poa export --what c`) against ONNX
Runtime and PyTorch running the same weights in timm's VisionTransformer, on this machine's CPU.

Members: the ViT-S member (384x12) and a mid member (640x16) of recipes/vit_l16_ee1200.lua at
224 px. The checkpoint is one CPU training step of that recipe with the family cut to widths
384..640 and depths 12..16 and small heads (so it fits a CPU in a minute): each member's
exported network (alpha baked in, its blocks renumbered) has exactly the shape of the same
member of the full family, and the timing depends on the shape only.

Per (member, batch, threads): one warm-up call each, then `--runs` rounds, each round one forward
of every engine in turn (interleaved, so a load change hits all of them alike); min and median
milliseconds and the ratios ORT / C and torch / C (> 1: the C program is faster, as the other
benchmarks of bench/ print peer / poa). The C program
runs in-process (its libpoa_member.so through ctypes), so no engine pays a process start.

  /work/venv-export/bin/python bench/export_cpu.py [--runs 20] [--batches 1,8] [--threads 1,2]
      [--members 384x12,640x16] [--work build/bench_export] [--poa build/poa]

Needs numpy, safetensors, onnx, onnxruntime, torch and timm in the Python that runs it. The
machine is shared: `uptime` is printed before and after.
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin against the other engines


from blas_env import CORETYPE  # noqa: E402  (before numpy and the exported program)

import numpy as np  # noqa: E402


def sh(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def checkpoint(poa, work):
    run = os.path.join(work, "run")
    ckpt = os.path.join(run, "checkpoint_1.safetensors")
    if os.path.exists(ckpt):
        return ckpt
    data = os.path.join(work, "fm")
    sh([poa, "data", "fashion-mnist", "--out", data, "--size", "224", "--limit", "8"], stdout=subprocess.DEVNULL)
    sh([poa, "train", "recipes/vit_l16_ee1200.lua", f"data.train={data}/train", f"train.output={run}",
        "model.width={384,640,64}", "model.depth={12,16,1}", "heads.prototypes={256}", "train.batch_size=2",
        "train.threads=2", "train.loader_threads=1", "--steps", "1", "--device", "cpu"], stdout=subprocess.DEVNULL)
    return ckpt


def export(poa, ckpt, member, work):
    out = os.path.join(work, member)
    if not os.path.exists(os.path.join(out, "libpoa_member.so")):
        sh([poa, "export", ckpt, "--net", member, "--what", "c", "--sizes", "224", "--out", out], stdout=subprocess.DEVNULL)
        sh(["make", "-s", "-C", out, "libpoa_member.so"])
    return out


class CMember:
    """The exported C program, in-process."""

    def __init__(self, folder, width):
        self.lib = ctypes.CDLL(os.path.join(folder, "libpoa_member.so"))
        self.lib.poa_member_open.restype = ctypes.c_void_p
        self.lib.poa_member_open.argtypes = [ctypes.c_char_p]
        self.lib.poa_member_error.restype = ctypes.c_char_p
        self.lib.poa_member_forward.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                                ctypes.c_void_p, ctypes.c_void_p]
        self.m = self.lib.poa_member_open(os.path.join(folder, "model.safetensors").encode())
        if not self.m:
            raise RuntimeError(self.lib.poa_member_error().decode())
        self.width = width
        self.gomp = ctypes.CDLL("libgomp.so.1")

    def threads(self, n):
        self.gomp.omp_set_num_threads(n)
        os.environ["OPENBLAS_NUM_THREADS"] = str(n)

    def __call__(self, x):
        b, s = x.shape[0], x.shape[2]
        patches = (s // 16) ** 2
        cls = np.empty((b, self.width), np.float32)
        tokens = np.empty((b, patches, self.width), np.float32)
        rc = self.lib.poa_member_forward(self.m, x.ctypes.data, b, s, cls.ctypes.data, tokens.ctypes.data)
        if rc:
            raise RuntimeError(self.lib.poa_member_error().decode())
        return cls, tokens


def timm_model(folder):
    import timm
    import torch
    from safetensors.torch import load_file
    cfg = json.load(open(os.path.join(folder, "config.json")))
    model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"]).eval()
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=True)
    return model, torch


def onnx_session(folder, model, torch, threads):
    import onnxruntime as ort
    path = os.path.join(folder, "model.onnx")
    if not os.path.exists(path):
        class Features(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m.forward_features(x)
        torch.onnx.export(Features(model).eval(), torch.zeros(1, 3, 224, 224), path, input_names=["images"],
                          output_names=["tokens"], dynamic_axes={"images": {0: "batch"}, "tokens": {0: "batch"}},
                          opset_version=17)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--poa", default="build/poa")
    ap.add_argument("--work", default="build/bench_export")
    ap.add_argument("--members", default="384x12,640x16")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    if a.runs < 1:
        sys.exit("--runs must be at least 1")
    os.makedirs(a.work, exist_ok=True)
    import torch
    import onnxruntime
    import timm
    print(f"torch {torch.__version__}, timm {timm.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{os.cpu_count()} CPUs, OpenBLAS core type {CORETYPE}; before: {uptime()}", flush=True)
    ckpt = checkpoint(a.poa, a.work)
    rows = []
    rng = np.random.default_rng(0)
    for member in a.members.split(","):
        folder = export(a.poa, ckpt, member, a.work)
        width = int(member.split("x")[0])
        model, torch = timm_model(folder)
        c = CMember(folder, width)
        for threads in [int(t) for t in a.threads.split(",")]:
            torch.set_num_threads(threads)
            c.threads(threads)
            sess = onnx_session(folder, model, torch, threads)
            for batch in [int(b) for b in a.batches.split(",")]:
                x = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
                xt = torch.from_numpy(x)
                engines = {
                    "C": lambda: c(x),
                    "ORT": lambda: sess.run(None, {"images": x}),
                    "torch": lambda: model.forward_features(xt),
                }
                with torch.no_grad():
                    # agreement (and warm-up): CLS of the C program against torch and ORT
                    cls_c = c(x)[0]
                    cls_t = model.forward_features(xt)[:, 0].numpy()
                    cls_o = sess.run(None, {"images": x})[0][:, 0]
                    scale = np.abs(cls_t).max()
                    agree = (np.abs(cls_c - cls_t).max() / scale, np.abs(cls_o - cls_t).max() / scale)
                    times = {k: [] for k in engines}
                    for _ in range(a.runs):
                        for k, f in engines.items():
                            t0 = time.perf_counter()
                            f()
                            times[k].append(1e3 * (time.perf_counter() - t0))
                r = {"member": member, "batch": batch, "threads": threads,
                     "rel_err_c": float(agree[0]), "rel_err_ort": float(agree[1])}
                for k, v in times.items():
                    r[k + "_min"], r[k + "_median"] = min(v), statistics.median(v)
                rows.append(r)
                print(f"{member} batch {batch} threads {threads}: " + ", ".join(
                    f"{k} min {r[k + '_min']:.1f} median {r[k + '_median']:.1f} ms" for k in engines)
                    + f"; ORT/C {r['ORT_median'] / r['C_median']:.2f}, torch/C {r['torch_median'] / r['C_median']:.2f}"
                    + f" (median); CLS vs torch: C {agree[0]:.1e}, ORT {agree[1]:.1e}", flush=True)
    print(f"after: {uptime()}")
    print("\n| member | batch | threads | C ms (min / median) | ORT ms | torch ms | ORT/C (median, min) | torch/C (median, min) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['member']} | {r['batch']} | {r['threads']} | {r['C_min']:.1f} / {r['C_median']:.1f} | "
              f"{r['ORT_min']:.1f} / {r['ORT_median']:.1f} | {r['torch_min']:.1f} / {r['torch_median']:.1f} | "
              f"{r['ORT_median'] / r['C_median']:.2f}, {r['ORT_min'] / r['C_min']:.2f} | "
              f"{r['torch_median'] / r['C_median']:.2f}, {r['torch_min'] / r['C_min']:.2f} |")
    with open(os.path.join(a.work, "export_cpu.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
