#!/usr/bin/python3
"""bench/data_torchvision.py: the reference's DataAugmentationDINO pipeline (reference §6.2:
PIL decode + convert("RGB"), RandomResizedCrop bicubic, flip, ColorJitter p 0.8, grayscale
0.2, GaussianBlur 9 with effective p 0 / 0.9 / 0.5, solarize 0.2 on crop 2, ToTensor +
Normalize) for 2 x 224 + 8 x 96 crops, on one core, on the same image as
build/bench/bench_data; prints both rates and their ratio. Not a test.
  /usr/bin/python3 bench/data_torchvision.py [image.jpg] [images]"""
import os, re, subprocess, sys, time
import torch
from PIL import Image
from torchvision import transforms as T

torch.set_num_threads(1)
path = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"
images = int(sys.argv[2]) if len(sys.argv) > 2 else 200
B = T.InterpolationMode.BICUBIC
geo = lambda size, scale: T.Compose([T.RandomResizedCrop(size, scale=scale, interpolation=B),
                                     T.RandomHorizontalFlip(0.5)])
colour = T.Compose([T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(0.2)])
blur = lambda p: T.RandomApply([T.GaussianBlur(9, sigma=(0.1, 2.0))], p=p)
norm = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
g1 = T.Compose([geo(224, (0.32, 1.0)), colour, blur(0.0), norm])
g2 = T.Compose([geo(224, (0.32, 1.0)), colour, blur(0.9), T.RandomSolarize(128, p=0.2), norm])
loc = T.Compose([geo(96, (0.05, 0.32)), colour, blur(0.5), norm])

def sample():
    with open(path, "rb") as f:
        img = Image.open(f).convert("RGB")
    return [g1(img), g2(img)] + [loc(img) for _ in range(8)]

sample()
start = time.perf_counter()
for _ in range(images):
    sample()
python_rate = images / (time.perf_counter() - start)
here = os.path.dirname(os.path.abspath(__file__))
out = subprocess.run([os.path.join(here, "..", "build", "bench", "bench_data"), path, str(images)],
                     capture_output=True, text=True, check=True).stdout
c_rate = float(re.search(r"images/s/core: ([0-9.]+)", out).group(1))
c_full = float(re.search(r"images/s/core full decode: ([0-9.]+)", out).group(1))
print(out.strip())
print(f"PIL/torchvision images/s/core: {python_rate:.1f}")
print(f"ratio poa / torchvision: {c_rate / python_rate:.2f} (full decode: {c_full / python_rate:.2f})")
