#!/usr/bin/env bash
# Benchmark: freshness through the event collector against producing to
# Kafka directly, in one run against one `weft serve`:
#
#   tests/bench/collector_freshness.sh [USERS] [EVENTS]   (default 100000 1000000)
#
#   1. a Tansu broker (memory storage), topic `events` (8 partitions);
#   2. `weft gen`: EVENTS events for USERS users of one tenant, to the
#      archive and the topic; 3. `weft batch run`: view v1;
#   4. `weft serve`, waited for until it serves v1 with no lag;
#   5. `weft-bench freshness` ROUNDS times (default 2) each way, alternating:
#      an event for a new user produced to Kafka (the floor: what the speed
#      layer alone takes), then posted to `POST /v1/events` (a new HTTP
#      connection each, answered once the broker acknowledged), polled in
#      GetProfile every millisecond until seen. The goal: p99 <= 100 ms.
#
# Environment: WORK_DIR, BENCH_BIN, KEEP_DATA=1, SAMPLES (per round), ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
users=${1:-100000}
events=${2:-1000000}

bench_init weft-collector-bench
require tansu curl python3
data_dirs=(archive views speed serving)
outputs="freshness-*.md, *.log"

echo "collector freshness: $users users, $events events, tenant $tenant, $(nproc) cores, $(date -u +%F), work dir $work"
view_of_generated "$users" "$events"
start_serve

for round in $(seq 1 "${ROUNDS:-2}"); do
  for way in kafka collector; do
    via=()
    [[ $way == collector ]] && via=(--collector "http://127.0.0.1:$http_port")
    echo
    echo "round $round, $way:"
    "$bench_bin" freshness --weft "127.0.0.1:$grpc_port" --key "$key" --bootstrap "$bootstrap" \
      --tenant "$tenant" ${SAMPLES:+--samples "$SAMPLES"} "${via[@]}" \
      2>"$work/bench-freshness-$way-$round.log" | tee "$work/freshness-$way-$round.md" || {
      tail -20 "$work/bench-freshness-$way-$round.log"; exit 1; }
  done
done
