#!/usr/bin/env bash
# Run every fuzz target of attndet-coco (or the TARGETs named) for SECONDS each (default 600) and print one line
# per target: executions, coverage, when the coverage last grew and whether it had reached a plateau.
#   coco/fuzz/run_all.sh [SECONDS] [TARGET...]     (cargo install cargo-fuzz; nightly toolchain)
# The corpus grows under corpus/TARGET (ignored by git), so a second run goes on where the first stopped;
# the full output of each target is in logs/TARGET.log and crashes are saved under artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(coco_json results_json rle_string polygon)
failed=0
for t in "${targets[@]}"; do
  ../../tests/scripts/fuzz_target.sh . "$t" "$secs" || failed=1
done
exit "$failed"
