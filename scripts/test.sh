#!/usr/bin/env bash
# The test command: starts Postgres/Redis if needed, clears the databases the
# previous run created, and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh

# The browser tests (tests/src/browser.rs) drive Debian's headless chromium
# through its chromedriver: on a fresh Debian machine install them (as root).
if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } &&
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium and chromedriver"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk >/dev/null
fi

# Each test creates its own wxpay_test_* database; drop the last run's.
admin="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
psql -q "$admin" -At -c "SELECT datname FROM pg_database WHERE datname LIKE 'wxpay_test_%'" 2>/dev/null |
  while read -r db; do psql -q "$admin" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true; done

# The end-to-end tests (tests/) run the service binaries as child processes:
# build them first (the console's browser test runs `console` and the product binary
# `wxpay`), so a compile error shows here rather than inside a test.
cargo build --bins -p wechat-sandbox -p payment-service -p gateway -p poller -p console -p wxpay

cargo test --workspace "$@"
