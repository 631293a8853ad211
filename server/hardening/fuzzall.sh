#!/usr/bin/env bash
# Runs every fuzz target of feedgate for FUZZTIME each and prints the inputs
# each one ran. Usage: server/hardening/fuzzall.sh [FUZZTIME]
# FUZZTIME is a count of inputs ("30000x", the default, as CI runs it) or a
# duration ("10m", by hand). CI uses counts: with a duration, Go's fuzzing
# coordinator can fail a run with "context deadline exceeded" when a worker
# is still busy as the time runs out, although no input failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
t=${1:-30000x}
targets=(
  "./server/broker FuzzParseRetryAfter"
  "./server/broker/upstox FuzzClassify"
  "./server/broker/upstox FuzzDecode"
  "./server/broker/fyers FuzzClassify"
  "./server/broker/fyers FuzzJWTClaims"
  "./server/broker/fyers FuzzEpochMs"
  "./server/seal FuzzSealOpen"
  "./server/api FuzzRequestValidation"
  "./server/gateway FuzzOAuthCallback"
)
for tg in "${targets[@]}"; do
  set -- $tg
  # Minimizing a new interesting input is bounded by executions, not time:
  # a time-bounded minimization can outlast -fuzztime and fail the run
  # with "context deadline exceeded" although nothing failed.
  out=$(go test -run '^$' -fuzz "^$2\$" -fuzztime "$t" -fuzzminimizetime 100x "$1" 2>&1) || { echo "$out"; echo "FAIL $1 $2"; exit 1; }
  execs=$(echo "$out" | grep -o 'execs: [0-9]*' | tail -1)
  echo "$1 $2: ${execs:-execs: $t} ($t)"
done
