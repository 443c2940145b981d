#!/usr/bin/env python3
"""GPU training speed and peak memory of each detector, attndet against torchvision, on the same GPU.

    python3 bench/gpu/bench.py [--attndet target/release/attndet] [--device cuda:0|wgpu]
        [--detectors retinanet,faster_rcnn,mask_rcnn] [--iters 10] [--json-out results.json]

Build attndet first with the backend you measure: `cargo build --release --features cuda` (for
`--device cuda:0`) or `--features wgpu` (for `--device wgpu`). Needs an NVIDIA GPU with `nvidia-smi`, and
torch + torchvision with CUDA (`pip install torch torchvision`).

For each detector (mmdetection's R50-FPN 1x COCO config on our side; torchvision's RetinaNet, FasterRCNN,
MaskRCNN with the same ResNet-50 + FPN, FrozenBatchNorm, stem + stage 1 frozen, on theirs):
  s/iter: the median time of one training iteration (forward, losses, backward, SGD step) on a batch of
          2 images of 1333 x 800 with 3 boxes (and polygon masks) each, after the first (warm-up: shader
          compilation, autotuning, allocator growth) iteration; attndet's from its log.jsonl (`time -
          data_time`), torchvision's synchronised around the step;
  peak memory: the most GPU memory the process held, polled from `nvidia-smi` every 50 ms (the same
          measure for both; it includes each framework's allocator cache and the CUDA context), and for
          torchvision also `torch.cuda.max_memory_allocated` (live tensors only).
Each side runs in its own process, one at a time, so they do not share the GPU. Prints a table and one JSON
line per detector.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "retinanet": "configs/retinanet/retinanet_r50_fpn_1x_coco.json",
    "faster_rcnn": "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.json",
    "mask_rcnn": "configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.json",
}
W, H = 1333, 800
BOXES = [[10.0, 20.0, 400.0, 300.0], [300.0, 150.0, 800.0, 700.0], [900.0, 100.0, 1300.0, 600.0]]


def write_dataset(root, n, rng):
    """n random 1333 x 800 images, each with the 3 boxes of BOXES (their rectangles as polygon masks)."""
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    images, anns = [], []
    for i in range(n):
        arr = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)
        Image.fromarray(arr).save(os.path.join(root, "train", f"{i}.png"))
        images.append({"id": i + 1, "width": W, "height": H, "file_name": f"{i}.png"})
        for j, (x1, y1, x2, y2) in enumerate(BOXES):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": j + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                         "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]})
    cats = [{"id": k + 1, "name": f"c{k + 1}"} for k in range(80)]
    with open(os.path.join(root, "train.json"), "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)


class GpuMemoryPoller:
    """Peak `nvidia-smi` memory (MiB) of one process id while it runs."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
            for line in out.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[0] == str(self.pid) and parts[1].isdigit():
                    self.peak = max(self.peak, int(parts[1]))
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def bench_attndet(binary, device, detector, root, iters):
    work = os.path.join(root, f"work-{detector}")
    args = [binary, "--device", device, "train", os.path.join(ROOT, CONFIGS[detector]), "--work-dir", work,
            "--quiet", "--cfg-options",
            f"data.data_root={json.dumps(root)}",
            "data.train.ann_file=train.json", "data.train.img_dir=train",
            "data.val.ann_file=train.json", "data.val.img_dir=train",
            "data.batch_size=2", "data.num_workers=2", "data.pipeline.flip_prob=0",
            f"data.pipeline.img_scale=[{W},{H}]",
            "evaluation.interval=0", "log_config.interval=1", "runner.max_epochs=1"]
    proc = subprocess.Popen(args)
    poller = GpuMemoryPoller(proc.pid)
    rc = proc.wait()
    peak = poller.stop()
    if rc != 0:
        raise SystemExit(f"attndet train {detector} failed with exit code {rc}")
    times = []
    with open(os.path.join(work, "log.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec["mode"] == "train":
                times.append(rec["time"] - rec["data_time"])
    assert len(times) == iters, f"{detector}: {len(times)} iterations logged, expected {iters}"
    return statistics.median(times[1:]), peak, times


TORCHVISION_CHILD = r'''
import json, statistics, sys, time
import torch, torchvision
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

detector, iters, W, H, boxes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
torch.manual_seed(0)
dev = "cuda"
backbone = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
# trainable_layers=3: stem and stage 1 frozen, as mmdetection's frozen_stages=1
if detector == "retinanet":
    backbone = _resnet_fpn_extractor(backbone, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(2048, 256))
    model = RetinaNet(backbone, num_classes=80, min_size=H, max_size=W)
elif detector == "faster_rcnn":
    model = FasterRCNN(_resnet_fpn_extractor(backbone, 3), num_classes=81, min_size=H, max_size=W)
else:
    model = MaskRCNN(_resnet_fpn_extractor(backbone, 3), num_classes=81, min_size=H, max_size=W)
model = model.to(dev).train()
opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=1e-4)
g = torch.Generator().manual_seed(0)
imgs = [torch.rand(3, H, W, generator=g).to(dev) for _ in range(2)]
def target():
    t = {"boxes": torch.tensor(boxes, device=dev), "labels": torch.tensor([1, 2, 3], device=dev)}
    if detector == "mask_rcnn":
        m = torch.zeros(3, H, W, dtype=torch.uint8, device=dev)
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            m[k, int(y1):int(y2), int(x1):int(x2)] = 1
        t["masks"] = m
    return t
targets = [target() for _ in range(2)]
torch.cuda.reset_peak_memory_stats()
times = []
for _ in range(iters):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = sum(model(imgs, targets).values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
print(json.dumps({"s_per_iter": statistics.median(times[1:]), "times": times,
                  "max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}))
'''


def bench_torchvision(detector, iters):
    proc = subprocess.Popen([sys.executable, "-c", TORCHVISION_CHILD, detector, str(iters), str(W), str(H),
                             json.dumps(BOXES)], stdout=subprocess.PIPE, text=True)
    poller = GpuMemoryPoller(proc.pid)
    out, _ = proc.communicate()
    peak = poller.stop()
    if proc.returncode != 0:
        raise SystemExit(f"torchvision {detector} failed with exit code {proc.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    return res["s_per_iter"], peak, res["max_allocated_mb"], res["times"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attndet", default=os.path.join(ROOT, "target/release/attndet"))
    ap.add_argument("--device", default="cuda:0", help="attndet's --device: cuda:N or wgpu[:N]")
    ap.add_argument("--detectors", default=",".join(CONFIGS))
    ap.add_argument("--iters", type=int, default=10, help="training iterations per run (the first is warm-up)")
    ap.add_argument("--json-out", help="also write all results to this file")
    a = ap.parse_args()
    detectors = a.detectors.split(",")
    for d in detectors:
        if d not in CONFIGS:
            raise SystemExit(f"--detectors: unknown detector {d!r} (expected {', '.join(CONFIGS)})")
    if a.iters < 2:
        raise SystemExit("--iters: at least 2 (the first iteration is warm-up)")
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, check=True).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory() as root:
        write_dataset(root, 2 * a.iters, np.random.default_rng(0))
        for d in detectors:
            ours_s, ours_mb, ours_times = bench_attndet(a.attndet, a.device, d, root, a.iters)
            tv_s, tv_mb, tv_alloc, tv_times = bench_torchvision(d, a.iters)
            results.append({"detector": d, "gpu": gpu, "attndet_device": a.device, "batch": [2, 3, H, W],
                            "s_per_iter": {"attndet": ours_s, "torchvision": tv_s, "ratio": ours_s / tv_s},
                            "peak_gpu_mb": {"attndet": ours_mb, "torchvision": tv_mb,
                                            "torchvision_max_allocated": tv_alloc},
                            "iter_times": {"attndet": ours_times, "torchvision": tv_times}})
    print(f"GPU: {gpu}; batch 2 x 3 x {H} x {W}; attndet --device {a.device}")
    print(f"{'detector':14}{'attndet s/it':>14}{'torchvision':>13}{'ratio':>8}{'attndet MiB':>13}{'tv MiB':>9}")
    for r in results:
        s, m = r["s_per_iter"], r["peak_gpu_mb"]
        print(f"{r['detector']:14}{s['attndet']:14.3f}{s['torchvision']:13.3f}{s['ratio']:8.2f}"
              f"{m['attndet']:13d}{m['torchvision']:9d}")
    for r in results:
        print(json.dumps(r))
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
