#!/usr/bin/env bash
# One GetProfile's cost inside the server, stage by stage (`weft-bench
# lookup`): USERS users and EVENTS events of one tenant generated into a
# Parquet archive, one batch run into a view store, then the view read in
# process the way `weft serve` reads it, with no network and no broker.
#
#   tests/bench/lookup.sh [USERS] [EVENTS]     (default 1000000 10000000)
#
# With KEEP_DATA=1 WORK_DIR=D, a second run in D reuses D's view (for A/B
# runs of two binaries: BENCH_TOOL_BIN=..., the weft-bench that reads it).
# REQUESTS=N sets the requests per pass; LOOKUP_ARGS passes more options
# (e.g. "--features views_1h"); GEN_ARGS more options to `weft gen`: by
# default the events are those of September 2026, so at today's query time
# only the 90-day and lifetime windows hold any;
# GEN_ARGS="--start $(date -u -d '-30 days' +%F) --days 30" fills every window.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
users=${1:-1000000}
events=${2:-10000000}

bench_init weft-lookup-bench
data_dirs=(archive views)
outputs="lookup.md, *.log"

echo "lookup: $users users, $events events, tenant $tenant, $(date -u +%F), work dir $work"
if [[ -d $work/views ]]; then
  echo "  reusing the view store in $work/views"
else
  gen_events "$users" "$events"
  timed_batch_run "$work/archive" "$work/batch.log"
fi
echo
# shellcheck disable=SC2086 # LOOKUP_ARGS is a list of options
"$bench_bin" lookup --views "$work/views" --tenant "$tenant" --users "$users" \
  --work-dir "$work" ${REQUESTS:+--requests "$REQUESTS"} --per-feature ${LOOKUP_ARGS:-} \
  2>"$work/lookup.log" | tee "$work/lookup.md" || { tail -20 "$work/lookup.log"; exit 1; }
