#!/usr/bin/env bash
# Benchmark: `weft batch run` with the archive and the view store on S3
# against the same run on local disk (issue 24: what object storage costs
# the batch layer). The S3 server is moto's (tests/python/s3_server.py) on
# loopback, on the same 2 cores: it shows the client's overhead and the
# server's, not a network's.
#
#   tests/bench/batch_s3.sh [EVENTS] [USERS] [ROUNDS]   (default 10M 1M 2)
#
# Generates EVENTS events into a local archive, uploads it to a bucket, then
# runs ROUNDS times, alternating: local archive -> local views, S3 archive
# -> S3 views, each under /usr/bin/time (wall, peak RSS). Prints each run and
# the median ratio S3/local. BENCH_BIN uses that weft binary instead of
# building the release one.
set -euo pipefail
cd "$(dirname "$0")/../.."
events=${1:-10000000}
users=${2:-1000000}
rounds=${3:-2}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
if [[ -n ${BENCH_BIN:-} ]]; then
  bin=$BENCH_BIN
else
  cargo build --release --bin weft >/dev/null 2>&1
  bin="$CARGO_TARGET_DIR/release/weft"
fi
out=$(mktemp -d)
s3_pid=""
trap '[[ -n $s3_pid ]] && kill "$s3_pid" 2>/dev/null; rm -rf "$out"' EXIT
spec=deploy/features.example.toml
echo "batch on S3 vs local disk: $events events, $users users, $(nproc) cores, $(date -u +%F)"
"$bin" gen --events "$events" --users "$users" --quiet --parquet "$out/archive"
echo "  archive: $(du -sh "$out/archive" | cut -f1), $(find "$out/archive" -name '*.parquet' | wc -l) files"

python3 tests/python/s3_server.py weft >"$out/s3.json" 2>"$out/s3.log" &
s3_pid=$!
for _ in $(seq 100); do [[ -s $out/s3.json ]] && break; sleep 0.2; done
[[ -s $out/s3.json ]] || { echo "S3 server did not start: $(tail -3 "$out/s3.log")"; exit 1; }
field() { python3 -c "import json,sys; print(json.load(open('$out/s3.json'))['$1'])"; }
endpoint=$(field endpoint)
cat >"$out/s3.toml" <<EOF
features = "$spec"
[s3]
endpoint = "$endpoint"
region = "us-east-1"
access_key_id = "$(field access_key_id)"
secret_access_key = "$(field secret_access_key)"
allow_http = true
EOF
python3 tests/bench/s3_upload.py "$out/s3.json" "$out/archive" archive
echo "  uploaded to s3://weft/archive at $endpoint"

fmt="%e %M"
run() { # NAME ARCHIVE VIEWS
  /usr/bin/time -o "$out/$1.time" -f "$fmt" "$bin" batch run --config "$out/s3.toml" \
    --archive "$2" --views "$3" --memory-mb 2048 --spill-dir "$out" >"$out/$1.txt" 2>"$out/$1.err" || {
    echo "  $1 failed: $(tail -3 "$out/$1.err")"; exit 1; }
  read -r wall rss <"$out/$1.time"
  echo "  $1: wall $wall s, peak RSS $rss KiB: $(cat "$out/$1.txt")"
  echo "$wall" >>"$out/$1.walls"
}
for r in $(seq "$rounds"); do
  run local "$out/archive" "$out/views"
  run s3 "s3://weft/archive" "s3://weft/views"
done
python3 - "$out/local.walls" "$out/s3.walls" <<'EOF'
import statistics, sys
local = [float(x) for x in open(sys.argv[1])]
s3 = [float(x) for x in open(sys.argv[2])]
ratios = [b / a for a, b in zip(local, s3)]
print(f"  ratio S3/local (wall, per round): {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}")
EOF
