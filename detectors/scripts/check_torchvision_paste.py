#!/usr/bin/env python3
"""Checks the algorithm of `paste_mask_torchvision` (detectors/src/roi_heads/mask_head.rs) against torchvision.

A line-by-line Python transcription of the Rust function (f32 throughout, the same order of operations) is
compared with torchvision's `paste_masks_in_image` followed by `> 0.5` on random 28x28 maps and boxes inside
the image (a third of them under two pixels wide or high, many at the border). Usage (torch / torchvision):

    python3 detectors/scripts/check_torchvision_paste.py

Prints the number of differing pixels (expected: 0) and the worst IoU.
"""

import numpy as np
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

f32 = np.float32


def taps(inp, out):
    """`linear_taps`: (i0, i1, 1 - l, l) per output sample of a bilinear resize, align_corners=False."""
    scale = f32(inp) / f32(out)
    res = []
    for i in range(out):
        src = max(f32(scale * (f32(i) + f32(0.5))) - f32(0.5), f32(0))
        i0 = min(int(np.floor(src)), inp - 1)
        lam = min(max(f32(src - f32(i0)), f32(0)), f32(1))
        i1 = i0 + 1 if i0 < inp - 1 else i0
        res.append((i0, i1, f32(1) - lam, lam))
    return res


def paste(probs, m, box, h, w, thr):
    """`paste_mask_torchvision`, returning a [h, w] bool mask instead of an RLE."""
    padded = m + 2
    scale = f32(padded) / f32(m)
    x1, y1, x2, y2 = (f32(v) for v in box)
    w_half = f32(f32(f32(x2 - x1) * f32(0.5)) * scale)
    h_half = f32(f32(f32(y2 - y1) * f32(0.5)) * scale)
    xc, yc = f32(f32(x2 + x1) * f32(0.5)), f32(f32(y2 + y1) * f32(0.5))
    bx0, bx1 = int(f32(xc - w_half)), int(f32(xc + w_half))  # int() truncates toward zero, as `as i64`
    by0, by1 = int(f32(yc - h_half)), int(f32(yc + h_half))
    out_w, out_h = max(bx1 - bx0 + 1, 1), max(by1 - by0 + 1, 1)
    wx0 = min(max(bx0, 0), w)
    wx1 = max(min(max(bx1 + 1, 0), w), wx0)
    wy0 = min(max(by0, 0), h)
    wy1 = max(min(max(by1 + 1, 0), h), wy0)
    cols, rows = taps(padded, out_w), taps(padded, out_h)
    grid = np.zeros((padded, padded), f32)
    grid[1:-1, 1:-1] = probs
    out = np.zeros((h, w), bool)
    for x in range(wx0, wx1):
        c0, c1, cw0, cw1 = cols[x - bx0]
        for y in range(wy0, wy1):
            r0, r1, rw0, rw1 = rows[y - by0]
            top = f32(f32(grid[r0, c0] * cw0) + f32(grid[r0, c1] * cw1))
            bottom = f32(f32(grid[r1, c0] * cw0) + f32(grid[r1, c1] * cw1))
            out[y, x] = f32(f32(top * rw0) + f32(bottom * rw1)) > thr
    return out


def main():
    rng = np.random.default_rng(0)
    h, w, m = 60, 80, 28
    worst, differing = 1.0, 0
    for t in range(300):
        probs = rng.random((m, m)).astype(f32)
        small = t % 3 == 0
        bw = rng.uniform(0.1, 2.0) if small else rng.uniform(0.1, 40.0)
        bh = rng.uniform(0.1, 2.0) if small else rng.uniform(0.1, 40.0)
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        box = [x1, y1, x1 + bw, y1 + bh]
        ours = paste(probs, m, box, h, w, 0.5)
        boxes = torch.tensor([box], dtype=torch.float32)
        theirs = paste_masks_in_image(torch.from_numpy(probs)[None, None], boxes, (h, w))[0, 0].numpy() > 0.5
        differing += int((ours != theirs).sum())
        union = int((ours | theirs).sum())
        if union:
            worst = min(worst, int((ours & theirs).sum()) / union)
    print(f"300 pastes: {differing} pixels differ, worst IoU {worst}")


if __name__ == "__main__":
    main()
