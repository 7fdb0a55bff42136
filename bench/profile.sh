#!/usr/bin/env bash
# Profiles one measured path of the benchmark with perf's software clock (the VM
# has no hardware counters): starts the release driver on that path alone
# (`--only`), and when it prints its "-- measuring" marker records every CPU of
# the machine (driver + services, Postgres, Redis) for 4 s inside the 5 s window.
#
#   bench/profile.sh service create        # CreateOrder through payment-service
#   bench/profile.sh ceiling create        # the raw INSERT
#   bench/profile.sh distinct notify       # distinct paid notifications
#   bench/profile.sh duplicates notify     # duplicates
#
# Output: /tmp/wxpay-prof/PART.data, then a summary per process and per code area.
set -euo pipefail
part=${1:?part: service|ceiling|distinct|duplicates}
scenario=${2:?scenario: create|notify}
root=$(cd "$(dirname "$0")/.." && pwd)
out=/tmp/wxpay-prof
mkdir -p "$out"
: >"$out/$part.out"
cargo build --release -p wxpay-bench --manifest-path "$root/Cargo.toml" >/dev/null 2>&1
"$root/target/release/wxpay-bench" --only "$part" "$scenario" 2>&1 | while IFS= read -r line; do
    printf '%s\n' "$line" >>"$out/$part.out"
    case $line in
    "-- measuring"*) perf record -q -e cpu-clock -F 999 -a -g -o "$out/$part.data" -- sleep 4 ;;
    esac
done
grep -E '^\| (CreateOrder|ceiling|distinct|duplicates)' "$out/$part.out" | grep -v 'not run' || true
echo "-- CPU by process (% of all samples on both cores; swapper = idle)"
perf report -i "$out/$part.data" --no-children -g none --sort comm --stdio 2>/dev/null | grep '%' | head -6
echo "-- the driver+services process (tokio-rt-worker) by code area"
perf report -i "$out/$part.data" --no-children -g none --comms tokio-rt-worker --sort dso,sym --stdio 2>/dev/null |
    python3 "$root/bench/perf_group.py"
echo "-- system calls (children; both processes)"
perf report -i "$out/$part.data" --children -g none --comms tokio-rt-worker,postgres --sort comm,sym --stdio 2>/dev/null |
    grep -E '__x64_sys_' | head -10
echo "-- postgres, top symbols"
perf report -i "$out/$part.data" --no-children -g none --comms postgres --sort sym --stdio 2>/dev/null | grep '%' | head -10
