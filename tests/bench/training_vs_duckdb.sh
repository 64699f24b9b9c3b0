#!/usr/bin/env bash
# Benchmark: `weft batch training-set` against the same point-in-time
# features written as DuckDB SQL (tests/bench/training_duckdb.py: a join of
# the labels with the archive, "known at t" filters, window filters with
# the bucket-aligned trailing edge, dedup by event id), over the same
# Parquet archive, both on all cores:
#
#   tests/bench/training_vs_duckdb.sh [USERS] [EVENTS] [LABEL_ROWS]
#                                     (default 1000000 10000000 1000000)
#
# 1. `weft gen`: the archive (with simulated arrival times);
# 2. DuckDB draws LABEL_ROWS label rows (users with repetition, times over
#    the data's span);
# 3. ROUNDS rounds (default 3), alternating: weft (--only the 9 features the
#    SQL computes), then DuckDB; wall time and peak RSS of each
#    (/usr/bin/time); the outputs compared row by row (every row must
#    agree).
# Environment: WORK_DIR, BENCH_BIN, KEEP_DATA=1 (tests/bench/lib.sh),
# ROUNDS, THREADS (default: the cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
users=${1:-1000000}
events=${2:-10000000}
rows=${3:-1000000}
threads=${THREADS:-$(nproc)}

bench_init weft-training-bench --no-tool
require python3
data_dirs=(archive)
outputs="training.md, *.log, labels.parquet"
py=tests/bench/training_duckdb.py
features=views_1h,views_24h,views_7d,searches_24h,carts_7d,purchases_90d,spend_90d,big_purchases_90d,max_cart_price_30d

echo "training set vs DuckDB: $users users, $events events, $rows label rows, $threads threads, $(date -u +%F), work dir $work"
gen_events "$users" "$events"
python3 "$py" labels "$work/archive" "$work/labels.parquet" "$rows" >"$work/labels.log"
echo "  $(cat "$work/labels.log")"

# peak RSS (MiB) and wall seconds of a command, from /usr/bin/time -v.
measure() {
  local log=$1
  shift
  /usr/bin/time -v "$@" >"$log" 2>&1 || { tail -20 "$log"; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ { print int($2 / 1024) }' "$log")
  echo "$wall $rss"
}

{
  echo "| round | weft s | weft peak MiB | DuckDB s | DuckDB peak MiB | weft / DuckDB time |"
  echo "|---|---|---|---|---|---|"
} | tee "$work/training.md"
for round in $(seq "${ROUNDS:-3}"); do
  read -r w_s w_rss < <(measure "$work/weft-$round.log" "$bin" batch training-set \
    --archive "$work/archive" --features "$spec" --labels "$work/labels.parquet" \
    --out "$work/weft.parquet" --only "$features" --partitions "$threads")
  read -r d_s d_rss < <(measure "$work/duckdb-$round.log" python3 "$py" features \
    "$work/archive" "$work/labels.parquet" "$work/duckdb.parquet" "$threads")
  ratio=$(python3 -c "print(f'{$w_s / $d_s:.2f}')")
  echo "| $round | $w_s | $w_rss | $d_s | $d_rss | $ratio |" | tee -a "$work/training.md"
done
python3 "$py" compare "$work/weft.parquet" "$work/duckdb.parquet" | tee -a "$work/training.md"
