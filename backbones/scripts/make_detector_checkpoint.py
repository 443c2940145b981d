#!/usr/bin/env python3
"""A tiny mmdetection-style detector checkpoint, for backbones/tests/detector_checkpoint.rs.

Layout of a checkpoint saved by mmdetection's runner: {"meta": {...}, "state_dict": {...}} whose keys are the
detector's modules: `backbone.*` (here a toy backbone: conv1, bn1, and a classifier `fc` that detection
checkpoints lack, so it is absent), `neck.*`, `rpn_head.*`. Tensor `k` holds `(i + 1) / 100 + seed(k)` for
element `i`, with seed = len(key) (the Rust test computes the same).

Usage: python3 backbones/scripts/make_detector_checkpoint.py backbones/tests/fixtures/tiny_detector.pth
"""
import sys

import torch


def value(key, shape):
    n = 1
    for d in shape:
        n *= d
    return (torch.arange(n, dtype=torch.float32) + 1) / 100 + len(key)


shapes = {
    "backbone.conv1.weight": [4, 3, 3, 3],
    "backbone.bn1.weight": [4],
    "backbone.bn1.bias": [4],
    "backbone.bn1.running_mean": [4],
    "backbone.bn1.running_var": [4],
    "neck.lateral_convs.0.conv.weight": [2, 4, 1, 1],
    "rpn_head.rpn_cls.weight": [3, 2, 1, 1],
}
state = {k: value(k, s).reshape(s) for k, s in shapes.items()}
state["backbone.bn1.num_batches_tracked"] = torch.tensor(7)
torch.save({"meta": {"epoch": 12, "iter": 1000, "mmdet_version": "2.25.0"}, "state_dict": state}, sys.argv[1])
