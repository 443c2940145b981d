#!/usr/bin/env python3
"""Read a work dir's TensorBoard event files with TensorBoard itself and compare them with its log.jsonl.

    pip install tensorboard
    attndet train CONFIG --work-dir W --cfg-options log_config.tensorboard=true
    python3 tools/scripts/check_tensorboard.py W

Every `train` line of log.jsonl must appear as the scalars train/loss, train/<term>, train/lr, ... at its
global iteration, and every `val` line as val/<kind>_<figure> at the step of the training line before it,
the values equal as float32. Prints the tags found and exits 1 on the first difference.
"""

import json
import sys
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

COCO = ["mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l", "AR@1", "AR@10", "AR@100", "AR_s@100",
        "AR_m@100", "AR_l@100"]
PROPOSAL = ["AR@100", "AR@300", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000"]


def expected(work: Path):
    """(tag, step) -> value from log.jsonl."""
    out, step = {}, 0
    for line in (work / "log.jsonl").read_text().splitlines():
        v = json.loads(line)
        if v["mode"] == "train":
            step = v["global_iter"]
            scalars = [("train/loss", v["loss"])] + [(f"train/{n}", x) for n, x in v["terms"]]
            scalars.append(("train/lr", v["lr"]))
            if v.get("grad_norm") is not None:
                scalars.append(("train/grad_norm", v["grad_norm"]))
            scalars += [("train/time", v["time"]), ("train/data_time", v["data_time"]),
                        ("train/memory_mb", v["memory_mb"])]
        elif v["mode"] == "val":
            scalars = []
            for kind, stats in v["stats"].items():
                names = PROPOSAL if kind == "proposal" else COCO
                scalars += [(f"val/{kind}_{n}", x) for n, x in zip(names, stats)]
        else:
            continue
        for tag, x in scalars:
            out[(tag, step)] = x
    return out


def main():
    work = Path(sys.argv[1])
    acc = EventAccumulator(str(work / "tf_logs"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    got = {(t, e.step): e.value for t in tags for e in acc.Scalars(t)}
    want = expected(work)
    print(f"{len(tags)} tags, {len(got)} scalars read by TensorBoard; {len(want)} expected from log.jsonl")
    print(" ".join(sorted(tags)))
    for key, x in sorted(want.items()):
        if key not in got:
            print(f"missing: {key}")
            sys.exit(1)
        if np.float32(x) != np.float32(got[key]):
            print(f"differs: {key}: {got[key]} in the event file, {x} in log.jsonl")
            sys.exit(1)
    extra = set(got) - set(want)
    if extra:
        print(f"not in log.jsonl: {sorted(extra)[:5]}")
        sys.exit(1)
    print("OK: every logged scalar is in the event files with its value and step")


if __name__ == "__main__":
    main()
