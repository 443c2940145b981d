#!/usr/bin/env python3
"""RetinaNet, Faster R-CNN, Mask R-CNN and Cascade R-CNN R50-FPN speed, attndet against torch, side by side.

    python3 bench/retinanet/bench.py [--detector retinanet|faster_rcnn|mask_rcnn|cascade_rcnn]
        [--attndet target/release/attndet] [--threads 2] [--device cpu|cuda]

Faster R-CNN: mmdetection's config on our side (RPN 2000/1000 proposals in training, 512 sampled RoIs, 1000
test proposals), torchvision's `FasterRCNN` with the same backbone, FPN P2-P6 and its defaults (2000/2000
training proposals per image, 512 RoIs, 1000 test proposals) on theirs.

Mask R-CNN: the same plus the mask branch on both sides (14x14 RoIAlign, 4 convs, deconv, 28x28 logits); the
training images carry polygon masks. For inference the score threshold is 0 on both sides, so that each image
has 100 detections whose masks are pasted into the 800x1216 image and encoded as COCO RLE (attndet in `test`;
torchvision's `paste_masks_in_image` inside the model, then pycocotools' `encode`, as its COCO evaluation does).

Cascade R-CNN (`configs/cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.json` on our side): torchvision has none, so
the torch side is a `GeneralizedRCNN` of torchvision parts with the cascade RoI head of `torch_cascade.py` (our
own torch code from mmdetection's formulas: three stages of RoIAlign 7x7 + 2 fc 1024 + class-agnostic deltas,
stds 0.1/0.2, 0.05/0.1, 0.033/0.067, MaxIoU at 0.5/0.6/0.7, 512 RoIs a quarter positive with the GT added, CE
+ SmoothL1 beta 1 weighted 1/0.5/0.25, refinement without gradient; at test the softmax of the mean of the three
stages' logits, as mmdetection's `_refine_roi` and attndet do, the last stage's boxes, score 0.05, NMS 0.5, 100
per image). Matched to the attndet config: ResNet-50 with stem + stage 1 frozen and `norm_eval` (BatchNorm
layers in eval mode, their affine trainable in stages 2-4, as mmdetection's `requires_grad=True`; not
torchvision's FrozenBatchNorm), FPN P2-P5 + max-pooled P6, RPN with 3 anchors of size 8 x stride, MaxIoU
0.7/0.3, 256 anchors half positive, SmoothL1 beta 1/9, per-level top 2000 -> NMS 0.7 -> 2000 proposals per
image in training and 1000 -> 1000 at test; images 2 x 512x512 and 800x1216 kept at their size. Not matched:
torchvision's RPN does not drop anchors crossing the image border from its targets (`allowed_border` 0 in the
config) and rounds its anchors to integers, a negligible part of the time either way.

Measures (median over the timed iterations, after warm-up):
  train: one SGD iteration (forward, losses, backward, step) on a batch of 2 x 3 x 512 x 512 images with
         3 boxes each, mmdetection's RetinaNet settings (frozen stem + stage 1, norm_eval, 80 classes);
  infer: one forward + post-processing of a 3 x 800 x 1216 image (score_thr 0.05, NMS 0.5, 100 dets).
attndet runs through its CLI (`attndet train` logs the time of every iteration in log.jsonl; `attndet test`
reports its wall time), on a COCO-format dataset this script writes to a temp dir. torchvision builds the same
architecture (ResNet-50 with FrozenBatchNorm, layers 2-4 trainable, FPN P3-P7 from C5, 9 anchors, 4-conv heads).
Prints a table and one JSON line with the ratios (attndet time / torchvision time; for cascade_rcnn the
"torchvision" entries are the torch implementation's).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "retinanet": os.path.join(ROOT, "configs/retinanet/retinanet_r50_fpn_1x_coco.json"),
    "faster_rcnn": os.path.join(ROOT, "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.json"),
    "mask_rcnn": os.path.join(ROOT, "configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.json"),
    "cascade_rcnn": os.path.join(ROOT, "configs/cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.json"),
}
CONFIG = CONFIGS["retinanet"]


def octagon(x, y, bw, bh):
    """The octagon inscribed in box [x, y, bw, bh], as a COCO polygon."""
    cx, cy, rx, ry = x + bw / 2, y + bh / 2, bw / 2, bh / 2
    return [[v for k in range(8) for v in (cx + rx * np.cos(k * np.pi / 4), cy + ry * np.sin(k * np.pi / 4))]]


def write_dataset(root, name, n, w, h, rng):
    """n random images of w x h with 3 boxes (and octagon masks) each, as COCO JSON + PNGs under root/name."""
    os.makedirs(os.path.join(root, name), exist_ok=True)
    images, anns = [], []
    for i in range(n):
        arr = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        fname = f"{i}.png"
        Image.fromarray(arr).save(os.path.join(root, name, fname))
        images.append({"id": i + 1, "width": w, "height": h, "file_name": fname})
        for j in range(3):
            x, y = float(rng.integers(0, w // 2)), float(rng.integers(0, h // 2))
            bw, bh = float(rng.integers(32, w // 3)), float(rng.integers(32, h // 3))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": j + 1, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": 0, "segmentation": octagon(x, y, bw, bh)})
    cats = [{"id": k + 1, "name": f"c{k + 1}"} for k in range(80)]
    path = os.path.join(root, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    return path


def attndet_overrides(root, train_name, val_name, side):
    return [
        f'data.data_root="{root}"',
        f"data.train.ann_file={train_name}.json", f"data.train.img_dir={train_name}",
        f"data.val.ann_file={val_name}.json", f"data.val.img_dir={val_name}",
        "data.batch_size=2", "data.num_workers=1", "data.pipeline.flip_prob=0",
        f"data.pipeline.img_scale={side}",
        "evaluation.interval=0", "log_config.interval=1", "runner.max_epochs=1",
    ]


def bench_attndet(binary, root, device, train_iters, detector):
    # train: train_iters iterations of batch 2 at 512 x 512 (one epoch), times from log.jsonl
    work = os.path.join(root, "work")
    args = [binary, "train", CONFIG, "--device", device, "--work-dir", work, "--quiet", "--cfg-options",
            *attndet_overrides(root, "train512", "val1216", "[512,512]")]
    subprocess.run(args, check=True)
    times = []
    with open(os.path.join(work, "log.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec["mode"] == "train":
                times.append(rec["time"] - rec["data_time"])
    train_s = statistics.median(times[1:]) if len(times) > 1 else times[0]
    # infer: `attndet test` over the val images (800 x 1216, kept as is by the (1333, 800) rescale), batch 1
    args = [binary, "test", CONFIG, os.path.join(work, "epoch_1"), "--device", device, "--json", "--cfg-options",
            *attndet_overrides(root, "train512", "val1216", "[1333,800]"), "data.batch_size=1"]
    if detector == "mask_rcnn":
        args += ["model.test_cfg.rcnn.score_thr=0", "--eval", "bbox", "segm"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    res = json.loads(out)
    infer_s = res["seconds"] / res["images"]
    return train_s, infer_s, times


def cascade_rcnn(backbone):
    """Cascade R-CNN R50-FPN in torch: torchvision's transform, RPN and `backbone` with our cascade RoI head."""
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_cascade import CascadeRoIHeads

    anchors = AnchorGenerator(tuple((8 * s,) for s in (4, 8, 16, 32, 64)), ((0.5, 1.0, 2.0),) * 5)
    rpn = RegionProposalNetwork(anchors, RPNHead(256, 3), fg_iou_thresh=0.7, bg_iou_thresh=0.3,
                                batch_size_per_image=256, positive_fraction=0.5,
                                pre_nms_top_n={"training": 2000, "testing": 1000},
                                post_nms_top_n={"training": 2000, "testing": 1000}, nms_thresh=0.7)
    transform = GeneralizedRCNNTransform(512, 1333, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    return GeneralizedRCNN(backbone, rpn, CascadeRoIHeads(num_classes=80), transform)


def bench_torchvision(threads, device, train_iters, infer_iters, detector="retinanet"):
    import torch
    import torchvision
    from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    norm_eval = detector == "cascade_rcnn"
    backbone = torchvision.models.resnet50(weights=None,
                                           norm_layer=torch.nn.BatchNorm2d if norm_eval else FrozenBatchNorm2d)
    # images are given at their final size: no resize inside the model (min_size/max_size keep 512 and 800x1216)
    if detector == "cascade_rcnn":
        model = cascade_rcnn(_resnet_fpn_extractor(backbone, 3)).to(device)
    elif detector in ("faster_rcnn", "mask_rcnn"):
        backbone = _resnet_fpn_extractor(backbone, 3)  # P2-P5 + max-pooled P6
        if detector == "mask_rcnn":
            model = MaskRCNN(backbone, num_classes=81, min_size=512, max_size=1333, box_score_thresh=0.0).to(device)
        else:
            model = FasterRCNN(backbone, num_classes=81, min_size=512, max_size=1333).to(device)
    else:
        backbone = _resnet_fpn_extractor(backbone, 3, returned_layers=[2, 3, 4],
                                         extra_blocks=LastLevelP6P7(2048, 256))
        model = RetinaNet(backbone, num_classes=80, min_size=512, max_size=1333).to(device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                          weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, 512, 512, generator=g).to(device) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10., 20., 200., 220.], [100., 50., 300., 400.], [300., 300., 500., 480.]],
                                      device=device), "labels": torch.tensor([1, 2, 3], device=device)} for _ in range(2)]
    if detector == "mask_rcnn":
        import pycocotools.mask as mask_util  # imported before timing

        for t in targets:
            m = torch.zeros(3, 512, 512, dtype=torch.uint8)
            for k, (x1, y1, x2, y2) in enumerate(t["boxes"].tolist()):
                m[k, int(y1):int(y2), int(x1):int(x2)] = 1
            t["masks"] = m.to(device)
    model.train()
    if norm_eval:  # mmdetection's norm_eval: running statistics, never updated
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    times = []
    for _ in range(train_iters):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        losses = model(imgs, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    train_s = statistics.median(times[1:])
    model.eval()
    model.transform.min_size = (800,)
    img = torch.rand(3, 800, 1216, generator=g).to(device)
    itimes = []
    with torch.no_grad():
        for _ in range(infer_iters):
            t = time.perf_counter()
            out = model([img])
            if device == "cuda":
                torch.cuda.synchronize()
            if detector == "mask_rcnn":
                bits = (out[0]["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
                mask_util.encode(np.asfortranarray(bits.transpose(1, 2, 0)))
            itimes.append(time.perf_counter() - t)
    infer_s = statistics.median(itimes[1:])
    return train_s, infer_s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", choices=sorted(CONFIGS), default="retinanet")
    ap.add_argument("--attndet", default=os.path.join(ROOT, "target/release/attndet"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train-iters", type=int, default=4)
    ap.add_argument("--infer-images", type=int, default=3)
    a = ap.parse_args()
    global CONFIG
    CONFIG = CONFIGS[a.detector]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        write_dataset(root, "train512", 2 * a.train_iters, 512, 512, rng)
        write_dataset(root, "val1216", a.infer_images, 1216, 800, rng)
        env_threads = str(a.threads)
        os.environ["RAYON_NUM_THREADS"] = env_threads
        ours_train, ours_infer, ours_times = bench_attndet(a.attndet, root, "cuda:0" if a.device == "cuda" else "cpu",
                                                           a.train_iters, a.detector)
    tv_train, tv_infer = bench_torchvision(a.threads, a.device, a.train_iters, a.infer_images + 1, a.detector)
    other = "torch" if a.detector == "cascade_rcnn" else "torchvision"
    print(f"{'':28}{'attndet':>12}{other:>14}{'ratio':>8}")
    print(f"{'train iter 2x512x512 (s)':28}{ours_train:12.3f}{tv_train:14.3f}{ours_train / tv_train:8.2f}")
    print(f"{'inference 800x1216 (s)':28}{ours_infer:12.3f}{tv_infer:14.3f}{ours_infer / tv_infer:8.2f}")
    print(json.dumps({"detector": a.detector, "device": a.device, "threads": a.threads,
                      "train_s": {"attndet": ours_train, "torchvision": tv_train, "ratio": ours_train / tv_train},
                      "infer_s": {"attndet": ours_infer, "torchvision": tv_infer, "ratio": ours_infer / tv_infer},
                      "attndet_train_iter_times": ours_times}))


if __name__ == "__main__":
    sys.exit(main())
