#!/usr/bin/python3
"""tests/golden/make_augment_fixtures.py: torchvision (Debian python3-torchvision 0.14,
PIL images, as the reference pipeline) applies each augmentation op with FIXED parameters
to small crops of a real photo; the C test (tests/c/test_augment.c) applies the same op
with the same parameters and compares.
Writes tests/golden/fixtures/augment_cases.txt, one case a line:
  <name> <op> <input file> <in w> <in h> <output file> <out w> <out h> <params...>
and the raw files augment_*.u8 (interleaved RGB, row-major) / augment_*.f32 (planar CHW
float32, little-endian). Run with Debian's /usr/bin/python3."""
import os
import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
out_dir = os.path.join(here, "fixtures")
photo = Image.open("/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg").convert("RGB")
# Two inputs: a 80x96 downscale of the whole photo and a 40x36 detail at full resolution.
inputs = {
    "photo": photo.resize((80, 96), Image.BICUBIC),
    "detail": photo.crop((230, 160, 270, 196)),
}
lines = []

def save_u8(name, img):
    path = f"augment_{name}.u8"
    with open(os.path.join(out_dir, path), "wb") as f:
        f.write(np.asarray(img, dtype=np.uint8).tobytes())
    return path

for key, img in inputs.items():
    save_u8("in_" + key, img)

def case(name, op, key, out, params):
    src = inputs[key]
    if isinstance(out, torch.Tensor):
        path = f"augment_{name}.f32"
        arr = out.numpy().astype("<f4")
        with open(os.path.join(out_dir, path), "wb") as f:
            f.write(arr.tobytes())
        w, h = arr.shape[2], arr.shape[1]
    else:
        path = save_u8(name, out)
        w, h = out.size
    fields = [name, op, f"augment_in_{key}.u8", str(src.width), str(src.height), path, str(w), str(h)]
    lines.append(" ".join(fields + [repr(float(p)) if isinstance(p, float) else str(p) for p in params]))

B = F.InterpolationMode.BICUBIC
for i, (key, top, left, h, w, oh, ow) in enumerate([
        ("photo", 5, 3, 60, 50, 32, 32),    # downscale ~1.7x
        ("photo", 0, 0, 96, 80, 24, 20),    # whole image, downscale 4x
        ("photo", 30, 20, 17, 23, 48, 48),  # upscale
        ("detail", 2, 4, 30, 33, 30, 33),   # same size (box only)
        ("photo", 10, 7, 70, 60, 96, 16)]): # mixed
    img = inputs[key]
    case(f"crop{i}", "resized_crop", key, F.resized_crop(img, top, left, h, w, [oh, ow], B),
         [top, left, h, w])
case("flip", "hflip", "detail", F.hflip(inputs["detail"]), [])
for f in (0.6, 1.37, 0.93):
    case(f"brightness_{f}", "brightness", "photo", F.adjust_brightness(inputs["photo"], f), [f])
for f in (0.6, 1.4, 1.05):
    case(f"contrast_{f}", "contrast", "photo", F.adjust_contrast(inputs["photo"], f), [f])
for f in (0.8, 1.2, 0.0):
    case(f"saturation_{f}", "saturation", "photo", F.adjust_saturation(inputs["photo"], f), [f])
for f in (-0.1, -0.037, 0.05, 0.099):
    case(f"hue_{f}", "hue", "photo", F.adjust_hue(inputs["photo"], f), [f])
case("grayscale", "grayscale", "photo", F.rgb_to_grayscale(inputs["photo"], 3), [])
for s in (0.1, 0.7, 1.93):
    case(f"blur_{s}", "blur", "photo", F.gaussian_blur(inputs["photo"], [9, 9], [s, s]), [s])
case("blur_detail", "blur", "detail", F.gaussian_blur(inputs["detail"], [9, 9], [1.3, 1.3]), [1.3])
case("solarize", "solarize", "photo", F.solarize(inputs["photo"], 128), [])
mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
case("normalize", "normalize", "detail", F.normalize(F.to_tensor(inputs["detail"]), mean, std), [])

def chain(img, top, left, h, w, size, flip, order, b, c, s, hue, gray, sigma, solarize):
    img = F.resized_crop(img, top, left, h, w, [size, size], B)
    if flip:
        img = F.hflip(img)
    ops = [lambda x: F.adjust_brightness(x, b), lambda x: F.adjust_contrast(x, c),
           lambda x: F.adjust_saturation(x, s), lambda x: F.adjust_hue(x, hue)]
    for o in order:
        img = ops[o](img)
    if gray:
        img = F.rgb_to_grayscale(img, 3)
    if sigma > 0:
        img = F.gaussian_blur(img, [9, 9], [sigma, sigma])
    if solarize:
        img = F.solarize(img, 128)
    return F.normalize(F.to_tensor(img), mean, std)

for i, p in enumerate([(4, 6, 70, 64, 32, 1, (3, 0, 2, 1), 1.21, 0.74, 1.13, -0.062, 0, 0.83, 1),
                       (20, 10, 40, 45, 24, 0, (1, 3, 0, 2), 0.65, 1.33, 0.86, 0.081, 1, 0.0, 0)]):
    case(f"chain{i}", "chain", "photo", chain(inputs["photo"], *p),
         list(p[:6]) + list(p[6]) + list(p[7:]))

with open(os.path.join(out_dir, "augment_cases.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
print(len(lines), "cases")
