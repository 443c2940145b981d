#!/usr/bin/env python3
"""CPU latency of mobilenet_v2, dca_se_mobilenet_v2 and sda_resnet86: attndet (burn, Flex CPU backend) against the
authors' PyTorch code, in one run, same thread count, batch 1, classification forward.

Usage (from the repository root):
    python3 bench/backbones/mobile_latency.py --dcanet /path/to/DCANet --sda /path/to/SDA-xNet \
        [--threads 2] [--size 224] [--iters 10] [--profile dev|release]

The authors' code is read from the given checkouts (never copied here). Our side runs
`cargo run --example mobile_latency` of attndet-backbones with RAYON_NUM_THREADS set to --threads.
"""
import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import types

import torch

MODELS = [
    # (zoo name, repository, package dir inside it, module, function)
    ("mobilenet_v2", "dcanet", "models/mobilenet", "mobilenet_old", "old_mobilenet_v2"),
    ("dca_se_mobilenet_v2", "dcanet", "models/mobilenet", "mobilenet_se_dca", "dca_se_mobilenet_v2"),
    ("sda_resnet86", "sda", "SDA-ResNet/models/resnet", "resnet_at", "resnet50"),
]


def load(checkout, package_dir, module, function):
    alias = "bench_" + package_dir.replace("/", "_").replace("-", "_")
    if alias not in sys.modules:
        pkg = types.ModuleType(alias)
        pkg.__path__ = [os.path.join(checkout, package_dir)]
        sys.modules[alias] = pkg
    return getattr(importlib.import_module(f"{alias}.{module}"), function)(num_classes=1000)


def torch_latency(model, size, iters, warmup):
    model.eval()
    x = torch.full((1, 3, size, size), 0.5)
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def ours(names, size, iters, warmup, threads, profile):
    cmd = ["cargo", "run", "-q", "-p", "attndet-backbones", "--example", "mobile_latency"]
    if profile == "release":
        cmd.append("--release")
    cmd += ["--", "--size", str(size), "--iters", str(iters), "--warmup", str(warmup)] + names
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {r["model"]: (r["median_ms"], r["min_ms"]) for r in rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dcanet", required=True, help="checkout of ma-xu/DCANet")
    ap.add_argument("--sda", required=True, help="checkout of QingbeiGuo/SDA-xNet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate PyTorch and attndet this many times; each side's best round counts (a shared "
                         "machine's load comes and goes)")
    ap.add_argument("--profile", choices=["dev", "release"], default="dev",
                    help="cargo profile of our side (dev: dependencies at opt-level 3, our crate at 1)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    checkouts = {"dcanet": args.dcanet, "sda": args.sda}
    models = {name: load(checkouts[repo], d, module, fn) for name, repo, d, module, fn in MODELS}
    reference, burn = {}, {}
    for _ in range(args.rounds):
        for name in models:
            t = torch_latency(models[name], args.size, args.iters, args.warmup)[0]
            reference[name] = min(reference.get(name, t), t)
        for name, (median, _) in ours(list(models), args.size, args.iters, args.warmup, args.threads,
                                       args.profile).items():
            burn[name] = min(burn.get(name, median), median)
    load_avg = os.getloadavg()[0]
    print(f"CPU, batch 1, {args.size}x{args.size}, {args.threads} threads, best of {args.rounds} rounds of the median "
          f"of {args.iters} (our side: cargo {args.profile} profile), torch {torch.__version__}, "
          f"load average {load_avg:.1f}")
    print(f"{'model':<22} {'PyTorch ms':>11} {'attndet ms':>11} {'ratio':>7}")
    results = []
    for name, *_ in MODELS:
        t, b = reference[name], burn[name]
        print(f"{name:<22} {t:>11.1f} {b:>11.1f} {b / t:>6.2f}x")
        results.append({"model": name, "torch_ms": t, "attndet_ms": b, "ratio": b / t})
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"threads": args.threads, "size": args.size, "profile": args.profile, "load_average": load_avg,
                       "results": results}, f,
                      indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
