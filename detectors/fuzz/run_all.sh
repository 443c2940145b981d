#!/usr/bin/env bash
# Run every fuzz target of attndet-detectors for SECONDS each (default 600) and print executions and coverage.
#   detectors/fuzz/run_all.sh [SECONDS] [TARGET...]     (cargo install cargo-fuzz; nightly toolchain)
# The corpus of each target starts from seeds/TARGET (make_seeds.py) and, for `config`, the repository's
# configs; it grows under corpus/ (ignored by git). Crashes are saved under artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config image_decode torch_checkpoint record)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  [ -d "seeds/$t" ] && cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  if [ "$t" = config ]; then
    find ../../configs -name '*.json' | while read -r f; do cp -n "$f" "corpus/config/$(echo "$f" | tr / _)"; done
  fi
  # -s none: coverage instrumentation without a sanitizer (the code is safe Rust; a panic is the finding).
  # A crash or out-of-memory stops that target (its input is saved under artifacts/), not the others.
  (cargo +nightly fuzz run -s none -O "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
     -max_len=65536 2>&1 || true) \
    | grep -E "^#[0-9]+.*(DONE|pulse)|Done|ERROR|panicked|SUMMARY" | tail -2 | sed "s/^/$t: /" || true
done
