#!/usr/bin/env python3
"""COCO evaluation benchmark: pycocotools 2.0.11 vs faster-coco-eval vs `attndet eval`, side by side.

Generates COCO val2017-scale synthetic data (default: 5,000 images, 80 categories, ~35k GT, 500k bbox
detections; segm: 1,000 images, ~7k polygon GT, 100k compressed-RLE detections), then runs each tool end to
end as a user would (a fresh process: load GT + results, evaluate, accumulate, summarize), under
`/usr/bin/time -v` for the peak resident memory, checks that attndet's 12 stats are bit-identical to
pycocotools' (faster-coco-eval's largest difference is reported; it omits pycocotools' +eps in precision, so
it can differ by ~1e-16), and prints a markdown table (the README's performance section).

    cargo build --release -p attndet
    python3 bench/coco/bench_eval.py --attndet target/release/attndet [--workdir /tmp/attndet-bench]

Python needs numpy, pycocotools==2.0.11 and faster-coco-eval==1.8.0.
"""
import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.abspath(__file__)


# ----------------------------------------------------------------------------------------------- data
def gen_images(rng, n):
    ids = np.sort(rng.choice(np.arange(1, 600000), size=n, replace=False))
    sizes = [(640, 480), (480, 640), (640, 427), (427, 640), (640, 512), (500, 375)]
    images = []
    for i in ids:
        w, h = sizes[rng.integers(len(sizes))]
        images.append({"id": int(i), "width": w, "height": h, "file_name": f"{int(i):012d}.jpg"})
    return images


def gen_categories():
    # COCO's 80 category ids are sparse in 1..90.
    skip = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    ids = [i for i in range(1, 91) if i not in skip]
    return [{"id": i, "name": f"class{i}", "supercategory": "thing"} for i in ids]


def rand_boxes(rng, n, w, h):
    bw = np.exp(rng.uniform(np.log(4), np.log(w * 0.9), n))
    bh = np.clip(bw * np.exp(rng.normal(0, 0.5, n)), 2, h * 0.95)
    x = rng.uniform(0, 1, n) * (w - bw)
    y = rng.uniform(0, 1, n) * (h - bh)
    return np.stack([x, y, bw, bh], 1)


def polygon_in_box(rng, box, k):
    x, y, w, h = box
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = rng.uniform(0.6, 1.0, k)
    px = x + w / 2 + np.cos(ang) * rad * w / 2
    py = y + h / 2 + np.sin(ang) * rad * h / 2
    return np.round(np.stack([px, py], 1).reshape(-1), 2).tolist()


def f32(v):
    """What detectors write: float32 values converted to Python floats (long decimal expansions)."""
    return [float(np.float32(x)) for x in v]


def generate(workdir, n_images, dets_per_image, seed, segm):
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    images = gen_images(rng, n_images)
    cats = gen_categories()
    cat_ids = np.array([c["id"] for c in cats])
    cat_p = rng.dirichlet(np.ones(len(cats)) * 0.7)
    anns, dets = [], []
    for img in images:
        w, h = img["width"], img["height"]
        n = int(min(rng.poisson(7), 40))
        boxes = rand_boxes(rng, n, w, h)
        cs = rng.choice(cat_ids, size=n, p=cat_p)
        polys = []
        for b, c in zip(boxes, cs):
            crowd = int(rng.random() < 0.01)
            ann = {"id": len(anns) + 1, "image_id": img["id"], "category_id": int(c),
                   "bbox": np.round(b, 2).tolist(), "iscrowd": crowd}
            if segm:
                poly = polygon_in_box(rng, b, int(rng.integers(8, 17)))
                polys.append(poly)
                if crowd:
                    rle = mask_utils.frPyObjects([poly], h, w)[0]
                    ann["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode()}
                    ann["area"] = float(mask_utils.area(rle))
                else:
                    ann["segmentation"] = [poly]
                    ann["area"] = float(mask_utils.area(mask_utils.frPyObjects([poly], h, w)[0]))
            else:
                ann["area"] = round(float(b[2] * b[3] * rng.uniform(0.45, 0.85)), 2)
            anns.append(ann)
        # Detections: noisy copies of the GT (mostly the right class) plus background boxes.
        n_true = min(dets_per_image, int(n * rng.uniform(1.0, 3.0)))
        src = rng.integers(0, max(n, 1), n_true) if n else np.zeros(0, dtype=int)
        jit = boxes[src] + rng.normal(0, 0.08, (n_true, 4)) * np.repeat(boxes[src][:, 2:], 2, 1) if n else np.zeros((0, 4))
        bg = rand_boxes(rng, dets_per_image - len(jit), w, h)
        dboxes = np.concatenate([jit, bg]) if len(jit) else bg
        dboxes[:, 2:] = np.maximum(dboxes[:, 2:], 1)
        dcats = np.concatenate([np.where(rng.random(len(jit)) < 0.9, cs[src] if n else 0, rng.choice(cat_ids, len(jit))),
                                rng.choice(cat_ids, len(bg), p=cat_p)]) if len(jit) else rng.choice(cat_ids, len(bg), p=cat_p)
        scores = np.concatenate([rng.beta(5, 2, len(jit)), rng.beta(1.2, 5, len(bg))])
        for j, (b, c, s) in enumerate(zip(dboxes, dcats, scores)):
            d = {"image_id": img["id"], "category_id": int(c), "bbox": f32(b), "score": float(np.float32(s))}
            if segm:
                if j < len(jit) and n:
                    base = np.array(polys[src[j]]).reshape(-1, 2)
                    shift = (b[:2] - boxes[src[j]][:2])
                    poly = (base + shift).reshape(-1).tolist()
                else:
                    poly = polygon_in_box(rng, b, 10)
                rle = mask_utils.frPyObjects([poly], h, w)[0]
                d["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode()}
            dets.append(d)
    gt = {"info": {"description": "attndet benchmark (synthetic)"}, "licenses": [], "images": images,
          "annotations": anns, "categories": cats}
    tag = "segm" if segm else "bbox"
    gt_path = os.path.join(workdir, f"gt_{tag}.json")
    dt_path = os.path.join(workdir, f"dt_{tag}.json")
    with open(gt_path, "w") as f:
        json.dump(gt, f)
    with open(dt_path, "w") as f:
        json.dump(dets, f)
    return gt_path, dt_path, len(images), len(anns), len(dets)


# ----------------------------------------------------------------------------------------------- runners
def run_python_tool(tool, gt_path, dt_path, iou_type, out_path):
    """Executed in a fresh process (under /usr/bin/time): the whole pipeline a user runs."""
    t0 = time.perf_counter()
    if tool == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Eval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Eval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(dt_path)
        t1 = time.perf_counter()
        ev = Eval(gt, dt, iou_type)
        ev.evaluate()
        t2 = time.perf_counter()
        ev.accumulate()
        t3 = time.perf_counter()
        ev.summarize()
    stats = [float(s) for s in ev.stats[:12]]
    with open(out_path, "w") as f:
        json.dump({"stats": stats, "load": t1 - t0, "evaluate": t2 - t1, "accumulate": t3 - t2}, f)


def timed(cmd):
    """Run `cmd` under /usr/bin/time -v; return (wall seconds, peak RSS MiB, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return wall, int(m.group(1)) / 1024 if m else float("nan"), p.stdout


def bench(args, gt_path, dt_path, iou_type):
    rows = {}
    for tool in ["pycocotools", "faster-coco-eval", "attndet"]:
        best = None
        for _ in range(args.repeat):
            if tool == "attndet":
                cmd = [args.attndet, "eval", "--ann", gt_path, "--results", dt_path, "--iou-type", iou_type, "--json"]
                wall, rss, out = timed(cmd)
                stats = json.loads(out)["stats"]
            else:
                out_path = os.path.join(args.workdir, f"out_{tool}_{iou_type}.json")
                wall, rss, _ = timed([sys.executable, HERE, "_run", tool, gt_path, dt_path, iou_type, out_path])
                with open(out_path) as f:
                    stats = json.load(f)["stats"]
            if best is None or wall < best[0]:
                best = (wall, rss, stats)
            print(f"  {iou_type} {tool:17s} {wall:7.2f} s  peak {rss:7.0f} MiB  AP {stats[0]:.4f}", file=sys.stderr)
        rows[tool] = best
    return rows


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        run_python_tool(*sys.argv[2:7])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attndet", default="target/release/attndet", help="the attndet binary (release build)")
    ap.add_argument("--workdir", default="/tmp/attndet-bench", help="where the generated JSON files go")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets-per-image", type=int, default=100)
    ap.add_argument("--segm-images", type=int, default=1000, help="0 skips the segm benchmark")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="reuse data generated earlier with the same settings")
    ap.add_argument("--generate-only", action="store_true", help="write the data and stop")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    cpus = os.cpu_count()
    if args.generate_only:
        args.reuse = True
    report = []
    for iou_type, n_img in [("bbox", args.images), ("segm", args.segm_images)]:
        if n_img == 0:
            continue
        t0 = time.perf_counter()
        meta_path = os.path.join(args.workdir, f"meta_{iou_type}.json")
        key = [n_img, args.dets_per_image, args.seed]
        meta = json.load(open(meta_path)) if args.reuse and os.path.exists(meta_path) else None
        if meta and meta["key"] == key:
            gt_path, dt_path, ni, ng, nd = meta["value"]
        else:
            gt_path, dt_path, ni, ng, nd = generate(args.workdir, n_img, args.dets_per_image, args.seed, iou_type == "segm")
            with open(meta_path, "w") as f:
                json.dump({"key": key, "value": [gt_path, dt_path, ni, ng, nd]}, f)
        print(f"{iou_type}: generated {ni} images, {ng} GT, {nd} detections in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
        if args.generate_only:
            continue
        rows = bench(args, gt_path, dt_path, iou_type)
        # attndet must be bit-identical to pycocotools; faster-coco-eval is not (it omits pycocotools' +eps in
        # the precision denominator), so its largest difference is reported.
        identical = rows["attndet"][2] == rows["pycocotools"][2]
        report.append((iou_type, ni, ng, nd, rows, identical))
    print(f"\nMachine: {cpus} CPU cores. Wall time end to end (fresh process: load, evaluate, accumulate, summarize).\n")
    print("| IoU | images / GT / detections | tool | time (s) | speed-up vs pycocotools | peak memory (MiB) | stats vs pycocotools |")
    print("|---|---|---|---|---|---|---|")
    for iou_type, ni, ng, nd, rows, identical in report:
        py = rows["pycocotools"][0]
        for tool, (wall, rss, _) in rows.items():
            diff = max(abs(x - y) for x, y in zip(rows[tool][2], rows["pycocotools"][2]))
            same = "bit-identical" if diff == 0 else f"max abs diff {diff:.1e}"
            print(f"| {iou_type} | {ni} / {ng} / {nd} | {tool} | {wall:.2f} | {py / wall:.1f}x | {rss:.0f} | {same} |")
    for iou_type, *_, rows, identical in report:
        a, f = rows["attndet"][0], rows["faster-coco-eval"][0]
        print(f"\n{iou_type}: attndet is {rows['pycocotools'][0] / a:.1f}x pycocotools and {f / a:.1f}x faster-coco-eval;"
              f" attndet's 12 stats bit-identical to pycocotools: {identical}")
    # segm against bbox evaluation of the same results (the segm detections carry their box): the cost of mask
    # IoUs over box IoUs, attndet only
    for iou_type, ni, ng, nd, rows, identical in report:
        if iou_type != "segm":
            continue
        dt_path = os.path.join(args.workdir, "dt_segm.json")
        gt_path = os.path.join(args.workdir, "gt_segm.json")
        bbox = min(timed([args.attndet, "eval", "--ann", gt_path, "--results", dt_path, "--iou-type", "bbox",
                          "--json"])[0] for _ in range(args.repeat))
        segm = rows["attndet"][0]
        print(f"\nsame {nd} results: attndet segm {segm:.2f} s, bbox {bbox:.2f} s, segm / bbox {segm / bbox:.2f}x")
    if not all(r[-1] for r in report):
        sys.exit("attndet's stats differ from pycocotools")


if __name__ == "__main__":
    main()
