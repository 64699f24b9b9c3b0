# Shared by the benchmark scripts that run Weft's processes on this machine
# (serve_vs_floor.sh, swaps_and_outage.sh, batch_cluster.sh). Source it after
# `set -euo pipefail` from the repository root, then call
# `bench_init WORK_DIR_PREFIX`.
#
# It provides:
#   bench_init PREFIX [--no-tool]
#                          sets `repo`, `work` ($WORK_DIR or a new
#                          /tmp/PREFIX.XXXXXX), `bin` ($BENCH_BIN or the
#                          release `weft`, built now), `bench_bin`
#                          ($BENCH_TOOL_BIN, or `weft-bench` next to `bin`:
#                          the measurements, package weft-bench, built with
#                          the workspace; with --no-tool, for a script that only runs
#                          `weft`, neither built nor required), `tenant`, `key`,
#                          `spec`, and the EXIT trap that stops every process
#                          in `pids` (last started first) and removes the
#                          directories in `data_dirs` unless KEEP_DATA=1;
#                          `outputs` names what the script leaves in $work
#   require TOOL...        fails naming the first tool missing from PATH
#   free_port, port_open PORT, wait_for WHAT SECONDS PID COMMAND...
#   start_broker PORT STORAGE
#                          a Tansu broker on 127.0.0.1:PORT (`bootstrap`),
#                          running in $work/broker (log: broker.log there,
#                          appended across restarts); STORAGE is a Tansu
#                          storage URL, relative paths are in $work/broker.
#                          Called again after the broker stopped, it takes
#                          the old one's place in `pids` (`broker_pid`)
#   create_topic NAME      with 8 partitions
#   gen_events USERS EVENTS
#                          `weft gen` for one tenant into the Parquet archive
#                          $work/archive and, once start_broker ran, the
#                          topic `events`; GEN_ARGS adds options (e.g.
#                          "--start 2026-10-25 --days 30")
#   batch_run ARCHIVE LOG  `weft batch run` over ARCHIVE into $work/views;
#                          prints its summary line
#   serve_toml SPEED_DIR VIEWS_WORK_DIR GRPC_PORT HTTP_PORT [SERVE_LINES]
#                          prints a `weft serve` config for the bench key
#   start_serve            writes $work/serve.toml and starts `weft serve`
#                          (`serve_pid`, `grpc_port`, `http_port`), waits
#                          until it serves a batch view with no speed lag
#   profile_json USER      GetProfile over HTTP (curl), the reply's JSON
# Environment: WORK_DIR, BENCH_BIN, BENCH_TOOL_BIN (not WEFT_*: `weft serve`
# reads those as configuration), KEEP_DATA=1, GEN_ARGS.

bench_init() {
  repo=$(pwd)
  local tool=1
  if [[ ${2:-} == --no-tool ]]; then tool=0; fi
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
  work=${WORK_DIR:-$(mktemp -d "/tmp/$1.XXXXXX")}
  mkdir -p "$work"
  work=$(cd "$work" && pwd)
  if [[ -n ${BENCH_BIN:-} ]]; then
    bin=$BENCH_BIN
  elif ((tool)); then
    echo "building the release binaries weft and weft-bench (log: $work/build.log)"
    # --workspace: the features the tests build with (per-package
    # selection would build DataFusion and RocksDB again).
    cargo build --release --workspace >"$work/build.log" 2>&1 || {
      tail -20 "$work/build.log"; exit 1; }
    bin="$CARGO_TARGET_DIR/release/weft"
  else
    echo "building the release binary weft (log: $work/build.log)"
    cargo build --release --workspace >"$work/build.log" 2>&1 || {
      tail -20 "$work/build.log"; exit 1; }
    bin="$CARGO_TARGET_DIR/release/weft"
  fi
  if ((tool)); then
    bench_bin=${BENCH_TOOL_BIN:-$(dirname "$bin")/weft-bench}
    [[ -x $bench_bin ]] || {
      echo "$bench_bin is missing: cargo build --release --workspace, or set BENCH_TOOL_BIN" >&2
      exit 1; }
  fi
  tenant=acme
  key=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  spec="$repo/deploy/features.example.toml"
  pids=()
  data_dirs=()
  outputs="*.log"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

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
    for d in "${data_dirs[@]}"; do rm -rf "${work:?}/$d"; done
  fi
  echo "outputs in $work ($outputs)"
  exit "$status"
}

require() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool on PATH" >&2; exit 1; }
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

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

start_broker() {
  local port=$1 storage=$2
  bootstrap=127.0.0.1:$port
  mkdir -p "$work/broker"
  (cd "$work/broker" && exec tansu broker --listener-url "tcp://$bootstrap" \
    --advertised-listener-url "tcp://$bootstrap" --storage-engine "$storage") \
    >>"$work/broker/broker.log" 2>&1 &
  broker_pid=$!
  if [[ -n ${broker_slot:-} ]]; then
    pids[broker_slot]=$broker_pid
  else
    pids+=("$broker_pid")
    broker_slot=$((${#pids[@]} - 1))
  fi
  wait_for "tansu" 30 "$broker_pid" port_open "$port"
}

create_topic() {
  tansu topic create "$1" --broker "tcp://$bootstrap" --partitions 8 >>"$work/broker/broker.log" 2>&1
}

gen_events() {
  local users=$1 events=$2 start=$SECONDS
  "$bin" gen --events "$events" --users "$users" --tenants 1 --partitions 8 --quiet \
    --parquet "$work/archive" ${bootstrap:+--kafka "$bootstrap" --topic events} ${GEN_ARGS:-} \
    >"$work/gen.log" 2>&1 || {
    tail -20 "$work/gen.log"; exit 1; }
  echo "  gen: $((SECONDS - start)) s, archive $(du -sh "$work/archive" | cut -f1): $(tail -1 "$work/gen.log")"
}

batch_run() {
  local archive=$1 log=$2
  "$bin" batch run --archive "$archive" --features "$spec" --views "$work/views" \
    >"$log" 2>&1 || { tail -20 "$log" >&2; return 1; }
  tail -1 "$log"
}

# `batch_run ARCHIVE LOG`, timed, with its summary on one line (LABEL,
# default "batch run").
timed_batch_run() {
  local start=$SECONDS summary
  summary=$(batch_run "$1" "$2")
  echo "  ${3:-batch run}: $((SECONDS - start)) s: $summary"
}

# A memory broker with the `events` topic, USERS users' EVENTS generated
# events in the archive and the topic, and view v1 of them.
view_of_generated() {
  start_broker "$(free_port)" memory://tansu/
  create_topic events
  gen_events "$1" "$2"
  timed_batch_run "$work/archive" "$work/batch.log"
}

profile_json() {
  curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$http_port/v1/profiles/$1"
}

# Serving a batch view, and the speed layer has applied the whole topic.
serving_caught_up() {
  profile_json u0000000 | python3 -c 'import json, sys
f = json.load(sys.stdin)["freshness"]
sys.exit(0 if f["batch_view_version"] > 0 and f["speed_lag_messages"] <= 0 else 1)'
}

# serve_toml SPEED_DIR VIEWS_WORK_DIR GRPC_PORT HTTP_PORT [SERVE_LINES]:
# a `weft serve` config on $work/views and the broker, the bench key for
# the tenant; SERVE_LINES go at the end of [serve] (a shard's keys).
serve_toml() {
  cat <<EOF
features = "$spec"

[kafka]
bootstrap = "$bootstrap"
topic = "events"

[speed]
data_dir = "$1"

[views]
store = "$work/views"
work_dir = "$2"
poll_secs = 1

[serve]
grpc_listen = "127.0.0.1:$3"
http_listen = "127.0.0.1:$4"
${5:-}

[[tenants]]
name = "$tenant"

[[tenants.keys]]
name = "bench"
key = "$key"
scopes = ["profile:read", "recommendations:read", "events:write"]
EOF
}

start_serve() {
  grpc_port=$(free_port)
  http_port=$(free_port)
  serve_toml "$work/speed" "$work/serving" "$grpc_port" "$http_port" >"$work/serve.toml"
  local start=$SECONDS
  "$bin" serve --config "$work/serve.toml" >"$work/serve.log" 2>&1 &
  pids+=($!)
  serve_pid=$!
  wait_for "weft serve /readyz" 120 "$serve_pid" curl -sf "http://127.0.0.1:$http_port/readyz"
  # Ready means a pair is served; wait for the batch view and a caught-up
  # speed layer so nothing but requests runs during the measurements.
  wait_for "weft serve: a batch view, no speed lag" 1800 "$serve_pid" serving_caught_up
  echo "  weft serve: gRPC 127.0.0.1:$grpc_port, HTTP 127.0.0.1:$http_port, serving after $((SECONDS - start)) s"
}
