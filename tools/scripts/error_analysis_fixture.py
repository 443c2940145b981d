#!/usr/bin/env python3
"""Reference numbers of `attndet analyze errors`: the COCO error breakdown of mmdetection's
tools/analysis_tools/coco_error_analysis.py, computed with pycocotools.

    python3 tools/scripts/error_analysis_fixture.py \
        --ann ../shared/fixtures/coco/instances_val2014_100.json \
        --results ../shared/fixtures/coco/instances_val2014_fakebbox100_results.json \
        --iou-type bbox --out tools/tests/fixtures/error_analysis_bbox.json

The method (re-implemented here, not copied): for each category k,
  C75, C50, Loc: precision of the normal evaluation at IoU 0.75, 0.5 and 0.1 (maxDets 100);
  Sim: IoU 0.1, only k's detections, the other categories of k's supercategory turned into crowd (ignored)
       ground truth of category k;
  Oth: the same with every other category turned into crowd ground truth of k;
  BG:  1 where Oth's precision is > 0, else 0;  FN: 1.
Precision -1 (no ground truth) counts as 0. Recorded: the mean over the 101 recall thresholds of each of the
7 curves for each area range (all, small, medium, large), per category and over all categories ("allclass",
the mean over categories too), and the allclass curves for area all.
"""
import argparse
import contextlib
import copy
import io
import json

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

TYPES = ["C75", "C50", "Loc", "Sim", "Oth", "BG", "FN"]
AREAS = ["all", "small", "medium", "large"]


def evaluate(gt, dt, iou_type, iou_thrs, cat_ids=None):
    ev = COCOeval(gt, dt, iou_type)
    ev.params.iouThrs = np.array(iou_thrs)
    ev.params.maxDets = [100]
    if cat_ids is not None:
        ev.params.catIds = cat_ids
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"]  # [T, R, K, A, M]


def relabelled(coco_gt, cat_id, turn):
    """A copy of the ground truth where the annotations whose category is in `turn` become crowd of `cat_id`."""
    gt = copy.deepcopy(coco_gt)
    for ann in gt.dataset["annotations"]:
        if ann["category_id"] in turn:
            ann["ignore"] = 1
            ann["iscrowd"] = 1
            ann["category_id"] = cat_id
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ann", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--iou-type", default="bbox")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(args.ann)
        dt = gt.loadRes(args.results)
    cat_ids = sorted(gt.getCatIds())
    base = evaluate(gt, dt, args.iou_type, [0.75, 0.5, 0.1])
    _, r, k_n, a_n, _ = base.shape
    ps = np.zeros((7, r, k_n, a_n))
    ps[:3] = base[:, :, :, :, 0]
    cats = {c["id"]: c for c in gt.loadCats(cat_ids)}
    for k, cid in enumerate(cat_ids):
        # only k's detections (a filtered copy, as the tool does; an empty one is fine)
        dk = copy.deepcopy(dt)
        dk.dataset["annotations"] = [a for a in dt.dataset["annotations"] if a["category_id"] == cid]
        with contextlib.redirect_stdout(io.StringIO()):
            dk.createIndex()
        sup = cats[cid].get("supercategory")
        same_sup = [c for c in cat_ids if c != cid and sup is not None and cats[c].get("supercategory") == sup]
        others = [c for c in cat_ids if c != cid]
        for row, turn in ((3, same_sup), (4, others)):
            p = evaluate(relabelled(gt, cid, set(turn)), dk, args.iou_type, [0.1], [cid])[0, :, 0, :, 0]
            ps[row, :, k] = p
    ps[ps == -1] = 0
    ps[5] = ps[4] > 0
    ps[6] = 1.0
    out = {
        "ann": args.ann.split("/")[-1],
        "results": args.results.split("/")[-1],
        "iou_type": args.iou_type,
        "types": TYPES,
        "areas": AREAS,
        "categories": [
            {"id": cid, "name": cats[cid]["name"], "ap": ps[:, :, k, :].mean(axis=1).T.tolist()}
            for k, cid in enumerate(cat_ids)
        ],
        "allclass": {
            "ap": ps.mean(axis=(1, 2)).T.tolist(),
            "curves_all": ps[:, :, :, 0].mean(axis=2).tolist(),
        },
    }
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
