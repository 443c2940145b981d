#!/usr/bin/env python3
"""Reference values for Mask R-CNN's mask targets and mask pasting, as mmdetection computes them.

Run from the repository root:  python3 detectors/scripts/make_mask_fixtures.py
(torch 2.x + torchvision 0.2x + pycocotools; mmdetection is not needed: its formulas are re-implemented below).

- Mask targets (mmdetection `mask_target_single` -> `BitmapMasks.crop_and_resize`): the assigned instance's
  full-image bitmap pooled by RoIAlign at the RoI (output 28x28, spatial scale 1, sampling_ratio 0 = adaptive,
  aligned=True) and binarised with `>= 0.5`. mmcv's `roi_align` with aligned=True is the same formula as
  torchvision's, which is used here. Instances are given as polygons (rasterized by pycocotools, as mmdetection's
  `poly2mask`) and as uncompressed RLE.
- Pasting (mmdetection `_do_paste_mask`, CPU path: one mask at a time, `skip_empty=True`): pixel centres mapped
  into the box, `grid_sample(align_corners=False)` with zero padding, thresholded at `mask_thr_binary=0.5`.

Everything is written to detectors/tests/fixtures/masks.json. Masks are stored as COCO RLE counts (column-major,
starting with zeros); the pasted probability maps are stored as exact float32 values.
"""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from make_fixtures import Lcg  # noqa: E402  (the LCG shared with the Rust tests)

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "masks.json")
H, W = 40, 48  # image height, width


def rle_counts(bitmap):
    """Uncompressed COCO counts of a (H, W) bool array."""
    counts, value, run = [], False, 0
    for v in np.asarray(bitmap, dtype=bool).flatten(order="F"):
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return counts


def instances():
    """Three instances: a pentagon polygon, a two-part polygon, and an ellipse given as an uncompressed RLE."""
    pentagon = [[6.5, 3.0, 20.25, 5.5, 22.0, 18.75, 12.0, 24.5, 3.25, 15.0]]
    two_parts = [[30.0, 2.0, 46.0, 2.0, 46.0, 10.0, 30.0, 10.0], [25.5, 20.0, 40.0, 22.5, 33.0, 37.5]]
    yy, xx = np.mgrid[0:H, 0:W]
    ellipse = ((xx + 0.5 - 14.0) / 11.0) ** 2 + ((yy + 0.5 - 30.0) / 7.5) ** 2 <= 1.0
    out = []
    for poly in (pentagon, two_parts):
        rle = mask_util.merge(mask_util.frPyObjects(poly, H, W))
        out.append(({"polygons": poly}, mask_util.decode(rle).astype(bool)))
    out.append(({"counts": rle_counts(ellipse)}, ellipse))
    return out


def mm_mask_targets(bitmaps, rois, gt_index, size):
    planes = torch.from_numpy(np.stack(bitmaps).astype(np.float32))[:, None]
    rows = torch.cat([torch.tensor(gt_index, dtype=torch.float32)[:, None], torch.tensor(rois)], 1)
    pooled = roi_align(planes, rows, (size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return (pooled[:, 0] >= 0.5).numpy()


def mm_paste(probs, box, h, w, thr=0.5):
    """mmdetection `_do_paste_mask` for one mask with skip_empty=True, then `>= thr`, on the full image."""
    box_t = torch.tensor([box], dtype=torch.float32)
    x0_int, y0_int = torch.clamp(box_t.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int32).tolist()
    x1_int = int(torch.clamp(box_t[:, 2].max().ceil() + 1, max=w))
    y1_int = int(torch.clamp(box_t[:, 3].max().ceil() + 1, max=h))
    x0, y0, x1, y1 = torch.split(box_t, 1, dim=1)
    img_y = torch.arange(y0_int, y1_int, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    gx = img_x[:, None, :].expand(1, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(1, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)
    m = torch.from_numpy(probs)[None, None]
    window = F.grid_sample(m, grid, align_corners=False)[0, 0]
    full = np.zeros((h, w), dtype=bool)
    full[y0_int:y1_int, x0_int:x1_int] = (window >= thr).numpy()
    return full


def main():
    insts = instances()
    bitmaps = [b for _, b in insts]
    # RoIs: inside an instance, covering it, partly outside the image (negative and beyond w/h), tiny (< 1 px),
    # thin, and one on the RLE instance
    rois = [
        [5.0, 2.5, 23.0, 25.0],
        [8.25, 6.5, 16.75, 14.0],
        [-6.0, -4.0, 12.0, 10.0],
        [28.0, 1.0, 55.0, 44.0],
        [10.1, 10.2, 10.6, 10.9],
        [24.0, 19.0, 41.0, 21.5],
        [2.0, 21.0, 26.5, 39.0],
    ]
    gt_index = [0, 0, 0, 1, 0, 1, 2]
    targets = mm_mask_targets(bitmaps, rois, gt_index, 28)
    # pasting: 14x14 probability maps, smoothed LCG noise (seed 11) so that the pasted masks have shapes,
    # stored in the fixture (float32 values written exactly)
    rng = Lcg(11)
    boxes = [
        [10.3, 7.6, 30.9, 25.2],   # interior
        [35.5, 20.25, 48.0, 40.0],  # touching the right and bottom border
        [-3.0, -2.5, 9.5, 6.0],     # starting outside the image
        [20.2, 12.1, 20.8, 12.7],   # smaller than a pixel
        [0.0, 0.0, 48.0, 40.0],     # the whole image
        [44.0, 30.0, 60.0, 52.0],   # mostly outside
    ]
    pastes = []
    for box in boxes:
        probs = rng.uniform(14 * 14).reshape(14, 14).astype(np.float32)
        probs = F.avg_pool2d(torch.from_numpy(probs)[None, None], 3, 1, 1, count_include_pad=False)[0, 0].numpy()
        probs = np.clip((probs - 0.5) * 6 + 0.5, 0, 1).astype(np.float32)
        pastes.append(
            {"box": box, "probs": [float(v) for v in probs.reshape(-1)], "counts": rle_counts(mm_paste(probs, box, H, W))}
        )
    fixture = {
        "height": H,
        "width": W,
        "instances": [spec for spec, _ in insts],
        "instance_counts": [rle_counts(b) for b in bitmaps],
        "rois": rois,
        "gt_index": gt_index,
        "targets": [int(v) for v in targets.reshape(-1)],
        "pastes": pastes,
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
    print("wrote", os.path.abspath(OUT))


if __name__ == "__main__":
    main()
