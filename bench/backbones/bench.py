#!/usr/bin/env python3
"""Backbone forward latency on the CPU: attndet (burn Flex) against PyTorch, same machine, same thread count.

    cargo build --release -p attndet-backbones --example forward_latency
    python3 bench/backbones/bench.py --dcanet /tmp/refs/dcanet [--threads 2] [--iters 5]
        [--example <target>/release/examples/forward_latency]

Models: resnet50 (torchvision) and dca_se_resnet50 (the authors' code, ma-xu/DCANet, from a checkout passed
with --dcanet), in eval mode without autograd, at 1x3x224x224 and 1x3x800x1216 (a detection-sized input; the
classification head runs on the pooled C5). attndet times the same networks with the `forward_latency`
example (random weights; speed does not depend on values), which also reports the time of each part (stem,
layer1..4, head). Median over --iters timed runs after one warm-up. Prints a table and one JSON line with the
ratios (attndet time / PyTorch time).
"""
import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = [("resnet50", 224, 224), ("dca_se_resnet50", 224, 224), ("resnet50", 800, 1216), ("dca_se_resnet50", 800, 1216)]


def torch_model(name, dcanet):
    if name == "resnet50":
        return torchvision.models.resnet50()
    sys.path.insert(0, dcanet)
    try:
        models = importlib.import_module("models")
    finally:
        sys.path.pop(0)
    return models.dca_se_resnet50()


def time_torch(model, h, w, iters):
    model.eval()
    x = torch.randn(1, 3, h, w)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(iters):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def default_example():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "examples", "forward_latency")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dcanet", required=True, help="checkout of ma-xu/DCANet (its models/ package)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--example", default=default_example())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name, h, w in CASES:
        ms_torch = time_torch(torch_model(name, args.dcanet), h, w, args.iters)
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        out = subprocess.run([args.example, name, str(h), str(w), str(args.iters), "1"], env=env,
                             check=True, capture_output=True, text=True).stdout
        ours = json.loads(out.strip().splitlines()[-1])
        rows.append({"model": name, "input": [1, 3, h, w], "torch_ms": ms_torch, "attndet_ms": ours["ms"],
                     "ratio": ours["ms"] / ms_torch, "attndet_parts_ms": ours["parts_ms"]})
        r = rows[-1]
        print(f"{name:16s} {h:4d}x{w:<5d} torch {ms_torch:9.1f} ms  attndet {ours['ms']:9.1f} ms  "
              f"ratio {r['ratio']:.2f}  parts " + " ".join(f"{k} {v:.0f}" for k, v in ours["parts_ms"].items()),
              flush=True)
    print(json.dumps({"threads": args.threads, "torch": torch.__version__, "results": rows}))


if __name__ == "__main__":
    main()
