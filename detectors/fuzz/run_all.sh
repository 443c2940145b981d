#!/usr/bin/env bash
# Run every fuzz target of attndet-detectors (or the TARGETs named) for SECONDS each (default 600) and print one
# line per target: executions, coverage, when the coverage last grew and whether it had reached a plateau.
#   detectors/fuzz/run_all.sh [SECONDS] [TARGET...]     (cargo install cargo-fuzz; nightly toolchain)
# The corpus of each target starts from seeds/TARGET (make_seeds.py) and, for `config`, the repository's
# configs; it grows under corpus/ (ignored by git), so a second run goes on where the first stopped. The full
# output of each target is in logs/TARGET.log and crashes are saved under artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config image_decode torch_checkpoint record)
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  [ -d "seeds/$t" ] && cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  if [ "$t" = config ]; then
    find ../../configs -name '*.json' | while read -r f; do cp -n "$f" "corpus/config/$(echo "$f" | tr / _)"; done
  fi
  ../../tests/scripts/fuzz_target.sh . "$t" "$secs" -max_len=65536 || failed=1
done
exit "$failed"
