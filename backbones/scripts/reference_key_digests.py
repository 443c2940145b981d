#!/usr/bin/env python3
"""Digest the reference state_dict key lists of the ResNet family into a small test fixture.

The reference file (shared/reference/backbone_state_dicts.json, 2 MB: every key and shape of every reference
model, taken from the authors' PyTorch code) is too large to commit. For each ResNet-family model this keeps the
key count and an FNV-1a 64-bit digest of its sorted "key:shape" lines, which tests/resnet_keys.rs recomputes from
our models' exported reference names.

Usage: python3 backbones/scripts/reference_key_digests.py ../shared/reference/backbone_state_dicts.json \
           > backbones/tests/fixtures/resnet_key_digests.json
"""
import json
import sys


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def lines(state_dict):
    return sorted(f"{k}:{','.join(str(d) for d in shape)}" for k, shape in state_dict)


def main():
    ref = json.load(open(sys.argv[1]))
    out = {}
    for name, entry in sorted(ref.items()):
        repo, model = name.split("/")
        if repo == "sda" or "resnet" not in model:
            continue
        text = "\n".join(lines(entry["state_dict"]))
        out[name] = {"keys": len(entry["state_dict"]), "params": entry["params"], "fnv1a64": f"{fnv1a64(text.encode()):016x}"}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
