#!/usr/bin/env python3
"""Record pycocotools 2.0.11 outputs on many small random cases, as fixtures for coco/tests/parity.rs.

Run from the repository root (needs pycocotools==2.0.11, numpy):
    python3 coco/scripts/gen_parity.py
Writes coco/tests/fixtures/parity_eval.json (evaluator cases) and coco/tests/fixtures/parity_mask.json (mask API).

The cases aim at the quirks: crowd GT, RLE (compressed and not) and polygon GT, tied scores, more than 100
detections on an image, GT areas exactly 1024 and 9216, IoUs exactly on thresholds (0.5, 0.75, 0.9), GT id 0,
categories and images without GT, detections of unknown categories, segm results that carry a bbox.
"""
import contextlib
import copy
import io
import json
import random

from importlib.metadata import version

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

PYCOCOTOOLS = version("pycocotools")
assert PYCOCOTOOLS == "2.0.11", PYCOCOTOOLS


def rand_box(rng, w, h):
    bw = rng.choice([rng.randint(1, max(1, w // 2)), rng.randint(1, 40) / 2])
    bh = rng.choice([rng.randint(1, max(1, h // 2)), rng.randint(1, 40) / 2])
    x = rng.randint(0, max(0, int(w - bw)))
    y = rng.randint(0, max(0, int(h - bh)))
    return [float(x), float(y), float(bw), float(bh)]


def rand_polygon(rng, box):
    x, y, w, h = box
    n = rng.randint(3, 7)
    pts = []
    for _ in range(n):
        pts += [round(x + rng.random() * w, 1), round(y + rng.random() * h, 1)]
    return pts


def rand_mask(rng, h, w, box):
    m = np.zeros((h, w), dtype=np.uint8, order="F")
    x, y, bw, bh = [int(v) for v in box]
    m[y : y + max(1, bh), x : x + max(1, bw)] = 1
    # punch random holes so masks are not plain boxes
    for _ in range(rng.randint(0, 3)):
        yy, xx = rng.randrange(h), rng.randrange(w)
        m[yy : yy + 3, xx : xx + 3] = rng.randint(0, 1)
    return m


def jitter(rng, box):
    """A detection box near a GT box: sometimes with IoU exactly 0.5, 0.75 or 0.9."""
    x, y, w, h = box
    r = rng.random()
    if r < 0.1:
        return [x, y, w * 0.5, h]  # IoU 0.5 exactly
    if r < 0.2:
        return [x, y, w * 0.75, h]  # IoU 0.75 exactly
    if r < 0.25:
        return [x, y, w * 0.9, h]  # IoU 0.9 (0.8999999999999999 threshold passes it)
    if r < 0.3:
        return [x, y, w, h]
    s = max(w, h) * 0.12
    return [round(x + rng.uniform(-s, s), 1), round(y + rng.uniform(-s, s), 1),
            round(max(0.5, w + rng.uniform(-s, s)), 1), round(max(0.5, h + rng.uniform(-s, s)), 1)]


def make_case(rng, iou_type):
    segm = iou_type == "segm"
    n_img = rng.randint(1, 4)
    img_ids = rng.sample(range(0, 12), n_img)
    cat_ids = sorted(rng.sample(range(1, 9), rng.randint(1, 3)))
    images = []
    for i in img_ids:
        if segm:
            w, h = rng.randint(20, 50), rng.randint(20, 50)
        else:
            w, h = rng.randint(60, 200), rng.randint(60, 200)
        images.append({"id": i, "width": w, "height": h})
    first_ann_id = rng.choice([0, 1, 1])
    anns = []
    for img in images:
        if rng.random() < 0.2:
            continue  # an image without GT
        for _ in range(rng.randint(0, 6)):
            box = rand_box(rng, img["width"], img["height"])
            crowd = 1 if rng.random() < 0.15 else 0
            ann = {"id": first_ann_id + len(anns), "image_id": img["id"], "category_id": rng.choice(cat_ids),
                   "bbox": box, "iscrowd": crowd}
            if segm:
                h, w = img["height"], img["width"]
                kind = rng.random()
                if crowd or kind < 0.2:
                    m = rand_mask(rng, h, w, box)
                    rle = mask_utils.encode(m)
                    if crowd or kind < 0.1:
                        # uncompressed RLE (as COCO stores crowd regions)
                        counts = []
                        flat = m.flatten(order="F")
                        cur, run = 0, 0
                        for v in flat:
                            if v != cur:
                                counts.append(run)
                                run, cur = 0, v
                            run += 1
                        counts.append(run)
                        ann["segmentation"] = {"size": [h, w], "counts": counts}
                    else:
                        ann["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode()}
                    ann["area"] = float(mask_utils.area(rle))
                else:
                    polys = [rand_polygon(rng, box) for _ in range(rng.choice([1, 1, 2]))]
                    ann["segmentation"] = polys
                    rles = mask_utils.frPyObjects(polys, h, w)
                    ann["area"] = float(mask_utils.area(mask_utils.merge(rles)))
                if rng.random() < 0.1:
                    ann["area"] = rng.choice([1024.0, 9216.0])
            else:
                r = rng.random()
                ann["area"] = rng.choice([1024.0, 9216.0]) if r < 0.25 else round(box[2] * box[3] * rng.uniform(0.5, 1.0), 2)
            anns.append(ann)
    gt = {"images": images, "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids], "annotations": anns}

    dets = []
    scores = [round(rng.random(), rng.choice([1, 2])) for _ in range(8)]  # few distinct values: ties
    many = rng.random() < 0.1
    for img in images:
        h, w = img["height"], img["width"]
        gts = [a for a in anns if a["image_id"] == img["id"]]
        n = rng.randint(101, 112) if many and img is images[0] else rng.randint(0, 8)
        for _ in range(n):
            if gts and rng.random() < 0.7:
                g = rng.choice(gts)
                box = jitter(rng, g["bbox"])
                cat = g["category_id"] if rng.random() < 0.85 else rng.choice(cat_ids + [99])
            else:
                box = rand_box(rng, w, h)
                cat = rng.choice(cat_ids)
            d = {"image_id": img["id"], "category_id": cat, "score": rng.choice(scores)}
            if segm:
                m = rand_mask(rng, h, w, [max(0.0, min(v, lim - 1)) for v, lim in zip(box, [w, h, w, h])])
                rle = mask_utils.encode(m)
                d["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode()}
            else:
                d["bbox"] = box
            dets.append(d)
    if not dets:
        img = images[0]
        d = {"image_id": img["id"], "category_id": cat_ids[0], "score": 0.5}
        if segm:
            m = rand_mask(rng, img["height"], img["width"], [0, 0, 5, 5])
            d["segmentation"] = {"size": [img["height"], img["width"]],
                                 "counts": mask_utils.encode(m)["counts"].decode()}
        else:
            d["bbox"] = [0.0, 0.0, 5.0, 5.0]
        dets.append(d)
    if segm and rng.random() < 0.2:
        # Quirk: segm results carrying a bbox take loadRes' bbox branch (area = box area).
        for d in dets:
            d["bbox"] = mask_utils.toBbox(d["segmentation"] | {"counts": d["segmentation"]["counts"].encode()}).tolist()
    return gt, dets


def run_eval(gt, dets, iou_type):
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        dt = coco.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]
    per_cat = []
    for k in range(prec.shape[2]):
        p = prec[:, :, k, 0, -1]
        p = p[p > -1]
        per_cat.append(float(np.mean(p)) if p.size else None)
    return {"stats": [float(s) for s in ev.stats],
            # recall[t, k, area all, maxDets 100]: the full recall curve end points per category
            "recall": [float(v) for v in ev.eval["recall"][:, :, 0, -1].flatten()],
            "per_category_ap": per_cat}


def eval_cases(rng):
    cases = []
    for i in range(120):
        iou_type = "segm" if i % 3 == 2 else "bbox"
        gt, dets = make_case(rng, iou_type)
        cases.append({"iou_type": iou_type, "gt": gt, "results": dets, "expected": run_eval(gt, dets, iou_type)})
    return cases


def mask_cases(rng):
    out = {"encode": [], "merge": [], "iou": [], "poly": [], "bbox": [], "bbiou": []}
    for _ in range(40):
        h, w = rng.randint(1, 12), rng.randint(1, 12)
        m = np.asfortranarray((np.array([rng.random() for _ in range(h * w)]).reshape(h, w) < rng.random()).astype(np.uint8))
        rle = mask_utils.encode(m)
        out["encode"].append({"h": h, "w": w, "mask_col_major": [int(v) for v in m.flatten(order="F")],
                              "string": rle["counts"].decode(), "area": int(mask_utils.area(rle)),
                              "bbox": mask_utils.toBbox(rle).tolist()})
    for _ in range(30):
        h, w = rng.randint(2, 10), rng.randint(2, 10)
        rles = []
        for _ in range(rng.randint(2, 4)):
            m = np.asfortranarray((np.random.default_rng(rng.randrange(1 << 30)).random((h, w)) < 0.5).astype(np.uint8))
            rles.append(mask_utils.encode(m))
        out["merge"].append({"h": h, "w": w, "strings": [r["counts"].decode() for r in rles],
                             "union": mask_utils.merge(rles, intersect=False)["counts"].decode(),
                             "intersection": mask_utils.merge(rles, intersect=True)["counts"].decode()})
        crowd = [rng.randint(0, 1) for _ in rles[1:]]
        out["iou"].append({"h": h, "w": w, "dt": [rles[0]["counts"].decode()],
                           "gt": [r["counts"].decode() for r in rles[1:]], "iscrowd": crowd,
                           "iou": mask_utils.iou([rles[0]], rles[1:], crowd).tolist()})
    for _ in range(60):
        h, w = rng.randint(5, 40), rng.randint(5, 40)
        n = rng.randint(3, 8)
        poly = [round(rng.uniform(-3, w + 3), rng.choice([0, 1, 2])) for _ in range(2 * n)]
        if rng.random() < 0.2:
            poly.append(1.5)  # odd trailing coordinate: dropped
        rle = mask_utils.frPyObjects([poly], h, w)[0]
        out["poly"].append({"h": h, "w": w, "poly": poly, "string": rle["counts"].decode(), "area": int(mask_utils.area(rle))})
    for _ in range(30):
        h, w = rng.randint(5, 40), rng.randint(5, 40)
        bb = [round(rng.uniform(-2, w), 1), round(rng.uniform(-2, h), 1), round(rng.uniform(0, w), 1), round(rng.uniform(0, h), 1)]
        rle = mask_utils.frPyObjects(np.array([bb], dtype=np.float64), h, w)[0]
        out["bbox"].append({"h": h, "w": w, "bbox": bb, "string": rle["counts"].decode()})
    for _ in range(30):
        dt = [[round(rng.uniform(0, 20), 1) for _ in range(4)] for _ in range(rng.randint(1, 3))]
        gt = [[round(rng.uniform(0, 20), 1) for _ in range(4)] for _ in range(rng.randint(1, 3))]
        crowd = [rng.randint(0, 1) for _ in gt]
        out["bbiou"].append({"dt": dt, "gt": gt, "iscrowd": crowd,
                             "iou": mask_utils.iou(np.array(dt), np.array(gt), crowd).tolist()})
    return out


def main():
    rng = random.Random(20261123)
    with open("coco/tests/fixtures/parity_eval.json", "w") as f:
        json.dump({"generator": "coco/scripts/gen_parity.py", "pycocotools": PYCOCOTOOLS,
                   "cases": eval_cases(rng)}, f, separators=(",", ":"))
    with open("coco/tests/fixtures/parity_mask.json", "w") as f:
        json.dump({"generator": "coco/scripts/gen_parity.py", "pycocotools": PYCOCOTOOLS,
                   **mask_cases(rng)}, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
