#!/usr/bin/env bash
# Run every fuzz target of attndet-coco for SECONDS each (default 600) and print executions and coverage.
#   coco/fuzz/run_all.sh [SECONDS]        (cargo install cargo-fuzz; nightly toolchain)
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
for t in coco_json results_json rle_string polygon; do
  mkdir -p "corpus/$t"
  # a crash or out-of-memory stops that target (its input is saved under artifacts/), not the others
  (cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 || true) \
    | grep -E "^#[0-9]+.*(DONE|pulse)|Done|ERROR|panicked|SUMMARY" | tail -2 | sed "s/^/$t: /" || true
done
