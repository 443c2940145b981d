#!/usr/bin/env python3
"""A tiny PyTorch checkpoint that does not fit resnet18, for tests/resnet_model.rs.

It has the layout of released training checkpoints ({"state_dict": {"module.<key>": tensor}, "epoch": ...}) with
one key of the wrong shape (conv1.weight 3x3 instead of 7x7), one unknown key and most keys missing.

Usage: python3 backbones/scripts/make_wrong_checkpoint.py backbones/tests/fixtures/wrong_arch.pth.tar
"""
import sys

import torch

state = {
    "module.conv1.weight": torch.zeros(64, 3, 3, 3),
    "module.bn1.weight": torch.ones(64),
    "module.bn1.bias": torch.zeros(64),
    "module.bn1.running_mean": torch.zeros(64),
    "module.bn1.running_var": torch.ones(64),
    "module.bn1.num_batches_tracked": torch.tensor(0),
    "module.attention.extra.weight": torch.zeros(2),
}
torch.save({"state_dict": state, "epoch": 3, "arch": "not_resnet18"}, sys.argv[1])
