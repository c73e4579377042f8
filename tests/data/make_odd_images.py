#!/usr/bin/python3
"""tests/data/make_odd_images.py: writes the small odd image files the loader tests read,
from a real photo shipped by Debian (python-matplotlib-data's grace_hopper.jpg).
Run with Debian's /usr/bin/python3 (python3-pil). Writes tests/data/folder/ (a class tree
mixing good and bad files), tests/data/list.txt and tests/data/expected/*.rgb: PIL's own
RGB decode of each good file (raw bytes, size in expected/sizes.txt) to compare with."""
import io, os
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
photo = Image.open("/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg").convert("RGB")
small = photo.resize((64, 75), Image.BICUBIC)
folder = os.path.join(here, "folder")
for sub in ("a_good", "b_odd", "b_odd/nested"):
    os.makedirs(os.path.join(folder, sub), exist_ok=True)
os.makedirs(os.path.join(here, "expected"), exist_ok=True)

def path(name):
    return os.path.join(folder, name)

small.save(path("a_good/colour.jpg"), quality=90)                  # RGB 4:2:0
small.convert("L").save(path("a_good/grey.JPEG"), quality=90)      # greyscale JPEG
small.convert("CMYK").save(path("a_good/cmyk.jpg"), quality=90)    # Adobe CMYK JPEG
small.save(path("b_odd/png_named.JPEG"), format="PNG")             # a PNG under a .JPEG name
small.transpose(Image.FLIP_LEFT_RIGHT).save(path("b_odd/nested/flipped.Jpg"), quality=90)
good = io.BytesIO()
small.save(good, format="JPEG", quality=90)
data = good.getvalue()
with open(path("b_odd/truncated.jpg"), "wb") as f:               # cut in the middle of the scan
    f.write(data[: len(data) * 6 // 10])
with open(path("b_odd/not_an_image.jpeg"), "wb") as f:           # text with an image extension
    f.write(b"this is not an image\n")
with open(path("b_odd/empty.jpg"), "wb") as f:                   # zero bytes
    pass
with open(path("b_odd/readme.txt"), "w") as f:                   # not an image extension: ignored
    f.write("ignored by the dataset scan\n")
with open(path("top_level_file.jpg"), "wb") as f:                # outside class folders: ignored
    f.write(data)

sizes = []
for name in ("a_good/colour.jpg", "a_good/grey.JPEG", "a_good/cmyk.jpg", "b_odd/png_named.JPEG",
             "b_odd/nested/flipped.Jpg"):
    im = Image.open(path(name)).convert("RGB")
    out = name.replace("/", "_") + ".rgb"
    with open(os.path.join(here, "expected", out), "wb") as f:
        f.write(im.tobytes())
    sizes.append(f"{out} {im.width} {im.height}")
with open(os.path.join(here, "expected", "sizes.txt"), "w") as f:
    f.write("\n".join(sizes) + "\n")
with open(os.path.join(here, "list.txt"), "w") as f:
    f.write("# path label\nfolder/a_good/colour.jpg 3\nfolder/b_odd/png_named.JPEG 1\n")
