#!/usr/bin/python3
# make_knn_fixtures.py: the k-NN eval transform as torchvision 0.14 runs it on PIL images
# (reference §8.1: Resize(round(size * 256 / 224), bicubic) on the shorter side, then
# CenterCrop(size)), for a landscape and a portrait random image. Run with Debian's python3:
#   /usr/bin/python3 tests/golden/make_knn_fixtures.py
# Writes tests/golden/fixtures/knn_transform_<w>x<h>_<size>.{in,out}.u8 (raw RGB, row-major).
import numpy as np
from PIL import Image
from torchvision import transforms

out = "tests/golden/fixtures/"
rng = np.random.default_rng(4)
for (w, h, size) in [(45, 30, 32), (29, 52, 24)]:
    # smooth-ish content so the bicubic taps matter, plus noise
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    img = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
    resize = round(size * 256 / 224)
    t = transforms.Compose([transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
                            transforms.CenterCrop(size)])
    res = np.asarray(t(Image.fromarray(img, "RGB")))
    assert res.shape == (size, size, 3)
    name = f"{out}knn_transform_{w}x{h}_{size}"
    img.tofile(name + ".in.u8")
    res.tofile(name + ".out.u8")
    print(name, resize)

# The classifier as DINOv2's KnnModule computes it (topk of the cosine similarities,
# softmax(sims / 0.07) over the top max_k, one-hot weighted sums of the first k), on
# random L2-normalised features in 3 loose clusters per class so accuracies are neither 0 nor 1.
import torch
torch.manual_seed(4)
classes, dim, n_train, n_val = 7, 12, 260, 90
centers = torch.randn(classes, dim)
train_labels = torch.randint(0, classes, (n_train,))
val_labels = torch.randint(0, classes, (n_val,))
train = torch.nn.functional.normalize(centers[train_labels] + 1.3 * torch.randn(n_train, dim), dim=1)
val = torch.nn.functional.normalize(centers[val_labels] + 1.3 * torch.randn(n_val, dim), dim=1)
ks, T = [10, 20, 100, 200], 0.07
sims = val @ train.T
topk_sims, indices = sims.topk(max(ks), largest=True, sorted=True)
neighbors = train_labels[indices]
weights = torch.softmax(topk_sims / T, 1)
onehot = torch.nn.functional.one_hot(neighbors, classes) * weights.unsqueeze(-1)
lines = []
for k in ks:
    probas = onehot[:, :k, :].sum(1)
    top5 = probas.topk(5, 1).indices
    top1 = (top5[:, 0] == val_labels).double().mean().item()
    top5 = (top5 == val_labels[:, None]).any(1).double().mean().item()
    lines.append(f"{k} {top1:.10f} {top5:.10f}")
name = out + "knn_classify"
train.numpy().astype("<f4").tofile(name + "_train.f32")
val.numpy().astype("<f4").tofile(name + "_val.f32")
train_labels.numpy().astype("<i4").tofile(name + "_train_labels.i32")
val_labels.numpy().astype("<i4").tofile(name + "_val_labels.i32")
with open(name + ".txt", "w") as f:
    f.write(f"{classes} {dim} {n_train} {n_val}\n" + "\n".join(lines) + "\n")
print(open(name + ".txt").read())
