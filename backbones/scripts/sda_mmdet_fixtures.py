#!/usr/bin/env python3
"""Record fixtures for importing SDA-xNet's mmdetection detection backbones (SdaNet, Sda_SENet, Sda_Res2Net from
QingbeiGuo/SDA-xNet mmdetection/mmdet/models/backbones/sda*.py, depth 86).

mmcv and mmdetection are not installed here, so the few helpers those files import are stood in by minimal
equivalents below (conv/norm/linear builders with mmcv's naming: a BatchNorm built with postfix 1 is named
`bn1`; `BaseModule`; and, for Sda_Res2Net, the attributes and layers mmdetection's ResNet `Bottleneck.__init__`
creates before SdaBottle2neck replaces or deletes them). The SDA classes themselves are the authors' code, read
from the checkout given on the command line and never copied into this repository.

Each backbone is built in eval mode, every tensor set by the integer-hash formula of mobile_parity.py (keyed by
the backbone's own state_dict key, without the detector's `backbone.` prefix), run on a 64x64 input, and its
state_dict layout plus the C2..C5 summaries are written to backbones/tests/fixtures/sda_mmdet_<name>.json.

Usage (from the repository root):
    python3 backbones/scripts/sda_mmdet_fixtures.py --sda /path/to/SDA-xNet --out backbones/tests/fixtures
"""
import argparse
import importlib
import os
import sys
import types

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mobile_parity import input_tensor, set_formula_weights, summarize, write_fixture  # noqa: E402


def module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def package(name, path):
    m = module(name)
    m.__path__ = [path]
    return m


class BaseModule(nn.Module):
    def __init__(self, init_cfg=None):
        super().__init__()
        self.init_cfg = init_cfg


class Sequential(nn.Sequential):
    def __init__(self, *layers, init_cfg=None):
        super().__init__(*layers)


def build_conv_layer(cfg, *args, **kwargs):
    assert cfg is None, "only plain convolutions are needed"
    return nn.Conv2d(*args, **kwargs)


def build_norm_layer(cfg, num_features, postfix=""):
    assert cfg["type"] == "BN", cfg
    layer = nn.BatchNorm2d(num_features)
    for p in layer.parameters():
        p.requires_grad = cfg.get("requires_grad", True)
    # mmcv names a layer by its type's abbreviation ("bn" for every _BatchNorm) and the postfix.
    return f"bn{postfix}", layer


def build_linear_layer(cfg, *args, **kwargs):
    assert cfg is None
    return nn.Linear(*args, **kwargs)


def build_plugin_layer(*args, **kwargs):
    raise NotImplementedError("plugins are not used by the SDA configs")


class Registry:
    def register_module(self, *args, **kwargs):
        return lambda cls: cls


class Bottleneck(BaseModule):
    """The state mmdetection's ResNet Bottleneck.__init__ leaves for a subclass (style 'pytorch', no DCN)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None, style="pytorch",
                 with_cp=False, conv_cfg=None, norm_cfg=dict(type="BN"), dcn=None, plugins=None, init_cfg=None):
        super().__init__(init_cfg)
        assert dcn is None and plugins is None and style == "pytorch"
        self.inplanes, self.planes, self.stride, self.dilation = inplanes, planes, stride, dilation
        self.style, self.with_cp, self.conv_cfg, self.norm_cfg = style, with_cp, conv_cfg, norm_cfg
        self.dcn, self.with_dcn, self.plugins, self.with_plugins = dcn, False, plugins, False
        self.conv1_stride, self.conv2_stride = 1, stride
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        self.norm3_name, norm3 = build_norm_layer(norm_cfg, planes * self.expansion, postfix=3)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=self.conv1_stride, bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=self.conv2_stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.add_module(self.norm2_name, norm2)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.add_module(self.norm3_name, norm3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def norm1(self):
        return getattr(self, self.norm1_name)

    @property
    def norm2(self):
        return getattr(self, self.norm2_name)

    @property
    def norm3(self):
        return getattr(self, self.norm3_name)


def install_shims(sda_root):
    mmcv = module("mmcv")
    mmcv.cnn = module("mmcv.cnn", build_conv_layer=build_conv_layer, build_norm_layer=build_norm_layer,
                      build_plugin_layer=build_plugin_layer)
    mmcv.runner = module("mmcv.runner", BaseModule=BaseModule, Sequential=Sequential)
    root = os.path.join(sda_root, "mmdetection", "mmdet")
    package("sda_mmdet", root)
    package("sda_mmdet.models", os.path.join(root, "models"))
    module("sda_mmdet.models.builder", BACKBONES=Registry())
    package("sda_mmdet.models.utils", os.path.join(root, "models", "utils"))
    sys.modules["sda_mmdet.models.utils"].ResLayer = None
    module("sda_mmdet.models.utils.builder", build_linear_layer=build_linear_layer)
    package("sda_mmdet.models.backbones", os.path.join(root, "models", "backbones"))
    module("sda_mmdet.models.backbones.resnet", Bottleneck=Bottleneck, ResNet=None)


def record(name, model, out_dir):
    model.eval()
    set_formula_weights(model)
    shape = [1, 3, 64, 64]
    with torch.no_grad():
        levels = model(input_tensor(shape))
    fixture = {
        "model": name,
        "input_shape": shape,
        "num_classes": 0,
        "state_dict": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        "logits": [],
        "levels": [summarize(level) for level in levels],
    }
    path = write_fixture(os.path.join(out_dir, f"sda_mmdet_{name}.json"), fixture)
    print(f"{name}: {len(fixture['state_dict'])} tensors, C5 mean {fixture['levels'][3]['mean']:.6f} -> {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sda", required=True, help="checkout of QingbeiGuo/SDA-xNet")
    ap.add_argument("--out", default="backbones/tests/fixtures")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    install_shims(args.sda)
    backbones = "sda_mmdet.models.backbones"
    norm = dict(type="BN", requires_grad=True)
    for name, file, cls in [
        ("sda_resnet86", "sdanet", "SdaNet"),
        ("sda_se_resnet86", "sda_senet", "Sda_SENet"),
        ("sda_res2net86", "sda_res2net", "Sda_Res2Net"),
    ]:
        backbone = getattr(importlib.import_module(f"{backbones}.{file}"), cls)
        # The repository's detection configs: depth 86, four outputs, frozen_stages=1, norm_eval=True.
        model = backbone(depth=86, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1, norm_cfg=norm,
                         norm_eval=True, style="pytorch")
        record(name, model, args.out)


if __name__ == "__main__":
    main()
