"""Seed inputs of the fuzz targets of attndet-detectors (committed under seeds/; rerun to regenerate).

    python3 detectors/fuzz/make_seeds.py        # torch, Pillow

torch_checkpoint: the tiny module's state dict (conv 3->4 3x3, bn 4, fc 4->2; see src/lib.rs) as a zip
`.pth`, a legacy `.pth`, one nested under `state_dict` with `module.` prefixes, a PyTorch-named safetensors
file and one in attndet's own layout (burn names, fc weight transposed, `format: attndet` metadata); the
first byte of each seed is the target's kind byte. image_decode: small PNGs (RGB, grey, palette, 16-bit,
interlaced) and JPEGs (baseline, progressive, grey). record: the kind byte alone (edits of the valid record)
and one edit. config: the run script copies the repository's configs.
"""
import io
import json
import os
import struct

import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tiny_state():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    return {
        "conv.weight": r(4, 3, 3, 3), "conv.bias": r(4),
        "bn.weight": r(4), "bn.bias": r(4), "bn.running_mean": r(4), "bn.running_var": r(4).abs(),
        "bn.num_batches_tracked": torch.tensor(3),
        "fc.weight": r(2, 4), "fc.bias": r(2),
    }


def pth(obj, legacy=False):
    b = io.BytesIO()
    torch.save(obj, b, _use_new_zipfile_serialization=not legacy)
    return b.getvalue()


def safetensors(tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for k, t in tensors.items():
        data = t.contiguous().numpy().tobytes()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        header[k] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def torch_seeds():
    s = tiny_state()
    put("torch_checkpoint", "zip.pth", b"\x00" + pth(s))
    put("torch_checkpoint", "legacy.pth", b"\x00" + pth(s, legacy=True))
    nested = {"state_dict": {"module." + k: v for k, v in s.items()}, "meta": {"epoch": 1}}
    put("torch_checkpoint", "nested.pth", b"\x02" + pth(nested))
    torch_named = {k: v for k, v in s.items() if k != "bn.num_batches_tracked"}
    put("torch_checkpoint", "torch.safetensors", b"\x01" + safetensors(torch_named))
    ours = {
        "conv.weight": s["conv.weight"], "conv.bias": s["conv.bias"],
        "bn.gamma": s["bn.weight"], "bn.beta": s["bn.bias"],
        "bn.running_mean": s["bn.running_mean"], "bn.running_var": s["bn.running_var"],
        "fc.weight": s["fc.weight"].t(), "fc.bias": s["fc.bias"],
    }
    put("torch_checkpoint", "ours.safetensors", b"\x01" + safetensors(ours, {"format": "attndet"}))


def image_seeds():
    g = torch.Generator().manual_seed(1)
    rgb = Image.fromarray((torch.rand(12, 10, 3, generator=g) * 255).byte().numpy(), "RGB")

    def save(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    put("image_decode", "rgb.png", save(rgb, "PNG"))
    put("image_decode", "grey.png", save(rgb.convert("L"), "PNG"))
    put("image_decode", "palette.png", save(rgb.convert("P"), "PNG"))
    put("image_decode", "rgba_interlaced.png", save(rgb.convert("RGBA"), "PNG", interlace=1))
    put("image_decode", "grey16.png", save(rgb.convert("L").convert("I;16"), "PNG"))
    put("image_decode", "baseline.jpg", save(rgb, "JPEG", quality=80))
    put("image_decode", "progressive.jpg", save(rgb, "JPEG", quality=60, progressive=True))
    put("image_decode", "grey.jpg", save(rgb.convert("L"), "JPEG"))


def record_seeds():
    put("record", "valid", b"\x01")
    put("record", "one_edit", b"\x01" + struct.pack("<H", 40) + b"\x00")


if __name__ == "__main__":
    torch_seeds()
    image_seeds()
    record_seeds()
    for t in sorted(os.listdir(os.path.join(HERE, "seeds"))):
        names = sorted(os.listdir(os.path.join(HERE, "seeds", t)))
        print(t, len(names), "seeds")
