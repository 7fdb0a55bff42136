#!/usr/bin/env bash
# Runs the whole product locally against the offline WeChat sandbox:
# wechat-sandbox, payment-service, gateway, poller and the operator console as
# separate processes, on the local Postgres (database `wxpay`, created if missing) and Redis.
# Settings come from .env when present, else from .env.example. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
set -a
# shellcheck disable=SC1091
if [ -f .env ]; then . ./.env; else . ./.env.example; fi
set +a
# The console's users, and its cookie over plain http on loopback (dev only).
export CONSOLE_USERS_FILE="${CONSOLE_USERS_FILE:-./data/console-users.toml}"
export CONSOLE_INSECURE_COOKIE="${CONSOLE_INSECURE_COOKIE:-1}"

admin="${DATABASE_URL%/*}/postgres"
db="${DATABASE_URL##*/}"; db="${db%%\?*}"
psql -q "$admin" -At -c "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
  psql -q "$admin" -c "CREATE DATABASE \"$db\"" >/dev/null

cargo build --bins -p wechat-sandbox -p payment-service -p gateway -p poller -p console

# The console's first operator, once: its password is printed here and kept nowhere else.
if [ ! -s "$CONSOLE_USERS_FILE" ]; then
  mkdir -p "$(dirname "$CONSOLE_USERS_FILE")"
  echo "creating the console's first operator in $CONSOLE_USERS_FILE:"
  target/debug/console add-user operator --role operator </dev/null
fi

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
for bin in wechat-sandbox payment-service gateway poller console; do
  "target/debug/$bin" &
  pids+=("$!")
  sleep 0.5
done
cat <<MSG

  sandbox          http://${SANDBOX_ADDR}      (control API under /sandbox/)
  payment-service  grpc://${PAYMENT_ADDR}
  gateway          http://${GATEWAY_ADDR}      (WeChat notifications)
  poller           grpc://${POLLER_ADDR}
  console          http://${CONSOLE_ADDR}      (the operator console; users in ${CONSOLE_USERS_FILE})

  try: cargo run -p payment-service --example create_order -- http://${PAYMENT_ADDR}
       curl -X POST http://${SANDBOX_ADDR}/sandbox/orders/<out_trade_no>/pay -H 'content-type: application/json' -d '{}'
MSG
wait -n "${pids[@]}"
