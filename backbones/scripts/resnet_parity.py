#!/usr/bin/env python3
"""Reference logits of the ResNet family, from the authors' own PyTorch code, for tests/resnet_parity.rs.

Every tensor of each reference model's state_dict is set from a formula of its key and element index that
tests/resnet_parity.rs computes identically (see `value`), BatchNorm running statistics included (non-trivial:
means in [-0.1, 0.1], variances in [0.2, 1]). The models run in eval mode on a fixed 2x3x64x64 input; each fixture
keeps the first 64 logits of both images and checksums of all of them.

Usage (checkouts of the authors' repositories; not part of this repository):
    git --git-dir=<mirror of ma-xu/DCANet> archive HEAD models | tar -x -C /tmp/refs/dcanet
    git --git-dir=<mirror of BangguWu/ECANet> archive HEAD models | tar -x -C /tmp/refs/ecanet
    python3 backbones/scripts/resnet_parity.py --dcanet /tmp/refs/dcanet --ecanet /tmp/refs/ecanet \
        --out backbones/tests/fixtures/resnet_parity
"""
import argparse
import importlib
import json
import math
import os
import sys

import numpy as np
import torch
import torchvision

SHAPE = (2, 3, 64, 64)
KEPT = 64


def fnv1a32(s: str) -> int:
    h = 0x811C9DC5
    for b in s.encode():
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


M32 = 0xFFFFFFFF


def unit(h: int, i):
    """A hash of (h, i) mapped to [-1, 1): integer mixing, exact in every language (works on ints and on numpy
    uint64 arrays)."""
    x = (h ^ (i * 0x9E3779B1)) & M32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & M32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & M32
    x ^= x >> 16
    return x / 2147483648.0 - 1.0


def scale_and_offset(key: str, shape):
    """value = offset + scale * unit(fnv1a32(key), i)."""
    fan_in = 1
    for d in shape[1:]:
        fan_in *= d
    if key.endswith("running_mean"):
        return 0.0, 0.1
    if key.endswith("running_var"):
        return 0.6, 0.4
    if key.endswith("bias"):
        return 0.0, 0.05
    if len(shape) >= 2 and fan_in > 1:
        return 0.0, math.sqrt(3.0 / fan_in)  # variance 1 / fan_in
    return 1.0, 0.2  # norm scales, DCA mixing weights


def value(key: str, shape, i: int) -> float:
    """The value of element `i` (row-major, PyTorch layout) of tensor `key`."""
    offset, scale = scale_and_offset(key, shape)
    return offset + scale * unit(fnv1a32(key), i)


def fill(model):
    sd = model.state_dict()
    for key, t in sd.items():
        if key.endswith("num_batches_tracked"):
            continue
        offset, scale = scale_and_offset(key, list(t.shape))
        idx = np.arange(t.numel(), dtype=np.uint64)
        u = unit(np.uint64(fnv1a32(key)), idx)
        v = offset + scale * u.astype(np.float64)
        assert abs(v[-1] - value(key, list(t.shape), t.numel() - 1)) < 1e-15
        t.copy_(torch.from_numpy(v).reshape(t.shape).to(t.dtype))


def image():
    n = SHAPE[0] * SHAPE[1] * SHAPE[2] * SHAPE[3]
    return torch.tensor([math.sin(0.37 * i + 0.1) for i in range(n)], dtype=torch.float32).reshape(SHAPE)


def classify_fixture(model, out):
    """`attndet classify --no-resize` reference: an 8-bit RGB pattern image, ImageNet normalisation in float32."""
    h, w = 40, 48
    pixels = torch.tensor(
        [[[(x * 7 + y * 13 + c * 50) % 256 for x in range(w)] for y in range(h)] for c in range(3)],
        dtype=torch.float32,
    )
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    x = ((pixels / 255.0 - mean) / std).unsqueeze(0)
    model.eval()
    fill(model)
    logits = model(x).double()[0]
    fixture = {
        "model": "resnet18",
        "image": {"height": h, "width": w, "pixel": "(x * 7 + y * 13 + c * 50) % 256"},
        "first_logits": logits[:KEPT].tolist(),
        "sum": logits.sum().item(),
        "max_abs": logits.abs().max().item(),
        "argmax": int(logits.argmax()),
    }
    with open(os.path.join(out, "classify_resnet18.json"), "w") as f:
        json.dump(fixture, f)


def import_models(root):
    """Import `models` of one checkout (both repositories call their package `models`)."""
    for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        return importlib.import_module("models")
    finally:
        sys.path.pop(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dcanet", required=True)
    ap.add_argument("--ecanet", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    dca = import_models(args.dcanet)
    rn = sys.modules
    cases = {
        "resnet18": lambda: dca.old_resnet18(),
        "se_resnet18": lambda: dca.se_resnet18(),
        "cbam_resnet18": lambda: dca.cbam_resnet18(),
        "gc_resnet18": lambda: dca.gc_resnet18(),
        "ge_resnet50": lambda: rn["models.resnet.resnet_getheta"].getheta_resnet50(),
        "sk_resnet50": lambda: dca.sk2_resnet50(),
        "dca_se_resnet50": lambda: dca.dca_se_resnet50(),
        "dca_ge_resnet50": lambda: rn["models.resnet.resnet_getheta_dca"].dca_getheta_resnet50(),
        "dca_gc_resnet50": lambda: dca.dca_gc_resnet50(),
        "dca_cbam_resnet50": lambda: dca.dca_cbam_resnet50(),
        "dca_sk_resnet50": lambda: dca.dca_sk2_resnet50(),
    }
    built = {name: make() for name, make in cases.items()}
    eca = import_models(args.ecanet)
    built["eca_resnet50_k3557"] = eca.eca_resnet50(k_size=[3, 5, 5, 7])
    built["torchvision/resnet50"] = torchvision.models.resnet50()

    os.makedirs(args.out, exist_ok=True)
    classify_fixture(built["resnet18"], args.out)
    x = image()
    for name, model in built.items():
        model.eval()
        fill(model)
        logits = model(x).double()
        w = torch.tensor([math.sin(0.1 * i) for i in range(logits.shape[1])], dtype=torch.float64)
        fixture = {
            "model": name.split("/")[-1],
            "reference": name,
            "input": list(SHAPE),
            "first_logits": [row[:KEPT].tolist() for row in logits],
            "sum": logits.sum(dim=1).tolist(),
            "sum_abs": logits.abs().sum(dim=1).tolist(),
            "weighted_sum": (logits * w).sum(dim=1).tolist(),
            "max_abs": logits.abs().max().item(),
        }
        path = os.path.join(args.out, name.replace("/", "_") + ".json")
        with open(path, "w") as f:
            json.dump(fixture, f)
        print(f"{name}: max |logit| {fixture['max_abs']:.4g}, sums {fixture['sum']}")


if __name__ == "__main__":
    main()
