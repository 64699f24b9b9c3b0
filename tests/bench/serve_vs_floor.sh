#!/usr/bin/env bash
# Benchmark: GetProfile through `weft serve` against the floor (a bare tonic
# server answering one fixed profile: the cost of tonic alone) and against
# Redis holding every profile pre-encoded; then produce → visible freshness.
#
#   tests/bench/serve_vs_floor.sh [USERS] [EVENTS]
#
# Builds the release binary, then, all on this machine:
#   1. a Tansu broker (memory storage) on a free port, topic `events` with
#      8 partitions;
#   2. `weft gen`: EVENTS events (default 10M) for USERS users (default 1M)
#      of one tenant (acme), written to the Parquet archive *and* produced
#      to `events`, so the archive's (_partition, _offset) are the topic's;
#   3. `weft batch run`: batch view v1 over the archive;
#   4. `weft serve` over that view and the topic (its speed layer starts
#      after the view's offsets), waited for until it serves v1 with no lag;
#   5. redis-server (no persistence) and `weft bench floor`;
#   6. `weft bench serve --load-redis`: floor, Redis and weft at a fixed rate
#      and flat out (docs in src/bench_serve.rs);
#   7. `weft bench freshness`: one event for a new user, polled until seen.
# Every process started here is stopped on exit.
#
# Environment:
#   WORK_DIR     work directory (default: a new /tmp/weft-serve-bench.XXXXXX)
#   BENCH_BIN    use this weft binary instead of building the release one
#                (not WEFT_*: `weft serve` reads those as configuration)
#   KEEP_DATA=1  keep the archive, views and RocksDB directories (default:
#                removed on exit; logs and results are always kept)
#   RATE, DURATION, WARMUP, CONCURRENCY, CONNECTIONS, SAMPLES: passed to
#                `weft bench serve` / `weft bench freshness`
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
users=${1:-1000000}
events=${2:-10000000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"

work=${WORK_DIR:-$(mktemp -d /tmp/weft-serve-bench.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)

if [[ -n ${BENCH_BIN:-} ]]; then
  bin=$BENCH_BIN
else
  echo "building the release binary (log: $work/build.log)"
  cargo build --release --bin weft >"$work/build.log" 2>&1 || {
    tail -20 "$work/build.log"; exit 1; }
  bin="$CARGO_TARGET_DIR/release/weft"
fi
for tool in tansu redis-server redis-cli curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool on PATH" >&2; exit 1; }
done

pids=()
cleanup() {
  local status=$?
  # Last started first (the broker outlives weft serve); each gets 15 s to
  # stop cleanly (weft serve drains for 2 s), then KILL.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    local pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ ${KEEP_DATA:-0} != 1 ]]; then
    rm -rf "$work/archive" "$work/views" "$work/speed" "$work/serving"
  fi
  echo "outputs in $work (serve.md, serve.json, freshness.md, freshness.json, *.log)"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for WHAT SECONDS PID COMMAND...: polls COMMAND every 0.2 s; fails if
# PID died or SECONDS passed.
wait_for() {
  local what=$1 seconds=$2 pid=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$what: the process exited; see its log in $work" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "$what: not ready after $seconds s; see its log in $work" >&2
      return 1
    fi
    sleep 0.2
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

tenant=acme
key=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
kafka_port=$(free_port)
grpc_port=$(free_port)
http_port=$(free_port)
redis_port=$(free_port)
floor_port=$(free_port)
bootstrap=127.0.0.1:$kafka_port
spec="$repo/deploy/features.example.toml"

echo "serve vs floor: $users users, $events events, tenant $tenant, $(nproc) cores, $(date -u +%F), work dir $work"

# 1. Broker and topic.
tansu broker --listener-url "tcp://$bootstrap" --advertised-listener-url "tcp://$bootstrap" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=($!)
wait_for "tansu" 30 "${pids[-1]}" port_open "$kafka_port"
tansu topic create events --broker "tcp://$bootstrap" --partitions 8 >>"$work/tansu.log" 2>&1

# 2. Archive and topic, the same simulated events.
start=$SECONDS
"$bin" gen --events "$events" --users "$users" --tenants 1 --partitions 8 --quiet \
  --parquet "$work/archive" --kafka "$bootstrap" --topic events >"$work/gen.log" 2>&1 || {
  tail -20 "$work/gen.log"; exit 1; }
echo "  gen: $((SECONDS - start)) s, archive $(du -sh "$work/archive" | cut -f1)"

# 3. Batch view.
start=$SECONDS
"$bin" batch run --archive "$work/archive" --features "$spec" --views "$work/views" \
  >"$work/batch.log" 2>&1 || { tail -20 "$work/batch.log"; exit 1; }
echo "  batch run: $((SECONDS - start)) s: $(tail -1 "$work/batch.log")"

# 4. weft serve.
cat >"$work/serve.toml" <<EOF
features = "$spec"

[kafka]
bootstrap = "$bootstrap"
topic = "events"

[speed]
data_dir = "$work/speed"

[views]
store = "$work/views"
work_dir = "$work/serving"
poll_secs = 1

[serve]
grpc_listen = "127.0.0.1:$grpc_port"
http_listen = "127.0.0.1:$http_port"

[[tenants]]
name = "$tenant"

[[tenants.keys]]
name = "bench"
key = "$key"
scopes = ["profile:read", "recommendations:read"]
EOF
start=$SECONDS
"$bin" serve --config "$work/serve.toml" >"$work/serve.log" 2>&1 &
pids+=($!)
serve_pid=${pids[-1]}
wait_for "weft serve /readyz" 120 "$serve_pid" curl -sf "http://127.0.0.1:$http_port/readyz"
# Ready means a pair is served; wait for batch view v1 and a caught-up
# speed layer so nothing but requests runs during the measurements.
serving_v1() {
  curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$http_port/v1/profiles/u0000000" |
    python3 -c 'import json, sys
f = json.load(sys.stdin)["freshness"]
sys.exit(0 if f["batch_view_version"] > 0 and f["speed_lag_messages"] <= 0 else 1)'
}
wait_for "weft serve: batch view v1, no speed lag" 1800 "$serve_pid" serving_v1
echo "  weft serve: gRPC 127.0.0.1:$grpc_port, HTTP 127.0.0.1:$http_port, serving v1 after $((SECONDS - start)) s"

# 5. Redis and the floor.
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for "redis" 30 "${pids[-1]}" redis-cli -p "$redis_port" ping
"$bin" bench floor --listen "127.0.0.1:$floor_port" --from "127.0.0.1:$grpc_port" --key "$key" \
  --user u0000000 >"$work/floor.log" 2>&1 &
pids+=($!)
wait_for "weft bench floor" 60 "${pids[-1]}" port_open "$floor_port"
echo "  $(grep -m1 "^floor:" "$work/floor.log" || true)"

# 6. Floor vs Redis vs weft.
echo
"$bin" bench serve --weft "127.0.0.1:$grpc_port" --key "$key" --users "$users" \
  --floor "127.0.0.1:$floor_port" --redis "127.0.0.1:$redis_port" --load-redis \
  ${RATE:+--rate "$RATE"} ${DURATION:+--duration-secs "$DURATION"} \
  ${WARMUP:+--warmup-secs "$WARMUP"} ${CONCURRENCY:+--concurrency "$CONCURRENCY"} \
  ${CONNECTIONS:+--connections "$CONNECTIONS"} \
  --json "$work/serve.json" 2>"$work/bench-serve.log" | tee "$work/serve.md" || {
  tail -20 "$work/bench-serve.log"; exit 1; }

# 7. Freshness.
echo
"$bin" bench freshness --weft "127.0.0.1:$grpc_port" --key "$key" --bootstrap "$bootstrap" \
  --tenant "$tenant" ${SAMPLES:+--samples "$SAMPLES"} --json "$work/freshness.json" \
  2>"$work/bench-freshness.log" | tee "$work/freshness.md" || {
  tail -20 "$work/bench-freshness.log"; exit 1; }
echo
