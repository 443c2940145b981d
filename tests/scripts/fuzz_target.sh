#!/usr/bin/env bash
# Run one cargo-fuzz target for SECONDS and print one summary line; what `coco/fuzz/run_all.sh` and
# `detectors/fuzz/run_all.sh` call for each of their targets.
#   tests/scripts/fuzz_target.sh FUZZ_DIR TARGET SECONDS [LIBFUZZER_FLAG...]
# The whole libFuzzer output goes to FUZZ_DIR/logs/TARGET.log, each line prefixed with the seconds since the
# start, so that the coverage curve can be read back. The summary line says whether the coverage had stopped
# growing: `last new coverage` is when the edge count (`cov:`) last grew; a plateau is a run whose last quarter
# found no new edge. A crash or out-of-memory stops the target (its input is saved under
# FUZZ_DIR/artifacts/TARGET/) and the line says so; the caller goes on with the next target. A target that
# does not build, or a run without a status line, is never reported as a plateau: exit 1 and `NO RUN`.
set -euo pipefail
dir="$1"
target="$2"
secs="$3"
shift 3
cd "$dir"
mkdir -p "corpus/$target" logs
log="logs/$target.log"
# -s none: coverage instrumentation without a sanitizer (the code is safe Rust; a panic is the finding).
# Built first, so that the times in the log are the fuzzing's own.
if ! cargo +nightly fuzz build -s none -O "$target" >"logs/$target.build.log" 2>&1; then
  printf '%-16s build failed: see %s/logs/%s.build.log\n' "$target" "$PWD" "$target"
  exit 1
fi
start=$SECONDS
(cargo +nightly fuzz run -s none -O "$target" "corpus/$target" -- -max_total_time="$secs" \
  -rss_limit_mb=2048 -print_final_stats=1 "$@" 2>&1 || true) |
  while IFS= read -r line; do printf '%d %s\n' "$((SECONDS - start))" "$line"; done >"$log"
# libFuzzer's status lines: "#EXECS <kind> cov: C ft: F corp: N/SIZE ... exec/s: R ..."
awk -v target="$target" -v secs="$secs" '
  $2 ~ /^#[0-9]+$/ && $0 ~ / cov: / {
    for (i = 3; i <= NF; i++) {
      if ($i == "cov:") cov = $(i + 1)
      if ($i == "ft:") ft = $(i + 1)
      if ($i == "corp:") corp = $(i + 1)
    }
    execs = substr($2, 2)
    if (cov + 0 > best + 0) { best = cov; gained = $1 }
  }
  /^[0-9]+ Done [0-9]+ runs in/ { execs = $3; took = $6 }
  /ERROR: libFuzzer|panicked at|SUMMARY: libFuzzer|deadly signal/ { crash = crash ? crash : $0 }
  END {
    if (took == "") took = secs
    sub(/\/.*/, "", corp)
    if (crash) status = "CRASH (" substr(crash, index(crash, " ") + 1) ")"
    else if (best == "") status = "NO RUN (no libFuzzer status line in the log)"
    else if (gained <= 0.75 * took) status = "plateau"
    else status = "still growing"
    printf "%-16s %7d s  %12d inputs  %8.0f/s  cov %6d  ft %6d  corpus %6d  last new coverage at %6d s  %s\n",
      target, took, execs, (took > 0 ? execs / took : 0), best, ft, corp, gained, status
  }' "$log"
