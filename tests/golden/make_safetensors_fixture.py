#!/usr/bin/python3
"""Writes tests/golden/fixtures/safetensors_small.safetensors, read by tests/c/test_safetensors.c.

The file is written by hand from the format description (u64 LE header size, JSON header padded
with spaces to a multiple of 8, data buffer), in an order that differs from the C writer's
(JSON keys in insertion order, data in the order below), with these tensors; each value is a
formula of the flat index i so the C test can recompute it:
  "weight"      F32  (2, 3)     i * 0.25 - 0.5
  "double"      F64  (4,)       (i + 1) / 3
  "brain"       BF16 (3, 2)     i * 0.5 - 1.25          (exact in bfloat16)
  "half"        F16  (5,)       [1.0, -2.5, 65504.0, 2**-24, 0.0]  (normal, max, subnormal, zero)
  "count"       I64  ()         -7                       (a scalar)
  "empty"       U8   (0, 3)     no bytes                  (a zero-size dim)
  "caf\u00e9"   I32  (2,)       [1, -1]                  (a name escaped as \\u00e9 in the JSON)
metadata: {"format": "pt", "note": "line\\nbreak \\"quoted\\""}
Run: /usr/bin/python3 tests/golden/make_safetensors_fixture.py
"""
import json
import os
import struct

import torch


def main():
    tensors = [
        ("weight", "F32", torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.25 - 0.5),
        ("double", "F64", (torch.arange(4, dtype=torch.float64) + 1) / 3),
        ("brain", "BF16", (torch.arange(6, dtype=torch.float32) * 0.5 - 1.25).reshape(3, 2).to(torch.bfloat16)),
        ("half", "F16", torch.tensor([1.0, -2.5, 65504.0, 2.0 ** -24, 0.0], dtype=torch.float16)),
        ("count", "I64", torch.tensor(-7, dtype=torch.int64)),
        ("empty", "U8", torch.zeros((0, 3), dtype=torch.uint8)),
        ("caf\u00e9", "I32", torch.tensor([1, -1], dtype=torch.int32)),
    ]
    header = {"__metadata__": {"format": "pt", "note": 'line\nbreak "quoted"'}}
    data = b""
    for name, dtype, t in tensors:
        raw = t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode("utf-8")  # ensure_ascii: the name is written as caf\u00e9
    text += b" " * (-len(text) % 8)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "safetensors_small.safetensors")
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    print("wrote", out, 8 + len(text) + len(data), "bytes")


if __name__ == "__main__":
    main()
