#!/usr/bin/env bash
# Benchmark: `weft batch run --cluster` on a Ballista cluster of two
# executors against the same job run locally, on this machine (issue 24:
# the ratio is Ballista's overhead, since the executors add no cores; goal
# cluster/local <= 1.5).
#
#   tests/bench/batch_cluster.sh [EVENTS] [USERS] [ROUNDS]   (default 10M 1M 3)
#
# Generates EVENTS events for USERS users (`weft gen`, 4 tenants) into a
# local archive once, starts one `weft batch scheduler` and two
# `weft batch executor`s (1 vcore and MEMORY_MB/2 MiB each) on loopback,
# then runs ROUNDS rounds of, one after the other:
#   local:   weft batch run --partitions 2 --memory-mb MEMORY_MB
#   cluster: weft batch run --partitions 2 --cluster df://... (the client
#            folds nothing; the executors hold the memory budget)
# both from the archive into view stores on local disk, each under
# /usr/bin/time: wall time and peak RSS of the client. Prints every run,
# the cluster/local ratios per round and their median, and the executors'
# peak RSS over all rounds.
#
# S3=1 adds, to every round, the same pair with the archive and the view
# stores on a moto S3 server on loopback (tests/python/s3_server.py, as
# batch_s3.sh), the executors reaching it through the same [s3] config:
# it prints the cluster/local ratio on S3 too, and S3/disk for each mode.
#
# Environment: MEMORY_MB (the total budget, default 2048), S3=1, BENCH_BIN
# (a release `weft`; else it is built), WORK_DIR, KEEP_DATA=1 (see
# tests/bench/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/bench/lib.sh
source tests/bench/lib.sh
events=${1:-10000000}
users=${2:-1000000}
rounds=${3:-3}
memory=${MEMORY_MB:-2048}
per_executor=$((memory / 2))
s3=${S3:-0}
require python3
[[ -x /usr/bin/time ]] || { echo "missing /usr/bin/time (GNU time)" >&2; exit 1; }
bench_init weft-batch-cluster --no-tool
data_dirs=(archive views-local views-cluster executor-0 executor-1 spill)
outputs="*.log *.err *.txt *.time *.walls *.rss"
mkdir -p "$work/spill"

# show CMD...: prints a command line as it can be pasted into a shell.
show() {
  printf '    $'
  printf ' %q' "$@"
  printf '\n'
}

# A free port not in `taken` (free_port may hand out one just released).
taken=()
new_port() {
  local port
  while :; do
    port=$(free_port)
    [[ " ${taken[*]} " == *" $port "* ]] || break
  done
  taken+=("$port")
  echo "$port"
}

where=disk
if ((s3)); then where="disk and S3"; fi
echo "batch on a Ballista cluster (1 scheduler, 2 executors x 1 vcore x $per_executor MiB) vs local ($memory MiB):" \
  "$events events, $users users, $rounds rounds on $where, $(nproc) cores, $(date -u +%F)"

cmd=("$bin" gen --events "$events" --users "$users" --quiet --parquet "$work/archive")
show "${cmd[@]}"
start=$SECONDS
"${cmd[@]}" >"$work/gen.log" 2>&1 || { tail -20 "$work/gen.log"; exit 1; }
echo "  gen: $((SECONDS - start)) s, archive $(du -sh "$work/archive" | cut -f1)," \
  "$(find "$work/archive" -name '*.parquet' | wc -l) files"

config=$work/weft.toml
echo "features = \"$spec\"" >"$config"
if ((s3)); then
  cmd=(python3 tests/python/s3_server.py weft)
  show "${cmd[@]}"
  "${cmd[@]}" >"$work/s3.json" 2>"$work/s3.log" &
  pids+=("$!")
  wait_for "S3 server" 60 "$!" test -s "$work/s3.json"
  field() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/s3.json" "$1"; }
  cat >>"$config" <<EOF
[s3]
endpoint = "$(field endpoint)"
region = "us-east-1"
access_key_id = "$(field access_key_id)"
secret_access_key = "$(field secret_access_key)"
allow_http = true
EOF
  start=$SECONDS
  python3 tests/bench/s3_upload.py "$work/s3.json" "$work/archive" archive
  echo "  uploaded to s3://weft/archive at $(field endpoint) in $((SECONDS - start)) s"
fi
echo "  config $config:"
sed -e 's/^secret_access_key = .*/secret_access_key = (hidden)/' -e 's/^/    /' "$config"

# The cluster: a scheduler, then two executors, each waited for.
scheduler_port=$(new_port)
scheduler=df://127.0.0.1:$scheduler_port
cmd=("$bin" --config "$config" batch scheduler --bind "127.0.0.1:$scheduler_port")
show "${cmd[@]}"
"${cmd[@]}" >"$work/scheduler.log" 2>&1 &
pids+=("$!")
wait_for "weft batch scheduler" 60 "$!" port_open "$scheduler_port"
executor_pids=()
for i in 0 1; do
  flight=$(new_port)
  grpc=$(new_port)
  mkdir -p "$work/executor-$i"
  cmd=("$bin" --config "$config" batch executor --scheduler "$scheduler" --host 127.0.0.1
    --flight-port "$flight" --grpc-port "$grpc" --work-dir "$work/executor-$i"
    --vcores 1 --memory-mb "$per_executor")
  show "${cmd[@]}"
  "${cmd[@]}" >"$work/executor-$i.log" 2>&1 &
  pids+=("$!")
  executor_pids+=("$!")
  wait_for "weft batch executor $i" 60 "$!" port_open "$flight"
done
echo "  cluster: scheduler $scheduler, executors ${executor_pids[*]} (logs in $work)"

# run NAME ARCHIVE VIEWS [ARGS...]: one `weft batch run` under
# /usr/bin/time; its command line printed on the first round.
run() {
  local name=$1 archive=$2 views=$3 wall rss
  shift 3
  local cmd=("$bin" --config "$config" batch run --archive "$archive" --views "$views"
    --partitions 2 --spill-dir "$work/spill" "$@")
  if ((round == 1)); then show "${cmd[@]}"; fi
  # The executors' work directories (shuffle files, spills), sampled
  # while the run lasts: the peak is the shuffle volume on disk.
  (
    peak=0
    while :; do
      now=$(du -sk "$work/executor-0" "$work/executor-1" 2>/dev/null | awk '{s+=$1} END {print s+0}')
      ((now > peak)) && peak=$now && echo "$peak" >"$work/$name.shuffle"
      sleep 0.5
    done
  ) &
  local sampler=$!
  /usr/bin/time -o "$work/$name.time" -f "%e %M" "${cmd[@]}" >"$work/$name.txt" 2>"$work/$name.err" || {
    kill "$sampler" 2>/dev/null
    echo "  $name failed: $(tail -3 "$work/$name.err")" >&2
    exit 1
  }
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  read -r wall rss <"$work/$name.time"
  local shuffle=""
  if [[ $name == *cluster* ]]; then shuffle=", executors' work dirs peak $(cat "$work/$name.shuffle" 2>/dev/null || echo 0) KiB"; fi
  echo "  round $round $name: wall $wall s, peak RSS $rss KiB$shuffle: $(grep -m1 '^published' "$work/$name.txt")"
  echo "$wall" >>"$work/$name.walls"
  echo "$rss" >>"$work/$name.rss"
}

for round in $(seq "$rounds"); do
  run local "$work/archive" "$work/views-local" --memory-mb "$memory"
  run cluster "$work/archive" "$work/views-cluster" --cluster "$scheduler"
  if ((s3)); then
    run s3-local s3://weft/archive s3://weft/views-local --memory-mb "$memory"
    run s3-cluster s3://weft/archive s3://weft/views-cluster --cluster "$scheduler"
  fi
done

for i in 0 1; do
  echo "  executor $i: peak RSS over all rounds $(awk '/^VmHWM/ {print $2}' "/proc/${executor_pids[i]}/status") KiB"
done

# ratio NAME A B: B/A per round (wall and peak RSS) and the median.
ratio() {
  python3 - "$1" "$work/$2" "$work/$3" <<'EOF'
import statistics, sys
name, a, b = sys.argv[1:]
for what, ext in (("wall", "walls"), ("peak RSS", "rss")):
    xs = [float(x) for x in open(f"{a}.{ext}")]
    ys = [float(y) for y in open(f"{b}.{ext}")]
    rs = [y / x for x, y in zip(xs, ys)]
    print(f"  {name} ({what}, per round): {', '.join(f'{r:.2f}' for r in rs)}; median {statistics.median(rs):.2f}")
EOF
}
ratio "cluster/local, disk" local cluster
if ((s3)); then
  ratio "cluster/local, S3" s3-local s3-cluster
  ratio "S3/disk, local" local s3-local
  ratio "S3/disk, cluster" cluster s3-cluster
fi
