#!/usr/bin/env bash
# The long form of tests/tests/fault_injection.rs: kill -9 a tiny training ROUNDS times at pseudo-random
# moments (iterations, checkpoint writes, evaluation), resuming each time, then check that the final model is
# bit-identical to an uninterrupted run and that nothing temporary is left. The suite runs 3 rounds.
#
#   tests/scripts/fault_injection.sh [ROUNDS]      (default 30)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-30}"
cargo build -p attndet
start=$(date +%s)
ATTNDET_FAULT_ROUNDS="$rounds" cargo test -p attndet-tests --test fault_injection -- --nocapture 2>&1 \
  | grep -E "kills over|test result|panicked|differs|left behind"
echo "fault injection: $rounds rounds in $(( $(date +%s) - start )) s"
