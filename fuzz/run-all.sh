#!/usr/bin/env bash
# Usage: fuzz/run-all.sh SECONDS [libFuzzer options…]
#
# Runs every fuzz target for SECONDS each, one after another (see run.sh),
# prints each one's totals, and stops at the first that fails, showing the
# end of its log. SECONDS=0 runs the committed seeds once (regression).
set -euo pipefail
if [ "$#" -lt 1 ]; then
  echo "usage: $0 SECONDS [libFuzzer options...]" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
secs=$1
shift
logs="${FUZZ_WORK:-$here/work}/logs"
mkdir -p "$logs"
targets=(xml_decode xml_roundtrip notify_judge refund_req_info cloudpay_json cloudpay_forwarder orderquery_reply v3_notify)
for target in "${targets[@]}"; do
  log="$logs/$target.log"
  echo "== fuzz $target (${secs}s), log $log"
  if "$here/run.sh" "$target" "$secs" "$@" >"$log" 2>&1; then
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
  else
    status=$?
    tail -n 60 "$log" >&2
    echo "fuzz $target FAILED (exit $status); crash inputs in $here/artifacts/$target/" >&2
    echo "fuzz: 0 passed, 1 failed"
    exit "$status"
  fi
done
echo "fuzz: ${#targets[@]} passed, 0 failed"
