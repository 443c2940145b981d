#!/usr/bin/env python3
"""Record parity fixtures for the mobile and SDA backbones from the authors' own PyTorch code.

Every parameter and buffer is set from a deterministic integer hash of its state_dict key and element index
(`formula_value` below; backbones/tests/mobile_parity.rs computes the same values), a small deterministic input is
run in eval mode, and the logits plus per-level summaries are written as small JSON fixtures. The authors' code is
read from checkouts given on the command line and never copied into this repository.

Usage (from the repository root):
    python3 backbones/scripts/mobile_parity.py --dcanet /path/to/DCANet --ecanet /path/to/ECANet \
        --sda /path/to/SDA-xNet --out backbones/tests/fixtures \
        [--reference /path/to/shared/reference/backbone_state_dicts.json]

With --sda it also prints the parameter count and the FLOPs (DCANet's flops_counter.py, 224x224, 1000 classes) of
the plain res2net50 and pyconvresnet50, the figures backbones/tests/mobile_reference_table.rs asserts.
"""
import argparse
import importlib
import json
import os
import sys
import types

import numpy as np
import torch

NUM_CLASSES = 10
MASK = (1 << 32) - 1


def key_seed(key):
    """Seed of a state_dict key: sum of byte * (position + 1), mod 9973."""
    return sum(b * (j + 1) for j, b in enumerate(key.encode())) % 9973


def hash_uniform(n, seed):
    """n values in [-1, 1) from a 32-bit integer hash of (index, seed)."""
    i = np.arange(n, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(seed) * np.uint64(97531)) & np.uint64(MASK)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(2246822519)) & np.uint64(MASK)
    h ^= h >> np.uint64(13)
    return h.astype(np.float64) / 2.0**32 * 2.0 - 1.0


def formula_value(key, shape):
    """The deterministic value of tensor `key` (torch layout) as float32."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = hash_uniform(n, key_seed(key))
    name = key.rsplit(".", 1)[-1]
    if name == "running_var":
        v = 1.0 + 0.3 * u
    elif name == "running_mean":
        v = 0.1 * u
    elif len(shape) <= 1 and name in ("weight", "p1", "p2"):
        v = 1.0 + 0.2 * u
    elif len(shape) <= 1:
        v = 0.1 * u
    else:
        fan_in = n // shape[0]
        v = u * np.sqrt(3.0 / fan_in)
    return v.astype(np.float32).reshape(shape)


def input_tensor(shape):
    return torch.from_numpy(hash_uniform(int(np.prod(shape)), 12345).astype(np.float32).reshape(shape))


def load_package(alias, directory):
    """Import `directory` as package `alias` without running its __init__ (which imports every model)."""
    pkg = types.ModuleType(alias)
    pkg.__path__ = [directory]
    sys.modules[alias] = pkg
    return lambda name: importlib.import_module(f"{alias}.{name}")


def set_formula_weights(model):
    state = model.state_dict()
    for key, tensor in state.items():
        if tensor.dtype.is_floating_point:
            tensor.copy_(torch.from_numpy(formula_value(key, list(tensor.shape))))


def summarize(t):
    t = t.detach().double()
    return {"shape": list(t.shape), "mean": t.mean().item(), "mean_abs": t.abs().mean().item()}


def write_fixture(path, fixture):
    """Write `fixture` as compact JSON, atomically."""
    with open(path + ".tmp", "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
    os.replace(path + ".tmp", path)
    return path


def record(name, model, input_shape, level_modules, out_dir, prefix=None):
    model.eval()
    set_formula_weights(model)
    levels = {}

    def hook(idx):
        def fn(_module, _inp, out):
            levels[idx] = out[0] if isinstance(out, dict) else out
        return fn

    mods = dict(model.named_modules())
    for idx, mod_name in enumerate(level_modules):
        mods[mod_name].register_forward_hook(hook(idx))
    with torch.no_grad():
        logits = model(input_tensor(input_shape))
    fixture = {
        "model": name,
        "input_shape": input_shape,
        "num_classes": NUM_CLASSES,
        "state_dict": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        "logits": [float(x) for x in logits.flatten()],
        "levels": [summarize(levels[i]) for i in range(len(level_modules))],
    }
    if prefix is None:
        prefix = "sda_parity" if "sda" in name else "mobile_parity"
    path = write_fixture(os.path.join(out_dir, f"{prefix}_{name}.json"), fixture)
    print(f"{name}: logits {fixture['logits'][:3]}... -> {path}")


def check_layout(reference, key, make):
    """Assert that the 1000-class model from `make` has the state_dict layout `reference[key]` lists."""
    if key not in reference:
        return
    keys = [[k, list(v.shape)] for k, v in make(1000).state_dict().items()]
    assert keys == reference[key]["state_dict"], f"{key}: key layout differs from backbone_state_dicts.json"
    print(f"{key}: key layout matches backbone_state_dicts.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dcanet", required=True, help="checkout of ma-xu/DCANet")
    ap.add_argument("--ecanet", help="checkout of BangguWu/ECANet")
    ap.add_argument("--sda", help="checkout of QingbeiGuo/SDA-xNet")
    ap.add_argument("--reference", help="backbone_state_dicts.json: check the models' key layouts against it")
    ap.add_argument("--out", default="backbones/tests/fixtures")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    dca = load_package("dcanet_mobile", os.path.join(args.dcanet, "models", "mobilenet"))
    mobile_levels = ["features.3", "features.6", "features.13", "features.18"]
    mobile = [
        ("mobilenet_v2", "mobilenet_old", "old_mobilenet_v2", mobile_levels),
        ("se_mobilenet_v2", "mobilenet_se", "se_mobilenet_v2", mobile_levels),
        ("dca_se_mobilenet_v2", "mobilenet_se_dca", "dca_se_mobilenet_v2", mobile_levels),
        ("ge_mobilenet_v2", "mobilenet_getheta", "getheta_mobilenet_v2", mobile_levels),
        ("dca_ge_mobilenet_v2", "mobilenet_getheta_dca", "dca_getheta_mobilenet_v2",
         ["features2.2", "features2.5", "features2.12", "features3"]),
        ("sk_mobilenet_v2", "mobilenet_sk", "sk_mobilenet_v2", mobile_levels),
        ("dca_sk_mobilenet_v2", "mobilenet_sk_dca", "dca_sk_mobilenet_v2",
         ["features2.2", "features2.5", "features2.12", "features3"]),
        ("cbam_mobilenet_v2", "mobilenet_cbam", "cbam_mobilenet_v2", mobile_levels),
        ("dca_cbam_mobilenet_v2", "mobilenet_cbam_dca", "dca_cbam_mobilenet_v2", mobile_levels),
    ]
    reference = json.load(open(args.reference)) if args.reference else {}
    for name, module, fn, levels in mobile:
        check_layout(reference, f"dcanet/{fn}", lambda n: getattr(dca(module), fn)(num_classes=n))
        model = getattr(dca(module), fn)(num_classes=NUM_CLASSES)
        record(name, model, [1, 3, 64, 64], levels, args.out)
    mnas = load_package("dcanet_mnas", os.path.join(args.dcanet, "models", "mnas"))
    mnas_levels = ["layers.8", "layers.9", "layers.11", "layers.16"]
    dca_mnas_levels = ["layers2.0", "layers2.1", "layers2.3", "layers3"]
    for name, module, fn, levels in [
        ("mnasnet1_0", "mnasnet_old", "old_mnasnet1_0", mnas_levels),
        ("se_mnasnet1_0", "mnasnet_se", "se_mnasnet1_0", mnas_levels),
        ("dca_se_mnasnet1_0", "mnasnet_se_dca", "dca_se_mnasnet1_0", dca_mnas_levels),
        ("ge_mnasnet1_0", "mnasnet_getheta", "getheta_mnasnet1_0", mnas_levels),
        ("dca_ge_mnasnet0_5", "mnasnet_getheta_dca", "dca_getheta_mnasnet0_5", dca_mnas_levels),
        ("cbam_mnasnet1_0", "mnasnet_cbam", "cbam_mnasnet1_0", mnas_levels),
        ("dca_cbam_mnasnet1_0", "mnasnet_cbam_dca", "dca_cbam_mnasnet1_0", dca_mnas_levels),
    ]:
        check_layout(reference, f"dcanet/{fn}", lambda n: getattr(mnas(module), fn)(num_classes=n))
        model = getattr(mnas(module), fn)(num_classes=NUM_CLASSES)
        record(name, model, [1, 3, 64, 64], levels, args.out)
    if args.ecanet:
        eca = load_package("ecanet_models", os.path.join(args.ecanet, "models"))
        model = eca("eca_mobilenetv2").eca_mobilenet_v2(num_classes=NUM_CLASSES)
        record("eca_mobilenet_v2", model, [1, 3, 64, 64], mobile_levels, args.out)
    if args.sda:
        sda = load_package("sda_resnet", os.path.join(args.sda, "SDA-ResNet", "models", "resnet"))
        check_layout(reference, "sda/sda_resnet86", lambda n: sda("resnet_at").resnet50(num_classes=n))
        model = sda("resnet_at").resnet50(num_classes=NUM_CLASSES)
        # The classifier's AvgPool2d(7) needs a 7x7 final map: 224x224 input.
        stages = ["stage1", "stage2", "stage3", "stage4"]
        record("sda_resnet86", model, [1, 3, 224, 224], stages, args.out)
        sda_se = load_package("sda_senet", os.path.join(args.sda, "SDA-SENet", "models", "senet"))
        # The SE blocks pool with fixed AvgPool2d(56/28/14/7): 224x224 input as well.
        check_layout(reference, "sda/sda_se_resnet86", lambda n: sda_se("se_resnet_at").se_resnet_50(num_classes=n))
        model = sda_se("se_resnet_at").se_resnet_50(num_classes=NUM_CLASSES)
        record("sda_se_resnet86", model, [1, 3, 224, 224], stages, args.out)
        sda_res2 = load_package("sda_res2net", os.path.join(args.sda, "SDA-Res2Net", "models", "res2net"))
        sda_pyconv = load_package("sda_pyconv", os.path.join(args.sda, "SDA-PyConv", "models", "resnet_pyconv"))
        # These pool adaptively: a small 64x64 input keeps the fixtures and the Rust test cheap.
        for name, make in [
            ("sda_res2net86", lambda n: sda_res2("res2net_at").res2net50(num_classes=n)),
            ("sda_pyconvresnet86", lambda n: sda_pyconv("resnet_pyconv_at").pyconvresnet50(num_classes=n)),
        ]:
            check_layout(reference, f"sda/{name}", make)
            record(name, make(NUM_CLASSES), [1, 3, 64, 64], stages, args.out)
        # The plain baselines: Res2Net-50 26w x 4s, and PyConvResNet-50 at the PyConv paper's [3, 4, 6, 3] (the
        # repository's own pyconvresnet50() was edited to the 86-layer depths).
        pyconv_plain = sda_pyconv("resnet_pyconv")
        layers = ["layer1", "layer2", "layer3", "layer4"]
        flops_counter = load_package("dcanet_root", args.dcanet)("flops_counter")
        for name, make in [
            ("res2net50", lambda n: sda_res2("res2net").res2net50(num_classes=n)),
            ("pyconvresnet50", lambda n: pyconv_plain.PyConvResNet(pyconv_plain.PyConvBlock, [3, 4, 6, 3],
                                                                   num_classes=n)),
        ]:
            model = make(1000)
            flops, params = flops_counter.get_model_complexity_info(
                model, (224, 224), print_per_layer_stat=False, as_strings=False)
            print(f"{name}: {params} parameters, {int(flops)} FLOPs at 224x224 (1000 classes)")
            record(name, make(NUM_CLASSES), [1, 3, 64, 64], layers, args.out, prefix="sda_parity")


if __name__ == "__main__":
    main()
