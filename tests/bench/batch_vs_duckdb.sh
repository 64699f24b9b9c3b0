#!/usr/bin/env bash
# Benchmark: `weft batch run` against DuckDB computing the same per-user,
# per-bucket aggregates over the same Parquet archive (issue: batch layer;
# goal: weft/DuckDB <= 1.0, the full Weft run including writing the view
# against DuckDB's aggregation alone).
#
#   tests/bench/batch_vs_duckdb.sh [EVENTS] [USERS] [MEMORY_MB]
#
# Builds the release binary, generates EVENTS events (default 10M) for USERS
# users (default 1M) into a temporary archive, then runs, one after the
# other on the same archive:
#   1. DuckDB: tests/bench/duckdb_profiles.py (dedup + 17 feature aggregates)
#   2. weft batch run (check, boundary, sort, fold, recommendations, SST
#      files, checksums, publish)
# each under /usr/bin/time for wall time and peak RSS, both with the same
# memory budget (default 2048 MB) and all cores. Prints the ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
events=${1:-10000000}
users=${2:-1000000}
memory=${3:-2048}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
cargo build --release --bin weft >/dev/null 2>&1
bin="$CARGO_TARGET_DIR/release/weft"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
spec=deploy/features.example.toml
echo "batch vs DuckDB: $events events, $users users, spec $spec, memory ${memory} MB, $(nproc) cores, $(date -u +%F)"
"$bin" gen --events "$events" --users "$users" --quiet --parquet "$out/archive"
echo "  archive: $(du -sh "$out/archive" | cut -f1), $(find "$out/archive" -name '*.parquet' | wc -l) files"
sync

fmt="wall %e s, peak RSS %M KiB"
/usr/bin/time -o "$out/duck.time" -f "$fmt" python3 tests/bench/duckdb_profiles.py "$out/archive" "$spec" \
  --memory-limit "${memory}MB" >"$out/duck.txt" 2>"$out/duck.err" || {
  echo "  duckdb failed: $(tail -3 "$out/duck.err")"; exit 1; }
duck=$(tail -1 "$out/duck.time")
echo "  duckdb: $(grep '^duckdb:' "$out/duck.txt")"
echo "          $duck"
/usr/bin/time -o "$out/weft.time" -f "$fmt" "$bin" batch run --archive "$out/archive" --features "$spec" \
  --views "$out/views" --memory-mb "$memory" --spill-dir "$out" >"$out/weft.txt" 2>"$out/weft.err" || {
  echo "  weft failed: $(tail -3 "$out/weft.err")"; exit 1; }
weft=$(tail -1 "$out/weft.time")
echo "  weft:   $(cat "$out/weft.txt")"
echo "          $weft"
dw=$(echo "$duck" | sed -E 's/wall ([0-9.]+) s.*/\1/')
ww=$(echo "$weft" | sed -E 's/wall ([0-9.]+) s.*/\1/')
echo "  ratio weft/duckdb (wall): $(python3 -c "print(f'{$ww / $dw:.2f}')")"
