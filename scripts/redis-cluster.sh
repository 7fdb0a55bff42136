#!/usr/bin/env bash
# A local Redis Cluster for trying the scale-out path (and for the cluster rows
# of the benchmarks): three masters with a replica each on 127.0.0.1, nothing
# kept on disk but each node's nodes.conf.
#
#   scripts/redis-cluster.sh start [BASE_PORT]   # default 7100: ports 7100-7105
#   scripts/redis-cluster.sh stop  [BASE_PORT]
#
# `start` prints the REDIS_CLUSTER_URLS value to give the services, e.g.
#   REDIS_CLUSTER_URLS=$(scripts/redis-cluster.sh start) cargo run
# The end-to-end test (tests/tests/redis_cluster.rs) starts its own cluster the
# same way on free ports.
set -euo pipefail

cmd="${1:-start}"
base="${2:-7100}"
dir="${TMPDIR:-/tmp}/wxpay-redis-cluster-$base"
ports=$(seq "$base" $((base + 5)))

case "$cmd" in
start)
  command -v redis-server >/dev/null || { echo "redis-server is not installed (Debian: apt-get install redis-server)" >&2; exit 1; }
  mkdir -p "$dir"
  for p in $ports; do
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "nodes-$p.conf" --cluster-node-timeout 2000 \
      --save "" --appendonly no --repl-diskless-sync-delay 0 \
      --dir "$dir" --daemonize yes --logfile "$dir/$p.log" --pidfile "$dir/$p.pid" >/dev/null
  done
  for p in $ports; do
    for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
  done
  nodes=""
  for p in $ports; do nodes="$nodes 127.0.0.1:$p"; done
  # shellcheck disable=SC2086 # one argument per node
  redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
    || { cat "$dir/create.log" >&2; exit 1; }
  for _ in $(seq 200); do
    redis-cli -p "$base" cluster info | grep -q cluster_state:ok && break
    sleep 0.1
  done
  urls=""
  for p in $ports; do urls="${urls:+$urls,}redis://127.0.0.1:$p"; done
  echo "$urls"
  ;;
stop)
  for p in $ports; do
    [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
  done
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop [BASE_PORT]" >&2
  exit 2
  ;;
esac
