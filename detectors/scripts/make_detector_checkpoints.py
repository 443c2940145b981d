#!/usr/bin/env python3
"""Tiny whole-detector PyTorch checkpoints in mmdetection's layout, for detectors/src/models/foreign.rs.

Run from the repository root (torch 2.x; mmdetection is not needed, the key names and shapes are written out
below as mmdetection's modules name them):

    python3 detectors/scripts/make_detector_checkpoints.py detectors/tests/fixtures/foreign

Writes:
- faster_rcnn_r18_tiny.pth: mmdetection's runner layout {"meta": {...}, "state_dict": {...}} of a Faster R-CNN
  (ResNet-18, FPN) matching configs/faster_rcnn/faster_rcnn_r18_fpn_synth_demo.json with the overrides
  FASTER_RCNN_OVERRIDES below;
- retinanet_r18_tiny.pth: a bare state dict of a RetinaNet (ResNet-18, FPN) matching
  configs/retinanet/retinanet_r18_fpn_synth_demo.json with RETINANET_OVERRIDES;
- faster_rcnn_r18_tiny_broken.pth: the Faster R-CNN with one key dropped (roi_head.bbox_head.shared_fcs.1.bias),
  one added (roi_head.bbox_head.fc_extra.weight) and one mis-shaped (neck.fpn_convs.2.conv.weight [16,16,1,1]);
- torchvision_faster_rcnn_keys.pth: a few keys of torchvision's Faster R-CNN layout (tiny shapes);
- cascade_mask_rcnn_r18_tiny.pth: a Cascade Mask R-CNN (three class-agnostic box heads
  `roi_head.bbox_head.{0,1,2}`, three one-conv mask heads `roi_head.mask_head.{0,1,2}`) matching
  configs/cascade_rcnn/cascade_rcnn_r18_fpn_synth_demo.json with CASCADE_OVERRIDES and a mask branch.
- torchvision_faster_rcnn_r18_tiny.pth / torchvision_retinanet_r18_tiny.pth: the same two detectors in
  torchvision's layout (`backbone.body.*`, `backbone.fpn.inner_blocks.i.0.*`, `rpn.head.conv.0.0.*`,
  `roi_heads.box_predictor.cls_score` with K + 1 rows, background first, `bbox_pred` with 4 (K + 1);
  `head.classification_head.conv.i.0.*`, `backbone.fpn.extra_blocks.p6/p7`), bare state dicts, for the configs
  above with `model.layout=torchvision` (and, for RetinaNet, P6 from P5: `model.neck.add_extra_convs=on_output`).
- mask_rcnn_r18_tiny.pth: mmdetection's runner layout of a Mask R-CNN (the Faster R-CNN above plus a two-conv
  FCNMaskHead: `roi_head.mask_head.convs.{0,1}.conv.*`, `upsample`, `conv_logits` with K rows) matching
  configs/mask_rcnn/mask_rcnn_r18_fpn_synth_demo.json with MASK_RCNN_OVERRIDES;
- torchvision_mask_rcnn_r18_tiny.pth: the same Mask R-CNN in torchvision's layout (`roi_heads.mask_head.{0,1}.0.*`,
  `roi_heads.mask_predictor.conv5_mask`, `mask_fcn_logits` with K + 1 rows, background first), a bare state dict
  for that config with `model.layout=torchvision`.

Values: element i (flattened, row-major) of tensor `key` is v = (((7 i + len(key)) % 23) - 11) / 1000, plus 1 for
BatchNorm weights and running variances (see `value`); num_batches_tracked is 5. The Rust tests compute the
same formula. The period makes the files compress well: torch.save writes an uncompressed zip, which is
rewritten here with DEFLATE entries (same entry names and contents; burn-store's reader decompresses them), so
that the ResNet-18 backbones (11M parameters) stay well under a megabyte.
"""
import io
import os
import sys
import zipfile

import torch

FASTER_RCNN_OVERRIDES = [
    "model.neck.out_channels=16",
    "model.rpn_head.feat_channels=16",
    "model.roi_head.bbox_head.in_channels=16",
    "model.roi_head.bbox_head.fc_out_channels=32",
    "model.roi_head.bbox_head.num_classes=3",
]
CASCADE_OVERRIDES = [
    "model.neck.out_channels=16",
    "model.rpn_head.feat_channels=16",
] + [
    f"model.roi_head.bbox_head.{i}.{field}"
    for i in range(3)
    for field in ("in_channels=16", "fc_out_channels=32", "num_classes=3")
]
MASK_RCNN_OVERRIDES = FASTER_RCNN_OVERRIDES + [
    "model.roi_head.mask_head.in_channels=16",
    "model.roi_head.mask_head.conv_out_channels=16",
    "model.roi_head.mask_head.num_classes=3",
]
RETINANET_OVERRIDES = [
    "model.neck.out_channels=16",
    "model.bbox_head.feat_channels=16",
    "model.bbox_head.num_classes=3",
]


def value(key, shape):
    n = 1
    for d in shape:
        n *= d
    i = torch.arange(n, dtype=torch.int64)
    v = (((7 * i + len(key)) % 23) - 11).to(torch.float32) / 1000
    leaf = key.rsplit(".", 1)[-1]
    is_bn = ".bn" in key or "downsample.1." in key
    if leaf == "running_var" or (is_bn and leaf == "weight"):
        v = v + 1
    return v.reshape(shape)


def resnet18(prefix="backbone."):
    """mmdetection ResNet(depth=18) keys and shapes (no classifier)."""
    shapes = {}

    def bn(name, c):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}{name}.{leaf}"] = [c]
        shapes[f"{prefix}{name}.num_batches_tracked"] = []

    shapes[f"{prefix}conv1.weight"] = [64, 3, 7, 7]
    bn("bn1", 64)
    inplanes = 64
    for s in range(4):
        planes = 64 << s
        for b in range(2):
            name = f"layer{s + 1}.{b}"
            cin = inplanes if b == 0 else planes
            shapes[f"{prefix}{name}.conv1.weight"] = [planes, cin, 3, 3]
            bn(f"{name}.bn1", planes)
            shapes[f"{prefix}{name}.conv2.weight"] = [planes, planes, 3, 3]
            bn(f"{name}.bn2", planes)
            if b == 0 and s > 0:
                shapes[f"{prefix}{name}.downsample.0.weight"] = [planes, cin, 1, 1]
                bn(f"{name}.downsample.1", planes)
        inplanes = planes
    return shapes


def fpn(in_channels, out, num_outs_extra_on_input=0):
    """mmdetection FPN keys: ConvModule `conv` inside each lateral / output conv."""
    shapes = {}
    for i, cin in enumerate(in_channels):
        shapes[f"neck.lateral_convs.{i}.conv.weight"] = [out, cin, 1, 1]
        shapes[f"neck.lateral_convs.{i}.conv.bias"] = [out]
    for i in range(len(in_channels)):
        shapes[f"neck.fpn_convs.{i}.conv.weight"] = [out, out, 3, 3]
        shapes[f"neck.fpn_convs.{i}.conv.bias"] = [out]
    for j in range(num_outs_extra_on_input):
        i = len(in_channels) + j
        cin = in_channels[-1] if j == 0 else out
        shapes[f"neck.fpn_convs.{i}.conv.weight"] = [out, cin, 3, 3]
        shapes[f"neck.fpn_convs.{i}.conv.bias"] = [out]
    return shapes


def conv(shapes, key, cout, cin, k):
    shapes[f"{key}.weight"] = [cout, cin, k, k]
    shapes[f"{key}.bias"] = [cout]


def linear(shapes, key, dout, din):
    shapes[f"{key}.weight"] = [dout, din]
    shapes[f"{key}.bias"] = [dout]


def faster_rcnn():
    c, feat, fc, k, a, roi = 16, 16, 32, 3, 3, 7
    shapes = resnet18()
    shapes.update(fpn([64, 128, 256, 512], c))
    conv(shapes, "rpn_head.rpn_conv", feat, c, 3)
    conv(shapes, "rpn_head.rpn_cls", a, feat, 1)
    conv(shapes, "rpn_head.rpn_reg", 4 * a, feat, 1)
    linear(shapes, "roi_head.bbox_head.shared_fcs.0", fc, c * roi * roi)
    linear(shapes, "roi_head.bbox_head.shared_fcs.1", fc, fc)
    linear(shapes, "roi_head.bbox_head.fc_cls", k + 1, fc)
    linear(shapes, "roi_head.bbox_head.fc_reg", 4 * k, fc)
    return shapes


def cascade_mask_rcnn():
    c, feat, fc, k, a, roi = 16, 16, 32, 3, 3, 7
    shapes = resnet18()
    shapes.update(fpn([64, 128, 256, 512], c))
    conv(shapes, "rpn_head.rpn_conv", feat, c, 3)
    conv(shapes, "rpn_head.rpn_cls", a, feat, 1)
    conv(shapes, "rpn_head.rpn_reg", 4 * a, feat, 1)
    for i in range(3):
        h = f"roi_head.bbox_head.{i}"
        linear(shapes, f"{h}.shared_fcs.0", fc, c * roi * roi)
        linear(shapes, f"{h}.shared_fcs.1", fc, fc)
        linear(shapes, f"{h}.fc_cls", k + 1, fc)
        linear(shapes, f"{h}.fc_reg", 4, fc)  # reg_class_agnostic
        m = f"roi_head.mask_head.{i}"
        conv(shapes, f"{m}.convs.0.conv", 16, c, 3)
        # ConvTranspose2d weights are [in, out, kh, kw]
        shapes[f"{m}.upsample.weight"] = [16, 16, 2, 2]
        shapes[f"{m}.upsample.bias"] = [16]
        conv(shapes, f"{m}.conv_logits", k, 16, 1)
    return shapes


def mask_rcnn():
    c, k, convs = 16, 3, 2
    shapes = faster_rcnn()
    for i in range(convs):
        conv(shapes, f"roi_head.mask_head.convs.{i}.conv", c, c, 3)
    # ConvTranspose2d weights are [in, out, kh, kw]
    shapes["roi_head.mask_head.upsample.weight"] = [c, c, 2, 2]
    shapes["roi_head.mask_head.upsample.bias"] = [c]
    conv(shapes, "roi_head.mask_head.conv_logits", k, c, 1)
    return shapes


def tv_mask_rcnn():
    c, k, convs = 16, 3, 2
    shapes = tv_faster_rcnn()
    for i in range(convs):
        conv(shapes, f"roi_heads.mask_head.{i}.0", c, c, 3)
    shapes["roi_heads.mask_predictor.conv5_mask.weight"] = [c, c, 2, 2]
    shapes["roi_heads.mask_predictor.conv5_mask.bias"] = [c]
    conv(shapes, "roi_heads.mask_predictor.mask_fcn_logits", k + 1, c, 1)
    return shapes


def retinanet():
    c, feat, k, a = 16, 16, 3, 9
    shapes = resnet18()
    shapes.update(fpn([128, 256, 512], c))
    for tower in ("cls_convs", "reg_convs"):
        for i in range(2):
            conv(shapes, f"bbox_head.{tower}.{i}.conv", feat, c if i == 0 else feat, 3)
    conv(shapes, "bbox_head.retina_cls", a * k, feat, 3)
    conv(shapes, "bbox_head.retina_reg", a * 4, feat, 3)
    return shapes


def tv_fpn(in_channels, out, p6p7=False):
    """torchvision FeaturePyramidNetwork keys (Conv2dNormActivation: `.0` inside each block)."""
    shapes = {}
    for i, cin in enumerate(in_channels):
        conv(shapes, f"backbone.fpn.inner_blocks.{i}.0", out, cin, 1)
        conv(shapes, f"backbone.fpn.layer_blocks.{i}.0", out, out, 3)
    if p6p7:
        conv(shapes, "backbone.fpn.extra_blocks.p6", out, out, 3)
        conv(shapes, "backbone.fpn.extra_blocks.p7", out, out, 3)
    return shapes


def tv_faster_rcnn():
    c, fc, k, a, roi = 16, 32, 3, 3, 7
    shapes = resnet18("backbone.body.")
    shapes.update(tv_fpn([64, 128, 256, 512], c))
    conv(shapes, "rpn.head.conv.0.0", c, c, 3)
    conv(shapes, "rpn.head.cls_logits", a, c, 1)
    conv(shapes, "rpn.head.bbox_pred", 4 * a, c, 1)
    linear(shapes, "roi_heads.box_head.fc6", fc, c * roi * roi)
    linear(shapes, "roi_heads.box_head.fc7", fc, fc)
    linear(shapes, "roi_heads.box_predictor.cls_score", k + 1, fc)
    linear(shapes, "roi_heads.box_predictor.bbox_pred", 4 * (k + 1), fc)
    return shapes


def tv_retinanet():
    c, k, a = 16, 3, 9
    shapes = resnet18("backbone.body.")
    shapes.update(tv_fpn([128, 256, 512], c, p6p7=True))
    for head in ("classification_head", "regression_head"):
        for i in range(2):
            conv(shapes, f"head.{head}.conv.{i}.0", c, c, 3)
    conv(shapes, "head.classification_head.cls_logits", a * k, c, 3)
    conv(shapes, "head.regression_head.bbox_reg", a * 4, c, 3)
    return shapes


def state_dict(shapes):
    out = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(5, dtype=torch.int64)
        else:
            out[key] = value(key, shape)
    return out


def save_deflated(obj, path):
    """torch.save, then the same zip entries compressed with DEFLATE."""
    raw = io.BytesIO()
    torch.save(obj, raw)
    raw.seek(0)
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "detectors/tests/fixtures/foreign"
    os.makedirs(out, exist_ok=True)
    meta = {"mmdet_version": "2.25.0", "CLASSES": ("a", "b", "c"), "epoch": 12, "iter": 3000}
    save_deflated({"meta": meta, "state_dict": state_dict(faster_rcnn())},
                  os.path.join(out, "faster_rcnn_r18_tiny.pth"))
    save_deflated(state_dict(retinanet()), os.path.join(out, "retinanet_r18_tiny.pth"))

    broken = faster_rcnn()
    del broken["roi_head.bbox_head.shared_fcs.1.bias"]
    broken["roi_head.bbox_head.fc_extra.weight"] = [2, 32]
    broken["neck.fpn_convs.2.conv.weight"] = [16, 16, 1, 1]
    save_deflated({"meta": meta, "state_dict": state_dict(broken)},
                  os.path.join(out, "faster_rcnn_r18_tiny_broken.pth"))

    tv = {
        "backbone.body.conv1.weight": [4, 3, 7, 7],
        "backbone.fpn.inner_blocks.0.0.weight": [4, 4, 1, 1],
        "rpn.head.conv.0.0.weight": [4, 4, 3, 3],
        "roi_heads.box_head.fc6.weight": [8, 4],
        "roi_heads.box_predictor.cls_score.weight": [91, 8],
    }
    save_deflated(state_dict(tv), os.path.join(out, "torchvision_faster_rcnn_keys.pth"))
    save_deflated({"meta": meta, "state_dict": state_dict(cascade_mask_rcnn())},
                  os.path.join(out, "cascade_mask_rcnn_r18_tiny.pth"))
    save_deflated(state_dict(tv_faster_rcnn()), os.path.join(out, "torchvision_faster_rcnn_r18_tiny.pth"))
    save_deflated(state_dict(tv_retinanet()), os.path.join(out, "torchvision_retinanet_r18_tiny.pth"))
    save_deflated({"meta": meta, "state_dict": state_dict(mask_rcnn())}, os.path.join(out, "mask_rcnn_r18_tiny.pth"))
    save_deflated(state_dict(tv_mask_rcnn()), os.path.join(out, "torchvision_mask_rcnn_r18_tiny.pth"))


if __name__ == "__main__":
    main()
