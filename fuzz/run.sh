#!/usr/bin/env bash
# Usage: fuzz/run.sh TARGET SECONDS [libFuzzer options…]
#
# Builds one fuzz target with stable rustc's SanitizerCoverage instrumentation
# (the flags `cargo fuzz build --sanitizer none` passes, without needing
# cargo-fuzz or a nightly toolchain) and runs libFuzzer (from the
# libfuzzer-sys crate) on it for SECONDS, starting from the committed seeds in
# fuzz/corpus/TARGET. New inputs go to fuzz/work/TARGET (not committed; set
# FUZZ_WORK to move it), crashes to fuzz/artifacts/TARGET/. Exits non-zero when
# a property fails, a panic, a timeout (10 s for one input) or an
# out-of-memory (2 GiB) is found. SECONDS=0 runs each seed once (regression),
# or, given files (`fuzz/run.sh T 0 fuzz/artifacts/T/crash-…`), just those.
#
# FUZZ_SANITIZER=address adds AddressSanitizer; rustc only has it behind
# RUSTC_BOOTSTRAP=1 on stable, which this then sets. Off by default: the code
# under test is safe Rust.
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 TARGET SECONDS [libFuzzer options...]" >&2
  exit 2
fi
target=$1
secs=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$here/corpus/$target" ]; then
  echo "unknown target $target (no $here/corpus/$target)" >&2
  exit 2
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
flags="-Cpasses=sancov-module"
flags+=" -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
flags+=" -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
flags+=" --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Ccodegen-units=1"
sub=release
if [ "${FUZZ_SANITIZER:-none}" = address ]; then
  export RUSTC_BOOTSTRAP=1
  flags+=" -Zsanitizer=address"
  sub=release-asan
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}/$sub"

# --target keeps these flags off build scripts and proc macros, as cargo fuzz does.
RUSTFLAGS="$flags ${RUSTFLAGS:-}" cargo build --quiet --locked --release \
  --manifest-path "$here/Cargo.toml" --target "$triple" --bin "$target"
bin="$CARGO_TARGET_DIR/$triple/release/$target"

work="${FUZZ_WORK:-$here/work}/$target"
artifacts="$here/artifacts/$target"
mkdir -p "$work" "$artifacts"
if [ "$secs" = 0 ]; then
  for arg in "$@"; do
    case $arg in
      -*) ;;
      # Files named: replay just those (a crash input from artifacts/).
      *) exec "$bin" -timeout=10 -rss_limit_mb=2048 "$@" ;;
    esac
  done
  # Each committed seed once, as a regression test.
  exec "$bin" -runs=0 -timeout=10 -rss_limit_mb=2048 "$@" "$here/corpus/$target"
fi
exec "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$@" \
  "$work" "$here/corpus/$target"
