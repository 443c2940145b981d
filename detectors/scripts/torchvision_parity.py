#!/usr/bin/env python3
"""Reference outputs of torchvision's RetinaNet, Faster R-CNN and Mask R-CNN (R50-FPN, COCO layout) for the
parity tests.

Usage (torch 2.15 / torchvision 0.29, CPU):

    python3 detectors/scripts/torchvision_parity.py detectors/tests/fixtures/torchvision

Both models are built as torchvision's COCO builders build them for released weights (FrozenBatchNorm2d with
eps 0, 91 classes), with every tensor of the state dict set from a formula that the Rust test computes too:

    u(t, i) = ((i * 2654435761 + t * 40503 + 12345) mod 2^32) / 2^32 - 0.5        (exact in f64)
    value   = (offset_q + amp_q * u) / 4096, rounded once to f32

where t is the tensor's index in the recorded key list, i the element's row-major index, and (amp_q, offset_q)
the integers recorded with the key (every step is exact in f64, so both sides get the same f32). The image is
800x1216 RGB from an integer formula (`image_pixel`), so neither side resizes it (scale min(800/800, 1333/1216)
= 1) nor pads it (both sides are multiples of 32).

Recorded per model (`retinanet.json`, `fasterrcnn.json`): the key list with shapes and formula integers, the
detections in torchvision's order, and for Faster R-CNN the RPN's test proposals; then the losses of one batch
(the image and `gt_boxes` / `gt_labels`) with the samplers' quotas above the anchor and proposal counts, so that
torchvision's random samplers keep every positive and negative: the sampled sets are fixed on both sides
without a hook.

Mask R-CNN (`maskrcnn.json`): the key list, the 100 detections, and for the first `MASK_DETS` of them the
pasted masks (`paste_masks_in_image`, binarised `> 0.5` as torchvision's COCO evaluation does) as uncompressed
COCO RLE (column-major run lengths, starting with 0s) of the 800x1216 image; then the losses of one batch, as
Faster R-CNN's, with the GT instance masks of `gt_masks` (ellipses inscribed in the GT boxes, an integer
formula the Rust test repeats), so that `loss_mask` (soft targets of `project_masks_on_boxes`) is compared too.
"""

import json
import math
import os
import sys

import torch
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.retinanet import _default_anchorgen
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

H, W = 800, 1216
Q = 4096  # formula integers are in units of 1/Q

# Ground truth of the loss check: COCO category ids, well apart (no two boxes compete for an anchor).
GT_BOXES = [[100.0, 120.0, 300.0, 360.0], [620.0, 200.0, 780.0, 330.0], [900.0, 500.0, 1150.0, 760.0]]
GT_LABELS = [1, 18, 62]


def image_pixel(c, y, x):
    """Channel c at (y, x), 0..255: a wrapped gradient with a few solid rectangles (edges for the features)."""
    v = (x * 3 + y * 5 + c * 71 + (x * y) // 97) % 256
    for k, (x0, y0, x1, y1) in enumerate(
        [(100, 120, 300, 360), (620, 200, 780, 330), (900, 500, 1150, 760), (400, 600, 520, 700)]
    ):
        if x0 <= x < x1 and y0 <= y < y1:
            v = (40 + 60 * k + 90 * c) % 256
    return v


def image():
    ys = torch.arange(H).view(H, 1)
    xs = torch.arange(W).view(1, W)
    out = torch.zeros(3, H, W, dtype=torch.int64)
    for c in range(3):
        v = (xs * 3 + ys * 5 + c * 71 + (xs * ys) // 97) % 256
        for k, (x0, y0, x1, y1) in enumerate(
            [(100, 120, 300, 360), (620, 200, 780, 330), (900, 500, 1150, 760), (400, 600, 520, 700)]
        ):
            inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
            v = torch.where(inside, torch.full_like(v, (40 + 60 * k + 90 * c) % 256), v)
        out[c] = v
    # the vectorised form is the scalar formula
    assert int(out[1, 333, 777]) == image_pixel(1, 333, 777) and int(out[2, 550, 1000]) == image_pixel(2, 550, 1000)
    return out


def formula_values(t, n, amp_q, offset_q):
    # i * 2654435761 exceeds 2^53 for large i: reduce exactly with integers
    ii = torch.arange(n, dtype=torch.int64)
    r = (ii * 2654435761 + t * 40503 + 12345) % (1 << 32)
    u = r.to(torch.float64) / float(1 << 32) - 0.5
    return ((offset_q + amp_q * u) / Q).to(torch.float32)


# Weight gains above the default 1.2 / sqrt(fan_in) scale: ReLU towers keep their variance (sqrt 2), and the
# classifiers are sharp enough that scores are well apart (ties or near-ties would make the order fragile).
GAINS = {
    "head.classification_head.conv": 2.0,
    "head.regression_head.conv": 2.0,
    "head.classification_head.cls_logits.weight": 30.0,
    "roi_heads.box_predictor.cls_score.weight": 40.0,
    "rpn.head.cls_logits.weight": 8.0,
    "roi_heads.mask_head.": 1.7,
    "roi_heads.mask_predictor.conv5_mask.weight": 1.7,
    # the mask branch's activations are ~0.01: logits spread over a few units (masks with structure inside
    # their boxes, rather than all on or all off)
    "roi_heads.mask_predictor.mask_fcn_logits.weight": 500.0,
}

# detections whose pasted masks are recorded (each RLE is a few hundred integers)
MASK_DETS = 8


def formula_integers(key, shape, cls_bias_q):
    """(amp_q, offset_q) of a tensor: weights scaled by 1/sqrt(fan_in), norms near identity."""
    last = key.rsplit(".", 1)[-1]
    if last == "num_batches_tracked":
        return None
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        gain = next((g for k, g in GAINS.items() if key.startswith(k)), 1.2)
        amp = math.sqrt(12.0 / fan_in) * gain
        return max(1, round(amp * Q)), 0
    is_norm = "bn" in key or "downsample.1" in key
    if is_norm:
        if last == "weight":
            return Q // 2, 3 * Q // 4  # [0.5, 1)
        if last == "bias":
            return Q // 5, 0
        if last == "running_mean":
            return Q // 5, 0
        if last == "running_var":
            return Q, Q  # [0.5, 1.5)
    if key in cls_bias_q:
        return cls_bias_q[key]
    return Q // 10, 0  # conv / linear biases


def set_formula(model, cls_bias_q):
    sd = model.state_dict()
    keys = []
    new = {}
    for t, (k, v) in enumerate(sd.items()):
        ints = formula_integers(k, list(v.shape), cls_bias_q)
        if ints is None:
            new[k] = v
            continue
        amp_q, offset_q = ints
        new[k] = formula_values(t, v.numel(), amp_q, offset_q).view(v.shape)
        keys.append({"key": k, "index": t, "shape": list(v.shape), "amp_q": amp_q, "offset_q": offset_q})
    model.load_state_dict(new)
    return keys


def frozen_r50():
    backbone = resnet50(weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d)
    return backbone


def overwrite_eps(model, eps):
    for m in model.modules():
        if isinstance(m, misc_nn_ops.FrozenBatchNorm2d):
            m.eps = eps


def rounded(t, nd=5):
    return [round(float(x), nd) for x in t.reshape(-1).tolist()]


def dets(d):
    return {
        "boxes": [rounded(b) for b in d["boxes"]],
        "scores": [float(s) for s in d["scores"]],
        "labels": [int(l) for l in d["labels"]],
    }


def targets():
    return [{"boxes": torch.tensor(GT_BOXES), "labels": torch.tensor(GT_LABELS, dtype=torch.int64)}]


def gt_masks():
    """[N, H, W] uint8: the ellipse inscribed in each GT box, in exact integers (the Rust test's formula): pixel
    (y, x) is inside when (2x + 1 - (x0 + x1))^2 (y1 - y0)^2 + (2y + 1 - (y0 + y1))^2 (x1 - x0)^2
    <= (x1 - x0)^2 (y1 - y0)^2."""
    ys = torch.arange(H, dtype=torch.int64).view(H, 1)
    xs = torch.arange(W, dtype=torch.int64).view(1, W)
    out = []
    for x0, y0, x1, y1 in (map(int, b) for b in GT_BOXES):
        rx2, ry2 = x1 - x0, y1 - y0
        inside = (2 * xs + 1 - (x0 + x1)) ** 2 * ry2**2 + (2 * ys + 1 - (y0 + y1)) ** 2 * rx2**2 <= rx2**2 * ry2**2
        out.append(inside.to(torch.uint8))
    return torch.stack(out)


def retinanet(img):
    backbone = _resnet_fpn_extractor(frozen_r50(), 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    model = RetinaNet(backbone, 91, anchor_generator=_default_anchorgen())
    overwrite_eps(model, 0.0)
    # classifier bias near the prior's -4.6 but wide, so that some (anchor, class) pairs pass 0.05
    keys = set_formula(model, {"head.classification_head.cls_logits.bias": (2 * Q, -4 * Q)})
    model.eval()
    with torch.no_grad():
        out = model([img])[0]
    model.train()
    with torch.no_grad():
        losses = model([img], targets())
    return {
        "keys": keys,
        "detections": dets(out),
        "losses": {k: float(v) for k, v in losses.items()},
    }


def fasterrcnn(img):
    backbone = _resnet_fpn_extractor(frozen_r50(), 3)
    # samplers' quotas above every count: all positives and negatives are kept (see the module docstring)
    model = FasterRCNN(
        backbone,
        91,
        rpn_batch_size_per_image=1_000_000,
        box_batch_size_per_image=1_000_000,
    )
    overwrite_eps(model, 0.0)
    keys = set_formula(
        model,
        {
            "roi_heads.box_predictor.cls_score.bias": (2 * Q, 0),
            "rpn.head.cls_logits.bias": (2 * Q, 0),
        },
    )
    model.eval()
    with torch.no_grad():
        images, _ = model.transform([img])
        assert list(images.tensors.shape[-2:]) == [H, W], images.tensors.shape
        feats = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, feats)
        out = model([img])[0]
    model.train()
    with torch.no_grad():
        losses = model([img], targets())
    return {
        "keys": keys,
        "proposals": [rounded(b) for b in proposals[0]],
        "detections": dets(out),
        "losses": {k: float(v) for k, v in losses.items()},
    }


def rle(mask):
    """Uncompressed COCO RLE of a [H, W] bool mask: column-major run lengths, the first a run of 0s."""
    flat = mask.t().reshape(-1).to(torch.int8)
    change = torch.nonzero(flat[1:] != flat[:-1]).reshape(-1) + 1
    bounds = [0] + change.tolist() + [flat.numel()]
    counts = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    if flat.numel() and int(flat[0]) == 1:
        counts = [0] + counts
    return counts


def maskrcnn(img):
    backbone = _resnet_fpn_extractor(frozen_r50(), 3)
    # samplers' quotas above every count, as for Faster R-CNN (test time is not affected)
    model = MaskRCNN(
        backbone,
        91,
        rpn_batch_size_per_image=1_000_000,
        box_batch_size_per_image=1_000_000,
    )
    overwrite_eps(model, 0.0)
    # the mask branch's biases near 0 (+-0.0005): at the usual +-0.05 they would swamp its ~0.01 activations
    small = {f"roi_heads.mask_head.{i}.0.bias": (4, 0) for i in range(4)}
    small["roi_heads.mask_predictor.conv5_mask.bias"] = (4, 0)
    small["roi_heads.mask_predictor.mask_fcn_logits.bias"] = (4, 0)
    keys = set_formula(
        model,
        {
            "roi_heads.box_predictor.cls_score.bias": (2 * Q, 0),
            "rpn.head.cls_logits.bias": (2 * Q, 0),
            **small,
        },
    )
    model.eval()
    with torch.no_grad():
        out = model([img])[0]
    masks = out["masks"][:MASK_DETS, 0] > 0.5
    probs = out["masks"][:MASK_DETS, 0]
    print(f"  mask areas {[int(m.sum()) for m in masks]}, pixels in (0.45, 0.55): {int(((probs > 0.45) & (probs < 0.55)).sum())}")
    model.train()
    with torch.no_grad():
        losses = model([img], [dict(targets()[0], masks=gt_masks())])
    return {
        "keys": keys,
        "detections": dets(out),
        "masks": [rle(m) for m in masks],
        "losses": {k: float(v) for k, v in losses.items()},
    }


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "detectors/tests/fixtures/torchvision"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(2)
    img = image().to(torch.float32) / 255.0
    common = {"height": H, "width": W, "q": Q, "gt_boxes": GT_BOXES, "gt_labels": GT_LABELS}
    only = sys.argv[2:]  # model names to (re)make; all by default
    for name, build in [("retinanet", retinanet), ("fasterrcnn", fasterrcnn), ("maskrcnn", maskrcnn)]:
        if only and name not in only:
            continue
        rec = dict(common, **build(img))
        n = len(rec["detections"]["scores"])
        print(f"{name}: {n} detections, labels {sorted(set(rec['detections']['labels']))[:10]}, losses {rec.get('losses')}")
        if "proposals" in rec:
            print(f"  {len(rec['proposals'])} proposals")
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(rec, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
