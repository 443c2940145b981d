"""Cascade R-CNN's RoI head in plain torch (+ torchvision.ops), written from mmdetection's formulas, for the speed
benchmark `bench.py --detector cascade_rcnn` (torchvision has no Cascade R-CNN).

`CascadeRoIHeads` takes the place of torchvision's `RoIHeads` inside a `GeneralizedRCNN` (same call:
`forward(features, proposals, image_shapes, targets) -> (detections, losses)`; labels 1..K as torchvision's
targets carry them, background 0 outside). Inside, classes are mmdetection's: 0..K-1 and the background last (K).

What each stage does (mmdetection's `CascadeRoIHead` with `Shared2FCBBoxHead`, `reg_class_agnostic=True`):
  - RoIAlign 7x7, `sampling_ratio=0`, `aligned=True`, on P2-P5 with the level `floor(log2(sqrt(w h) / 56))`
    clamped to 0..3 (`SingleRoIExtractor`, `finest_scale=56`);
  - flatten, fc 12544 -> 1024, ReLU, fc 1024 -> 1024, ReLU, then `fc_cls` (K + 1) and `fc_reg` (4 deltas, one
    set for all classes), initialised like mmdetection (Xavier-uniform fcs, N(0, 0.01) cls, N(0, 0.001) reg);
  - training: MaxIoU assignment at the stage's IoU (pos = neg = min_pos, no low-quality matches), the GT boxes
    prepended to the proposals and assigned to themselves, 512 RoIs per image of which at most a quarter are
    positive (random choice), CE over all sampled RoIs and SmoothL1 (beta 1) over the positives' normalised
    deltas divided by the number of sampled RoIs, both times the stage weight (1, 0.5, 0.25);
  - between stages (no gradient): each sampled RoI moved by its deltas (background RoIs would take their best
    foreground class; with class-agnostic deltas the class does not matter), clipped to the image, the GT boxes
    the sampler added dropped: the next stage's proposals;
  - test: the 1000 proposals refined after stages 0 and 1; scores = softmax of the mean of the three stages'
    logits (mmdetection's `_refine_roi` averages the raw `cls_score`, `predict_by_feat` applies the softmax),
    boxes = the last stage's deltas on its input RoIs, clipped; score > 0.05, per-class NMS 0.5, top 100.
Box coder: mmdetection's `DeltaXYWHBBoxCoder` (means 0, the stage's stds, dw/dh clamped to |log(16/1000)|).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou, roi_align

STAGE_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))
STAGE_IOUS = (0.5, 0.6, 0.7)
STAGE_WEIGHTS = (1.0, 0.5, 0.25)
WH_RATIO_CLIP = abs(math.log(16 / 1000))


def encode(rois, gts, stds):
    """Normalised deltas of `gts` from `rois`, both `[N, 4]` x1y1x2y2 -> `[N, 4]` (dx, dy, dw, dh) / stds."""
    pw, ph = rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]
    px, py = rois[:, 0] + 0.5 * pw, rois[:, 1] + 0.5 * ph
    gw, gh = gts[:, 2] - gts[:, 0], gts[:, 3] - gts[:, 1]
    gx, gy = gts[:, 0] + 0.5 * gw, gts[:, 1] + 0.5 * gh
    d = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], 1)
    return d / d.new_tensor(stds)


def decode(rois, deltas, stds, hw):
    """Boxes from `rois` `[N, 4]` moved by normalised `deltas` `[N, 4]`, clipped to the image `hw` = (h, w)."""
    d = deltas * deltas.new_tensor(stds)
    dw, dh = d[:, 2].clamp(-WH_RATIO_CLIP, WH_RATIO_CLIP), d[:, 3].clamp(-WH_RATIO_CLIP, WH_RATIO_CLIP)
    pw, ph = rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]
    px, py = rois[:, 0] + 0.5 * pw, rois[:, 1] + 0.5 * ph
    gx, gy, gw, gh = px + pw * d[:, 0], py + ph * d[:, 1], pw * dw.exp(), ph * dh.exp()
    x1, x2 = (gx - 0.5 * gw).clamp(0, hw[1]), (gx + 0.5 * gw).clamp(0, hw[1])
    y1, y2 = (gy - 0.5 * gh).clamp(0, hw[0]), (gy + 0.5 * gh).clamp(0, hw[0])
    return torch.stack([x1, y1, x2, y2], 1)


def extract(feats, strides, per_image, size=7, finest_scale=56):
    """RoIAlign of every image's boxes (a list of `[R_i, 4]`) from the level mmdetection maps it to.

    feats: `[B, C, H_l, W_l]` per level; output `[sum R_i, C, size, size]`, rows in the order of `per_image`.
    """
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), float(i)), b], 1) for i, b in enumerate(per_image)])
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    lvl = torch.floor(torch.log2(scale / finest_scale + 1e-6)).clamp(0, len(strides) - 1).long()
    out = rois.new_zeros(len(rois), feats[0].shape[1], size, size)
    for level, (f, s) in enumerate(zip(feats, strides)):
        idx = torch.nonzero(lvl == level).squeeze(1)
        if idx.numel():
            out[idx] = roi_align(f, rois[idx], size, spatial_scale=1.0 / s, sampling_ratio=0, aligned=True)
    return out


class StageHead(nn.Module):
    """Shared2FC box head with class-agnostic regression: `[R, 256, 7, 7]` -> logits `[R, K + 1]`, deltas `[R, 4]`."""

    def __init__(self, num_classes, in_channels=256, size=7, width=1024):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * size * size, width)
        self.fc2 = nn.Linear(width, width)
        self.cls = nn.Linear(width, num_classes + 1)
        self.reg = nn.Linear(width, 4)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.reg.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.reg.bias)

    def forward(self, x):
        x = F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))
        return self.cls(x), self.reg(x)


class CascadeRoIHeads(nn.Module):
    """Three-stage cascade box head; see the module docstring for the formulas."""

    def __init__(self, num_classes=80, strides=(4, 8, 16, 32), num=512, pos_fraction=0.25, score_thr=0.05,
                 nms_thr=0.5, max_per_img=100):
        super().__init__()
        self.k = num_classes
        self.strides = strides
        self.stages = nn.ModuleList(StageHead(num_classes) for _ in STAGE_STDS)
        self.num, self.pos_fraction = num, pos_fraction
        self.score_thr, self.nms_thr, self.max_per_img = score_thr, nms_thr, max_per_img

    def sample(self, proposals, gt_boxes, gt_labels, thr):
        """One image: (rois `[S, 4]` positives first, labels `[S]` with K = background, matched GT boxes `[S, 4]`,
        is_gt `[S]` bool: the row is a GT box the sampler added)."""
        g = len(gt_boxes)
        labels = gt_labels.new_full((len(proposals),), self.k)
        matched = torch.zeros_like(proposals)
        if g:
            best, arg = box_iou(gt_boxes, proposals).max(0)
            pos = best >= thr
            labels[pos] = gt_labels[arg[pos]]
            matched = gt_boxes[arg]
        # the GT boxes as proposals, each assigned to itself (mmdetection's `add_gt_as_proposals`)
        priors = torch.cat([gt_boxes, proposals])
        labels = torch.cat([gt_labels, labels])
        matched = torch.cat([gt_boxes, matched])
        is_gt = torch.arange(len(priors), device=priors.device) < g
        pos_idx = torch.nonzero(labels < self.k).squeeze(1)
        neg_idx = torch.nonzero(labels == self.k).squeeze(1)
        n_pos = min(len(pos_idx), int(self.num * self.pos_fraction))
        pos_idx = pos_idx[torch.randperm(len(pos_idx), device=priors.device)[:n_pos]]
        n_neg = min(len(neg_idx), self.num - n_pos)
        neg_idx = neg_idx[torch.randperm(len(neg_idx), device=priors.device)[:n_neg]]
        keep = torch.cat([pos_idx, neg_idx])
        return priors[keep], labels[keep], matched[keep], is_gt[keep]

    def forward(self, features, proposals, image_shapes, targets=None):
        feats = [features[k] for k in list(features)[: len(self.strides)]]  # P2-P5 (not the pooled P6)
        if self.training:
            return [], self.losses(feats, proposals, image_shapes, targets)
        return self.predict(feats, proposals, image_shapes), {}

    def losses(self, feats, proposals, image_shapes, targets):
        losses = {}
        gts = [(t["boxes"], t["labels"] - 1) for t in targets]  # torchvision's 1..K -> mmdetection's 0..K-1
        for s, (head, stds, thr, w) in enumerate(zip(self.stages, STAGE_STDS, STAGE_IOUS, STAGE_WEIGHTS)):
            samples = [self.sample(p.detach(), b, lab, thr) for p, (b, lab) in zip(proposals, gts)]
            rois = [r for r, _, _, _ in samples]
            labels = torch.cat([lab for _, lab, _, _ in samples])
            matched = torch.cat([m for _, _, m, _ in samples])
            logits, deltas = head(extract(feats, self.strides, rois))
            pos = labels < self.k
            total = max(len(labels), 1)
            losses[f"s{s}.loss_cls"] = w * F.cross_entropy(logits, labels)
            if pos.any():
                target = encode(torch.cat(rois)[pos], matched[pos], stds)
                loss_bbox = F.smooth_l1_loss(deltas[pos], target, beta=1.0, reduction="sum") / total
            else:
                loss_bbox = deltas.sum() * 0
            losses[f"s{s}.loss_bbox"] = w * loss_bbox
            if s == len(self.stages) - 1:
                break
            with torch.no_grad():
                # background RoIs take their best foreground class (irrelevant to class-agnostic deltas, kept
                # for fidelity); refined boxes, clipped, without the GT boxes the sampler added
                _ = torch.where(labels == self.k, logits[:, : self.k].argmax(1), labels)
                per_image = deltas.split([len(r) for r in rois])
                proposals = [decode(r, d, stds, hw)[~is_gt]
                             for (r, _, _, is_gt), d, hw in zip(samples, per_image, image_shapes)]
        return losses

    @torch.no_grad()
    def predict(self, feats, proposals, image_shapes):
        rois = list(proposals)
        sizes = [len(r) for r in rois]
        stage_logits = []
        for s, (head, stds) in enumerate(zip(self.stages, STAGE_STDS)):
            logits, deltas = head(extract(feats, self.strides, rois))
            stage_logits.append(logits)
            per_image = deltas.split(sizes)
            if s < len(self.stages) - 1:
                rois = [decode(r, d, stds, hw) for r, d, hw in zip(rois, per_image, image_shapes)]
        scores = torch.softmax(sum(stage_logits) / len(stage_logits), 1).split(sizes)
        out = []
        for r, d, sc, hw in zip(rois, per_image, scores, image_shapes):
            boxes = decode(r, d, STAGE_STDS[-1], hw)
            sc = sc[:, : self.k]
            keep = torch.nonzero(sc > self.score_thr)
            ri, ci = keep[:, 0], keep[:, 1]
            b, v = boxes[ri], sc[ri, ci]
            kept = batched_nms(b, v, ci, self.nms_thr)[: self.max_per_img]
            out.append({"boxes": b[kept], "scores": v[kept], "labels": ci[kept] + 1})
        return out
