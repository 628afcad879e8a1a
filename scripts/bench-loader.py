#!/usr/bin/env python3
"""The data loader's rate against Pillow's, on the same files, in the same run.

    scripts/bench-loader.py make DIR [--classes 10 --per-class 100]
        writes an ImageNet-like image folder: DIR/{train,val}/<class>/*.JPEG, 500x375
        (and a few 375x500) photographs-like JPEGs at quality 90 (smooth shapes, edges and
        texture, so they decode as real photos do rather than as flat colour or noise).
    scripts/bench-loader.py run DIR [--images 1024 --size 224]
        times `calib bench --data imagefolder:DIR` (one loader thread, and all of them),
        then Pillow on one core: open + convert("RGB") + RandomResizedCrop (the crop, then
        resize with the bilinear filter, as torchvision does on PIL images) + flip +
        ToTensor + Normalize. torchvision's own transforms are used when importable, else
        the same steps written with Pillow and numpy. Prints one JSON object.

Needs Pillow and numpy (`.venv/bin/pip install pillow numpy`); nothing else.
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def make(args):
    rng = random.Random(0)
    for split, count in (("train", args.per_class), ("val", max(1, args.per_class // 10))):
        for k in range(args.classes):
            folder = os.path.join(args.dir, split, f"n{k:08d}")
            os.makedirs(folder, exist_ok=True)
            for n in range(count):
                w, h = (375, 500) if n % 8 == 7 else (500, 375)
                # A smooth two-colour gradient, then shapes, then mild texture: a JPEG of
                # such content is about as large as an ImageNet photo of this size.
                base = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
                c0 = np.array([rng.random() for _ in range(3)], dtype=np.float32)
                c1 = np.array([rng.random() for _ in range(3)], dtype=np.float32)
                img = (c0 * (1 - base) + c1 * base) * np.ones((h, 1, 1), np.float32)
                pil = Image.fromarray((img * 255).astype(np.uint8))
                draw = ImageDraw.Draw(pil)
                for _ in range(12):
                    x0, y0 = rng.randrange(w), rng.randrange(h)
                    x1, y1 = x0 + rng.randrange(20, 200), y0 + rng.randrange(20, 200)
                    fill = tuple(rng.randrange(256) for _ in range(3))
                    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
                pil = pil.filter(ImageFilter.GaussianBlur(1.5))
                noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 12, (h, w, 3))
                arr = np.clip(np.asarray(pil, np.float32) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(os.path.join(folder, f"img_{n:05d}.JPEG"), quality=90)
    print(f"wrote {args.classes} classes into {args.dir}")


def files_of(root, limit):
    """The first `limit` training files spread evenly over the sorted listing, as calib's
    `--images` picks them."""
    files = []
    train = os.path.join(root, "train")
    for cls in sorted(os.listdir(train)):
        folder = os.path.join(train, cls)
        files += [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
    if limit < len(files):
        files = [files[i * len(files) // limit] for i in range(limit)]
    return files


def rrc_params(w, h, rng):
    """torchvision's RandomResizedCrop.get_params, scale (0.08, 1), ratio (3/4, 4/3)."""
    area = w * h
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(lo, hi))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    return 0, 0, h, w


def pillow_transform(size):
    try:
        import torchvision.transforms as T

        t = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                       T.Normalize(MEAN.tolist(), STD.tolist())])
        return "torchvision", lambda img, rng: t(img)
    except ImportError:
        pass

    def plain(img, rng):
        top, left, ch, cw = rrc_params(img.width, img.height, rng)
        img = img.crop((left, top, left + cw, top + ch)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = np.asarray(img, np.float32) / 255.0
        return ((x - MEAN) / STD).transpose(2, 0, 1).copy()

    return "pillow+numpy", plain


def run(args):
    calib = os.path.join(os.path.dirname(__file__), "..", "target", "release", "calib")
    calib = os.environ.get("CALIB", calib)
    out = subprocess.run([calib, "bench", "--data", f"imagefolder:{args.dir}", "--images",
                          str(args.images), "--image-size", str(args.size), "--json"],
                         check=True, capture_output=True, text=True)
    ours = json.loads(out.stdout)
    files = files_of(args.dir, args.images)
    kind, transform = pillow_transform(args.size)
    rng = random.Random(0)

    def one_pass():
        for f in files:
            with Image.open(f) as img:
                transform(img.convert("RGB"), rng)

    one_pass()  # the files into the page cache, as calib's untimed pass
    t = time.perf_counter()
    one_pass()
    pillow = len(files) / (time.perf_counter() - t)
    import PIL

    result = {
        "images": len(files), "size": args.size, "calib": ours,
        "pillow": {"library": kind, "pillow_version": PIL.__version__,
                   "images_per_second_one_core": pillow},
        "ratio_per_core": ours["images_per_second_one_worker"] / pillow,
    }
    print(json.dumps(result, indent=1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--classes", type=int, default=10)
    m.add_argument("--per-class", type=int, default=100)
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("--images", type=int, default=1024)
    r.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    (make if args.cmd == "make" else run)(args)


if __name__ == "__main__":
    sys.exit(main())
