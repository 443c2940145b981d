"""Reference values of Cascade R-CNN's stage-to-stage steps, written the way mmdetection computes them.

Re-implements in torch (no mmdetection import) the formulas of
  - `BBoxHead.regress_by_class` / `DeltaXYWHBBoxCoder.decode` (delta2bbox: denormalise, clamp dw/dh to
    |log(16/1000)|, centre/size form, clip to the image),
  - `BBoxHead.refine_bboxes` with the label rule of `CascadeRoIHead` (background RoIs take the argmax of the
    foreground scores) and the removal of the ground-truth boxes the sampler added,
  - `MaxIoUAssigner` with pos = neg = min_pos IoU at 0.6 and 0.7 (no low-quality matches) on the refined boxes,
  - the test-time classification: softmax of the mean of the stages' raw logits (`_refine_roi`, then
    `predict_by_feat`), and the mean of the softmaxes for contrast,
and writes them to a small JSON fixture that `detectors/src/roi_heads/cascade.rs` tests against.

Run: python3 detectors/scripts/make_cascade_fixture.py detectors/tests/fixtures/cascade.json
"""

import json
import math
import sys

import torch

torch.manual_seed(13)
K = 3  # object classes; background is column K
H, W = 60, 80


def decode(rois, deltas, stds, max_hw):
    d = deltas * torch.tensor(stds)
    dx, dy, dw, dh = d.unbind(1)
    ratio = abs(math.log(16 / 1000))
    dw, dh = dw.clamp(-ratio, ratio), dh.clamp(-ratio, ratio)
    px, py = (rois[:, 0] + rois[:, 2]) * 0.5, (rois[:, 1] + rois[:, 3]) * 0.5
    pw, ph = rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]
    gx, gy = px + pw * dx, py + ph * dy
    gw, gh = pw * dw.exp(), ph * dh.exp()
    out = torch.stack([gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5], 1)
    out[:, 0::2] = out[:, 0::2].clamp(0, max_hw[1])
    out[:, 1::2] = out[:, 1::2].clamp(0, max_hw[0])
    return out


def regress_by_class(rois, labels, deltas, stds, agnostic):
    if not agnostic:
        idx = torch.stack([labels * 4 + j for j in range(4)], 1)
        deltas = deltas.gather(1, idx)
    return decode(rois, deltas, stds, (H, W))


def iou(a, b):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def assign(priors, gts, thr):
    """gt_inds as mmdetection: 0 negative, i + 1 positive for GT i (every prior is one or the other)."""
    ov = iou(gts, priors)  # [G, R]
    best, arg = ov.max(0)
    return torch.where(best >= thr, arg + 1, torch.zeros_like(arg))


gts = torch.tensor([[10.0, 8.0, 40.0, 38.0], [44.0, 20.0, 76.0, 56.0]])
# one image's sampled RoIs, positives first: a GT added by the sampler, two jittered positives, three negatives
rois = torch.tensor(
    [
        [10.0, 8.0, 40.0, 38.0],
        [12.0, 10.0, 43.0, 37.0],
        [46.0, 18.0, 74.0, 52.0],
        [0.0, 40.0, 20.0, 60.0],
        [30.0, 0.0, 60.0, 20.0],
        [50.0, 45.0, 80.0, 60.0],
    ]
)
pos_is_gt = [True, False, False]
labels = torch.tensor([0, 0, 2, K, K, K])
logits = torch.randn(6, K + 1)
deltas_agnostic = torch.randn(6, 4) * 0.6
deltas_specific = torch.randn(6, 4 * K) * 2.0
stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]

refine_lbl = torch.where(labels == K, logits[:, :-1].argmax(1), labels)
keep = torch.ones(6, dtype=torch.bool)
keep[: len(pos_is_gt)] = ~torch.tensor(pos_is_gt)
refined_agnostic = regress_by_class(rois, refine_lbl, deltas_agnostic, stds[0], True)[keep]
refined_specific = regress_by_class(rois, refine_lbl, deltas_specific, stds[1], False)[keep]
# the next stages' assignment of the refined boxes (the GT boxes themselves are added by the sampler)
assign_06 = assign(refined_agnostic, gts, 0.6)
assign_07 = assign(refined_agnostic, gts, 0.7)

stage_logits = [torch.randn(6, K + 1) * 2.0 for _ in range(3)]
mean_logit_scores = torch.softmax(sum(stage_logits) / 3.0, 1)
mean_softmax_scores = sum(torch.softmax(s, 1) for s in stage_logits) / 3.0

rows = lambda t: [[round(float(v), 6) for v in r] for r in t]
fixture = {
    "generator": "python3 detectors/scripts/make_cascade_fixture.py detectors/tests/fixtures/cascade.json",
    "torch": torch.__version__,
    "num_classes": K,
    "img_hw": [H, W],
    "stds": stds,
    "gts": rows(gts),
    "rois": rows(rois),
    "pos_is_gt": pos_is_gt,
    "labels": labels.tolist(),
    "logits": rows(logits),
    "deltas_agnostic": rows(deltas_agnostic),
    "deltas_specific": rows(deltas_specific),
    "refine_labels": refine_lbl.tolist(),
    "refined_agnostic": rows(refined_agnostic),
    "refined_specific": rows(refined_specific),
    "assign_0.6": assign_06.tolist(),
    "assign_0.7": assign_07.tolist(),
    "stage_logits": [rows(s) for s in stage_logits],
    "mean_logit_scores": rows(mean_logit_scores),
    "mean_softmax_scores": rows(mean_softmax_scores),
}
with open(sys.argv[1], "w") as f:
    json.dump(fixture, f, indent=1)
    f.write("\n")
