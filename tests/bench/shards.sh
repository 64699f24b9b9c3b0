#!/usr/bin/env bash
# Benchmark: serving shards (docs/scaling.md, "Serving shards"), over one
# data set of USERS users and EVENTS events of one tenant:
#
#   tests/bench/shards.sh [USERS] [EVENTS]     (default 1000000 10000000)
#
#   1. a Tansu broker (memory storage), topic `events` with 8 partitions;
#      `weft gen` into the Parquet archive and the topic (the same
#      (_partition, _offset)); `weft batch run`: view v1 (format 4, split by
#      partition);
#   2. for 1, 2 and 3 shards (partitions 0-7 | 0-3, 4-7 | 0-2, 3-5, 6-7, each
#      shard listing the others as peers): every shard started, waited for
#      until it serves v1 with its speed layer caught up, then its resident
#      memory (VmRSS) and its disk (speed store and opened view) read; the
#      fleet stopped. The goal: each of N shards ≈ 1/N of one node's;
#   3. with 3 shards: `weft-bench serve` for the users of shard 0's
#      partitions, sent to shard 0 (their owner) and to shard 1 (which
#      forwards each call to shard 0), at a fixed rate and flat out, ROUNDS
#      rounds alternating: the hop's cost as ratios;
#   4. `weft-bench embedded`: GetProfile through weft-client's embedded
#      reader holding every partition, in process (goal: p99 ≤ 20 µs).
#
# Environment: WORK_DIR, BENCH_BIN, BENCH_TOOL_BIN, KEEP_DATA=1 (see
# tests/bench/lib.sh); RATE (default 2000), DURATION (10), ROUNDS (3),
# REQUESTS (embedded calls, 2000000).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
users=${1:-1000000}
events=${2:-10000000}

bench_init weft-shards-bench
require tansu curl python3
data_dirs=(archive views shards embedded)
outputs="footprint.md, hop.md, hop.json, embedded.md, *.log"

echo "shards: $users users, $events events, tenant $tenant, $(nproc) cores, $(date -u +%F), work dir $work"
view_of_generated "$users" "$events"

# One metric's value (no labels) from a node's /metrics.
metric() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}

# Serving view v1 and no record of its partitions left to apply.
caught_up() {
  [[ $(metric "$1" weft_serving_batch_view_version) == 1 ]] &&
    [[ $(metric "$1" weft_serving_speed_lag_messages) == 0 ]]
}

# start_fleet SETS...: one `weft serve` per partition set, each listing the
# others as peers; fills grpc_ports, http_ports, fleet (PIDs), dirs.
start_fleet() {
  local sets=("$@") n=$#
  grpc_ports=() http_ports=() fleet=() dirs=()
  for ((i = 0; i < n; i++)); do
    grpc_ports+=("$(free_port)")
    http_ports+=("$(free_port)")
  done
  for ((i = 0; i < n; i++)); do
    local dir="$work/shards/$n-$i"
    rm -rf "$dir"
    mkdir -p "$dir"
    dirs+=("$dir")
    local shard=""
    if ((n > 1)); then
      shard="partitions = \"${sets[i]}\""
      for ((j = 0; j < n; j++)); do
        ((j == i)) && continue
        shard+=$(printf '\n\n[[serve.peers]]\npartitions = "%s"\ngrpc = "http://127.0.0.1:%s"' \
          "${sets[j]}" "${grpc_ports[j]}")
      done
    fi
    serve_toml "$dir/speed" "$dir/views" "${grpc_ports[i]}" "${http_ports[i]}" "$shard" \
      >"$dir/serve.toml"
    "$bin" serve --config "$dir/serve.toml" >"$dir/serve.log" 2>&1 &
    pids+=($!)
    fleet+=($!)
  done
  local start=$SECONDS
  for ((i = 0; i < n; i++)); do
    wait_for "shard $i of $n" 1800 "${fleet[i]}" caught_up "${http_ports[i]}"
  done
  # The lag reads 0 until the ends are first read (about a second): check
  # again after a few.
  sleep 3
  for ((i = 0; i < n; i++)); do
    wait_for "shard $i of $n" 60 "${fleet[i]}" caught_up "${http_ports[i]}"
  done
  echo "  $n shard(s) serving v1, caught up after $((SECONDS - start)) s"
}

stop_fleet() {
  for pid in "${fleet[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${fleet[@]}"; do wait "$pid" 2>/dev/null || true; done
}

footprint() {
  local n=${#fleet[@]}
  for ((i = 0; i < n; i++)); do
    local rss disk_speed disk_view
    rss=$(awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/${fleet[i]}/status")
    disk_speed=$(du -sm "${dirs[i]}/speed" | cut -f1)
    disk_view=$(du -sm "${dirs[i]}/views" | cut -f1)
    echo "| $n | $i | ${sets[i]} | $rss | $disk_view | $disk_speed |" | tee -a "$work/footprint.md"
  done
}

echo
{
  echo "| shards | shard | partitions | RSS MiB | opened view MiB | speed store MiB |"
  echo "|---|---|---|---|---|---|"
} | tee "$work/footprint.md"
for layout in "0-7" "0-3 4-7" "0-2 3-5 6-7"; do
  read -r -a sets <<<"$layout"
  start_fleet "${sets[@]}"
  footprint
  if ((${#sets[@]} < 3)); then stop_fleet; fi
done

# The hop, with 3 shards up: shard 0's users at shard 0 and at shard 1.
echo
"$bench_bin" serve --weft "127.0.0.1:${grpc_ports[0]}" --forwarder "127.0.0.1:${grpc_ports[1]}" \
  --only-partitions "${sets[0]}" --tenant "$tenant" --key "$key" --users "$users" \
  --weft-pid "${fleet[0]}" --forwarder-pid "${fleet[1]}" \
  --rate "${RATE:-2000}" --duration-secs "${DURATION:-10}" --rounds "${ROUNDS:-3}" \
  --json "$work/hop.json" 2>"$work/bench-hop.log" | tee "$work/hop.md" || {
  tail -20 "$work/bench-hop.log"; exit 1; }
stop_fleet

# The embedded reader, every partition, nothing else running but the broker.
echo
"$bench_bin" embedded --spec "$spec" --views "$work/views" --bootstrap "$bootstrap" \
  --tenant "$tenant" --users "$users" --requests "${REQUESTS:-2000000}" \
  --work-dir "$work/embedded" 2>"$work/bench-embedded.log" | tee "$work/embedded.md" || {
  tail -20 "$work/bench-embedded.log"; exit 1; }
