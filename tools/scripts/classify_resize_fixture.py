#!/usr/bin/env python3
"""Reference output of `attndet classify`'s resize + centre crop: torchvision's evaluation transform.

    python3 tools/scripts/classify_resize_fixture.py --out tools/tests/fixtures

For each test image (drawn from the formula below, which the Rust test draws too) applies
torchvision.transforms.Compose([Resize(256), CenterCrop(224)]) to the PIL image (PIL's antialiased
bilinear resampling) and saves the 224x224 RGB result as a lossless PNG. The images are one larger than
256 on both sides (a downscale) and one smaller (an upscale), with smooth ramps and hard-edged squares.
"""
import argparse
import os

import numpy as np
import torchvision.transforms as T
from PIL import Image

CASES = {"resize_down": (333, 290), "resize_up": (120, 90)}  # (width, height)


def pattern(width, height):
    """R: horizontal ramp; G: vertical ramp; B: 16-pixel checkerboard of 20 and 220."""
    y, x = np.mgrid[0:height, 0:width]
    r = x * 255 // (width - 1)
    g = y * 255 // (height - 1)
    b = np.where(((x // 16) + (y // 16)) % 2 == 0, 20, 220)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    transform = T.Compose([T.Resize(256), T.CenterCrop(224)])
    for name, (w, h) in CASES.items():
        out = transform(Image.fromarray(pattern(w, h), "RGB"))
        out.save(os.path.join(args.out, f"classify_{name}.png"))
        print(name, (w, h), "->", out.size)


if __name__ == "__main__":
    main()
