#!/usr/bin/env bash
# Benchmark: `weft gen` writing the Parquet archive (target: >= 1M events/s).
#
#   tests/bench/gen_parquet.sh [EVENTS] [USERS]
#
# Builds the release binary, generates EVENTS events (default 10M) for USERS
# users (default 1M) into a temporary archive, and prints events/s, the
# archive's size and the peak RSS. Nothing is written outside a temp dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
events=${1:-10000000}
users=${2:-1000000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
cargo build --release --bin weft >/dev/null 2>&1
bin="$CARGO_TARGET_DIR/release/weft"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "weft gen: $events events, $users users, 4 tenants, 30 days -> Parquet ($(nproc) cores)"
/usr/bin/time -f "peak RSS %M KiB, wall %e s, user %U s, sys %S s" \
  "$bin" gen --events "$events" --users "$users" --quiet --parquet "$out/archive" 2>&1 | sed 's/^/  /'
echo "  archive: $(du -sh "$out/archive" | cut -f1), $(find "$out/archive" -name '*.parquet' | wc -l) files"
