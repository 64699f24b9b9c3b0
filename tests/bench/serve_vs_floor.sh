#!/usr/bin/env bash
# Benchmark: GetProfile through `weft serve` against the floor (a bare tonic
# server answering one fixed profile: the cost of tonic alone) and against
# Redis holding every profile pre-encoded; then produce → visible freshness.
#
#   tests/bench/serve_vs_floor.sh [USERS] [EVENTS]
#
# Builds the release binary, then, all on this machine:
#   1. a Tansu broker (memory storage) on a free port, topic `events` with
#      8 partitions (tests/bench/lib.sh has the shared steps);
#   2. `weft gen`: EVENTS events (default 10M) for USERS users (default 1M)
#      of one tenant (acme), written to the Parquet archive *and* produced
#      to `events`, so the archive's (_partition, _offset) are the topic's;
#   3. `weft batch run`: batch view v1 over the archive;
#   4. `weft serve` over that view and the topic (its speed layer starts
#      after the view's offsets), waited for until it serves v1 with no lag;
#   5. redis-server (no persistence) and `weft-bench floor`;
#   6. `weft-bench serve --load-redis`: floor, Redis and weft at a fixed rate
#      and flat out (docs in bench/src/serve/mod.rs);
#   7. `weft-bench freshness`: one event for a new user, polled until seen.
# Every process started here is stopped on exit.
#
# Environment:
#   WORK_DIR     work directory (default: a new /tmp/weft-serve-bench.XXXXXX)
#   BENCH_BIN    use this weft binary instead of building the release one
#                (not WEFT_*: `weft serve` reads those as configuration)
#   KEEP_DATA=1  keep the archive, views and RocksDB directories (default:
#                removed on exit; logs and results are always kept)
#   GEN_CHRT=P   run the load generator (`weft-bench serve`) under `chrt -f P`
#                (SCHED_FIFO, needs root): it then sends each request on
#                time instead of queueing for a core behind the servers it
#                measures (on a shared machine, its own scheduled → sent
#                delay otherwise reaches a p99 of 0.3-0.8 ms). Every target
#                is measured the same way.
#   SERVER_CHRT=P  also run every server (weft serve, the floor, Redis), all
#                their threads, under SCHED_FIFO priority P (below GEN_CHRT's,
#                so the generator still sends on time): what a latency-critical
#                service gets on a shared host. Tansu keeps the normal policy.
#   RATE, DURATION, WARMUP, CONCURRENCY, CONNECTIONS, ROUNDS, SAMPLES: passed to
#                `weft-bench serve` / `weft-bench freshness`
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
users=${1:-1000000}
events=${2:-10000000}

bench_init weft-serve-bench
require tansu redis-server redis-cli curl python3
data_dirs=(archive views speed serving)
outputs="serve.md, serve.json, freshness.md, freshness.json, *.log"
redis_port=$(free_port)
floor_port=$(free_port)

echo "serve vs floor: $users users, $events events, tenant $tenant, $(nproc) cores, $(date -u +%F), work dir $work"

# 1-3. Broker and topic, the same simulated events in the archive and the
#      topic, and the batch view of them.
view_of_generated "$users" "$events"

# 4. weft serve, serving v1 with no speed lag.
start_serve

# 5. Redis and the floor.
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >"$work/redis.log" 2>&1 &
pids+=($!)
redis_pid=$!
wait_for "redis" 30 "${pids[-1]}" redis-cli -p "$redis_port" ping
"$bench_bin" floor --listen "127.0.0.1:$floor_port" --from "127.0.0.1:$grpc_port" --key "$key" \
  --user u0000000 >"$work/floor.log" 2>&1 &
pids+=($!)
floor_pid=$!
wait_for "weft-bench floor" 60 "${pids[-1]}" port_open "$floor_port"
echo "  $(grep -m1 "^floor:" "$work/floor.log" || true)"

# 6. Floor vs Redis vs weft.
if [[ -n "${SERVER_CHRT:-}" ]]; then
  for p in "$serve_pid" "$floor_pid" "$redis_pid"; do chrt -a -f -p "$SERVER_CHRT" "$p" >/dev/null; done
  echo "  servers at SCHED_FIFO $SERVER_CHRT"
fi
echo
${GEN_CHRT:+chrt -f "$GEN_CHRT"} "$bench_bin" serve --weft "127.0.0.1:$grpc_port" --key "$key" --users "$users" \
  --floor "127.0.0.1:$floor_port" --redis "127.0.0.1:$redis_port" --load-redis \
  --weft-pid "$serve_pid" --floor-pid "$floor_pid" --redis-pid "$redis_pid" \
  ${RATE:+--rate "$RATE"} ${DURATION:+--duration-secs "$DURATION"} \
  ${WARMUP:+--warmup-secs "$WARMUP"} ${CONCURRENCY:+--concurrency "$CONCURRENCY"} \
  ${CONNECTIONS:+--connections "$CONNECTIONS"} ${ROUNDS:+--rounds "$ROUNDS"} \
  --json "$work/serve.json" 2>"$work/bench-serve.log" | tee "$work/serve.md" || {
  tail -20 "$work/bench-serve.log"; exit 1; }

# 7. Freshness.
echo
"$bench_bin" freshness --weft "127.0.0.1:$grpc_port" --key "$key" --bootstrap "$bootstrap" \
  --tenant "$tenant" ${SAMPLES:+--samples "$SAMPLES"} --json "$work/freshness.json" \
  2>"$work/bench-freshness.log" | tee "$work/freshness.md" || {
  tail -20 "$work/bench-freshness.log"; exit 1; }
echo
