#!/usr/bin/env python3
"""pycocotools 2.0.11's class-agnostic proposal recall (useCats=0, maxDets 100/300/1000) on the shared fixture.

    python3 coco/scripts/proposal_recall.py ../shared/fixtures/coco
Prints AR@100, AR@300, AR@1000 (recall averaged over IoU thresholds, area all); coco/tests/real_fixture.rs
asserts these values.
"""
import contextlib
import io
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

fixtures = sys.argv[1] if len(sys.argv) > 1 else "../shared/fixtures/coco"
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(f"{fixtures}/instances_val2014_100.json")
    dt = gt.loadRes(f"{fixtures}/instances_val2014_fakebbox100_results.json")
    ev = COCOeval(gt, dt, "bbox")
    ev.params.useCats = 0
    ev.params.maxDets = [100, 300, 1000]
    ev.evaluate()
    ev.accumulate()
recall = ev.eval["recall"]  # [T, K, A, M]
for m, max_det in enumerate(ev.params.maxDets):
    s = recall[:, :, 0, m]
    print(f"AR@{max_det} = {np.mean(s[s > -1])!r}")
