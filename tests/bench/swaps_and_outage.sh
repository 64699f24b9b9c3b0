#!/usr/bin/env bash
# Benchmark: `weft serve` under a steady GetProfile load while (A) batch
# views are published one after the other and (B) the Kafka broker is down
# for 30 s while events keep being produced.
#
#   tests/bench/swaps_and_outage.sh [USERS] [EVENTS]
#
# Builds the release binary, then, all on this machine (the shared steps are
# in tests/bench/lib.sh):
#   1. a Tansu broker with sqlite storage (it keeps its data across a
#      restart) on a free port, topic `events` with 8 partitions;
#   2. `weft gen`: EVENTS events (default 2M) for USERS users (default 200k)
#      of one tenant (acme) to the Parquet archive `archive/` *and* to
#      `events`; batch view v1 over that archive; `weft serve` over v1 and
#      the topic, waited for until it serves v1 with no speed lag;
#   3. `weft archive` into a second root, `live-archive/` (`weft gen` writes
#      no archiver state, so an archiver on `archive/` would archive the
#      generated offsets a second time): it archives the whole topic from
#      offset 0, and is waited for until its state reaches the watermarks.
#      Every later batch run reads `live-archive/`, as in production;
#   4. scenario A, batch swaps: `weft-bench serve --phases fixed` at RATE/s
#      for SWAP_SECS s (baseline), then the same while `nice -n 19 weft
#      batch run` publishes SWAPS views back to back, each waited for until
#      GetProfile (HTTP) reports it;
#   5. scenario B, broker outage: a producer (Python, confluent-kafka,
#      idempotent) sends LIVE_RATE events/s stamped with the current time;
#      `weft-bench serve --phases fixed` for OUTAGE_PHASE_SECS s; OUTAGE_AT s
#      into it the broker is killed (BROKER_STOP_SIGNAL), and OUTAGE_SECS s
#      after that it starts again on the same port and storage; the time
#      until the broker, the speed layer and the archiver hold everything
#      produced before the restart is measured;
#   6. "nothing lost": once the producer has flushed, the speed layer's
#      positions (weft serve's /metrics) and the archiver's committed
#      offsets must equal every partition's high watermark, the archive must
#      hold one row per record of the topic and every event the producer had
#      acknowledged; then a batch view over the archive and GetProfile must
#      agree on a few users' profiles;
#   7. summary.md, printed at the end.
# Every process started here is stopped on exit. The load generator, the
# broker, the servers and the batch job share the machine's cores. Needs
# tansu, curl and python3 with tests/python/requirements.txt and
# confluent-kafka.
#
# Environment:
#   WORK_DIR, BENCH_BIN, KEEP_DATA=1  as for serve_vs_floor.sh
#   RATE (2000)               GetProfile requests/s in every phase
#   SWAP_SECS (180), SWAPS (5)
#   OUTAGE_PHASE_SECS (90), OUTAGE_AT (20), OUTAGE_SECS (30)
#   LIVE_RATE (1000)          events/s produced during scenario B
#   ARCHIVE_DELAY_MS (1000)   the archiver's --max-delay-ms (how long an
#                             event may wait in its buffer before a flush)
#   BROKER_STOP_SIGNAL (KILL) how the broker is stopped. Tansu 0.6.0 on
#                             TERM closes its storage first and, for about
#                             5 s before exiting, answers every produce with
#                             UNKNOWN_SERVER_ERROR, which producers do not
#                             retry (records lost); an idempotent producer
#                             that saw those errors then panics the restarted
#                             broker's sqlite storage (lite.rs:503). KILL is a
#                             crash: connections drop and clients retry.
#   CONCURRENCY, CONNECTIONS  passed to `weft-bench serve`
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh

main() {
  users=${1:-200000}
  events=${2:-2000000}
  rate=${RATE:-2000}
  swap_secs=${SWAP_SECS:-180}
  swaps=${SWAPS:-5}
  outage_phase_secs=${OUTAGE_PHASE_SECS:-90}
  outage_at=${OUTAGE_AT:-20}
  outage_secs=${OUTAGE_SECS:-30}
  live_rate=${LIVE_RATE:-1000}
  archive_delay_ms=${ARCHIVE_DELAY_MS:-1000}
  stop_signal=${BROKER_STOP_SIGNAL:-KILL}

  bench_init weft-swaps-outage
  require tansu curl python3
  python3 -c 'import confluent_kafka, duckdb, grpc_tools' 2>/dev/null || {
    echo "needs python3 -m pip install -r tests/python/requirements.txt confluent-kafka" >&2; exit 1; }
  data_dirs=(archive live-archive views speed serving broker)
  outputs="summary.md, a-baseline.*, a-swaps.*, swaps.tsv, b-outage.*, outage.json, checks.json, *.log"

  echo "swaps and outage: $users users, $events events, tenant $tenant, $(nproc) cores, $(date -u +%F), work dir $work"
  cut -d' ' -f1-3 /proc/loadavg >"$work/loadavg-before"

  # 1-2. Broker, topic, generated events, batch view v1, weft serve.
  start_broker "$(free_port)" sqlite://tansu.db
  broker_port=${bootstrap##*:}
  create_topic events
  gen_events "$users" "$events"
  gen_records=$(grep -o '[0-9]* records delivered' "$work/gen.log" | cut -d' ' -f1)
  timed_batch_run "$work/archive" "$work/batch-v1.log" "batch run over archive/"
  start_serve

  # 3. The archiver, from offset 0 into its own root.
  start=$SECONDS
  "$bin" archive --bootstrap "$bootstrap" --root "$work/live-archive" \
    --max-delay-ms "$archive_delay_ms" >"$work/archive.log" 2>&1 &
  pids+=($!)
  archive_pid=$!
  wait_for "weft archive: the whole topic" 900 "$archive_pid" py archived "$work/live-archive" "$bootstrap"
  echo "  weft archive: the topic's $gen_records records archived into live-archive/ in $((SECONDS - start)) s"

  # 4. Scenario A: batch swaps under load.
  echo "  A: baseline, $rate/s for $swap_secs s"
  bench a-baseline "$swap_secs"
  echo "  A: $swaps batch runs (nice -n 19) under $rate/s for $swap_secs s"
  bench a-swaps "$swap_secs" &
  bench_pid=$!
  wait_phase "$work/a-swaps.log" "$bench_pid"
  sleep 3
  printf 'swap\tversion\tstarted_ms\tpublished_ms\tserved_ms\n' >"$work/swaps.tsv"
  for i in $(seq "$swaps"); do
    t0=$(now_ms)
    nice -n 19 "$bin" batch run --archive "$work/live-archive" --features "$spec" \
      --views "$work/views" >"$work/batch-swap-$i.log" 2>&1 || {
      tail -20 "$work/batch-swap-$i.log"; exit 1; }
    published=$(stat -c %.3Y "$work/views/CURRENT" | tr -d .)
    version=$(published_version <"$work/batch-swap-$i.log")
    wait_served "$version"
    served=$(now_ms)
    printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$version" "$t0" "$published" "$served" >>"$work/swaps.tsv"
    echo "    v$version: batch run $(((published - t0) / 1000)) s, served $((served - published)) ms after publishing"
  done
  kill -0 "$bench_pid" || echo "  warning: the swaps outlasted the phase; raise SWAP_SECS" >&2
  wait "$bench_pid" || { tail -20 "$work/a-swaps.log"; exit 1; }

  # 5. Scenario B: broker outage under load and live production.
  echo "  B: $live_rate events/s produced, $rate/s GetProfile for $outage_phase_secs s, broker down for $outage_secs s at $outage_at s"
  "${py[@]}" produce "$bootstrap" "$users" "$live_rate" "$work/producer" >"$work/producer.log" 2>&1 &
  pids+=($!)
  producer_pid=$!
  # Its first deliveries can take seconds (connections, producer id): start
  # measuring once it is steady.
  wait_for "producer: steady deliveries" 60 "$producer_pid" producer_steady
  sleep 3
  bench b-outage "$outage_phase_secs" &
  bench_pid=$!
  wait_phase "$work/b-outage.log" "$bench_pid"
  sleep "$outage_at"
  disown "$broker_pid" # no "Killed" notice from bash
  stopped_ms=$(now_ms)
  kill "-$stop_signal" "$broker_pid"
  for _ in $(seq 300); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$broker_pid" 2>/dev/null || true
  echo "    broker stopped (SIG$stop_signal) after $(($(now_ms) - stopped_ms)) ms"
  sleep "$(python3 -c "print(max(0, $outage_secs - ($(now_ms) - $stopped_ms) / 1000))")"
  # Everything produced before the restart must reach the broker, the speed
  # layer and the archiver: the producer's count at this moment.
  produced_before=$(tail -1 "$work/producer.progress" | cut -d' ' -f2)
  restarted_ms=$(now_ms)
  start_broker "$broker_port" sqlite://tansu.db
  echo "    broker restarted after $(((restarted_ms - stopped_ms) / 1000)) s down"
  "${py[@]}" catchup "http://127.0.0.1:$http_port/metrics" "$work/live-archive" "$bootstrap" \
    "$((gen_records + produced_before))" "$restarted_ms" >"$work/catchup.json" 2>"$work/catchup.log" &
  pids+=($!)
  catchup_pid=$!
  wait "$bench_pid" || { tail -20 "$work/b-outage.log"; exit 1; }
  kill -TERM "$producer_pid"
  wait "$producer_pid" || { tail -20 "$work/producer.log"; exit 1; }
  wait "$catchup_pid" || { tail -20 "$work/catchup.log"; exit 1; }
  printf '{"stopped_ms": %s, "restarted_ms": %s, "signal": "%s", "produced_before_restart": %s, "catchup": %s}\n' \
    "$stopped_ms" "$restarted_ms" "$stop_signal" "$produced_before" "$(cat "$work/catchup.json")" \
    >"$work/outage.json"

  # 6. Nothing lost.
  py checks "http://127.0.0.1:$http_port/metrics" "$work/live-archive" "$bootstrap" \
    "$gen_records" "$work/producer" >"$work/checks.json" 2>"$work/checks.log" || {
    tail -20 "$work/checks.log"; exit 1; }
  summary=$(batch_run "$work/live-archive" "$work/batch-after.log")
  wait_served "$(published_version <<<"$summary")"
  py spot-check "$bin" "$work/views" "http://127.0.0.1:$http_port" "$key" "$work/live-archive" \
    >"$work/spot-check.json" 2>"$work/spot-check.log" || {
    tail -20 "$work/spot-check.log"; exit 1; }

  # 7. Summary.
  py summary "$work" "$users" "$events" "$rate" "$live_rate" "$archive_delay_ms" | tee "$work/summary.md"
}

now_ms() { date +%s%3N; }

# The Python half: `py CMD ARGS...` (subcommands of $py_helpers, below);
# "${py[@]}" CMD ARGS... & runs it in the background as its own process.
py() { "${py[@]}" "$@"; }

# bench NAME SECONDS: the steady load, fixed rate only, a 1 s timeline.
bench() {
  "$bench_bin" serve --weft "127.0.0.1:$grpc_port" --key "$key" --users "$users" \
    --phases fixed --rate "$rate" --duration-secs "$2" --timeline-secs 1 \
    ${CONCURRENCY:+--concurrency "$CONCURRENCY"} ${CONNECTIONS:+--connections "$CONNECTIONS"} \
    --json "$work/$1.json" >"$work/$1.md" 2>"$work/$1.log"
}

# wait_phase LOG PID: until `weft-bench serve` starts its measured phase.
wait_phase() { wait_for "weft-bench serve" 60 "$2" grep -q "fixed rate" "$1"; }

# The version in `weft batch run`'s summary line on stdin.
published_version() { grep -o 'published v[0-9]*' | grep -o '[1-9][0-9]*$'; }

served_version() {
  profile_json u0000000 | grep -o '"batch_view_version":[0-9]*' | cut -d: -f2
}

# At most half a second of the producer's events unacknowledged.
producer_steady() {
  local _ms sent delivered
  read -r _ms sent delivered _ < <(tail -1 "$work/producer.progress")
  ((delivered > 0 && sent - delivered <= live_rate / 2))
}

# wait_served VERSION: polls GetProfile every 50 ms until it reports VERSION.
wait_served() {
  local deadline=$((SECONDS + 120))
  until [[ $(served_version) == "$1" ]]; do
    if ! kill -0 "$serve_pid" 2>/dev/null || ((SECONDS >= deadline)); then
      echo "weft serve: view v$1 not served after 120 s; see $work/serve.log" >&2
      return 1
    fi
    sleep 0.05
  done
}

py=(python3 -c "$(cat <<'PY'
"""The Python half of swaps_and_outage.sh: python3 -c "..." CMD ARGS..., run from the repository root."""
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.getcwd()
TOPIC, TENANT, PARTITIONS = "events", "acme", 8


def now_ms():
    return int(time.time() * 1000)


def watermark_client(bootstrap):
    from confluent_kafka import Consumer
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "weft-bench-probe",
                     "enable.auto.commit": False, "log_level": 0})


def watermarks(client):
    """Every partition's high watermark (ListOffsets), or None if the broker does not answer."""
    from confluent_kafka import KafkaException, TopicPartition
    try:
        return {p: client.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=2)[1]
                for p in range(PARTITIONS)}
    except KafkaException:
        return None


def archiver_offsets(root):
    """The archiver's committed next offset per partition (weft_speed::archiver::read_state)."""
    try:
        with open(os.path.join(root, "_archiver", "state.json")) as f:
            return {int(p): o for p, o in json.load(f)["offsets"].items()}
    except FileNotFoundError:
        return {}


def speed_metrics(url):
    """weft_speed_position and weft_speed_high_watermark per partition from /metrics."""
    out = {"weft_speed_position": {}, "weft_speed_high_watermark": {}}
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for name, p, v in re.findall(r'^(weft_speed_\w+)\{partition="(\d+)"\} (\S+)$', text, re.M):
        if name in out:
            out[name][int(p)] = int(float(v))
    return out


def archived(root, bootstrap):
    """Exit 0 once the archiver's state reaches every high watermark."""
    hw = watermarks(watermark_client(bootstrap))
    got = archiver_offsets(root)
    sys.exit(0 if hw and all(got.get(p, 0) >= hw[p] for p in hw) else 1)


def produce(bootstrap, users, rate, out):
    """Live events, stamped now, at RATE/s until SIGTERM; then flush and report.
    OUT.progress: "unix_ms sent delivered failed" every 0.1 s; OUT.json: the totals;
    OUT.ids: the acknowledged event ids."""
    sys.path.insert(0, os.path.join(REPO, "tests", "python"))
    from profile_client import generate
    from confluent_kafka import Producer
    pb, _ = generate(os.path.join(REPO, "proto"), tempfile.mkdtemp())
    users, rate = int(users), float(rate)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 5, "partitioner": "murmur2_random"})
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    run = now_ms()
    rng = random.Random(run)
    kinds = [pb.EVENT_KIND_VIEW] * 14 + [pb.EVENT_KIND_CLICK] * 3 + [pb.EVENT_KIND_ADD_TO_CART] * 2 \
        + [pb.EVENT_KIND_PURCHASE]
    categories = ["shoes", "dresses", "shirts", "jeans", "bags", "watches"]
    counts = {"sent": 0, "delivered": 0, "failed": 0}
    errors, acked = {}, []

    def done(err, n):
        if err is None:
            counts["delivered"] += 1
            acked.append(n)
        else:
            counts["failed"] += 1
            errors[str(err)] = errors.get(str(err), 0) + 1

    progress = open(out + ".progress", "w")
    start, next_progress = time.monotonic(), 0.0
    while not stopping:
        now = time.monotonic()
        if now >= next_progress:
            progress.write(f"{now_ms()} {counts['sent']} {counts['delivered']} {counts['failed']}\n")
            progress.flush()
            next_progress = now + 0.1
        due = start + counts["sent"] / rate
        if due > now:
            producer.poll(min(due - now, 0.01))
            continue
        n = counts["sent"]
        user = f"u{rng.randrange(users):07d}"
        kind = rng.choice(kinds)
        category = rng.choice(categories)
        event = pb.Event(event_id=f"live-{run}-{n}", tenant=TENANT, user_id=user, ts_ms=now_ms(),
                         kind=kind, item_id=f"i{rng.randrange(2000):06d}", category=category,
                         price_minor=rng.randrange(199, 100000) if kind == pb.EVENT_KIND_PURCHASE else 0,
                         quantity=1)
        producer.produce(TOPIC, key=f"{TENANT}/{user}", value=event.SerializeToString(),
                         on_delivery=lambda err, _msg, n=n: done(err, n))
        counts["sent"] += 1
        producer.poll(0)
    left = producer.flush(180)
    progress.write(f"{now_ms()} {counts['sent']} {counts['delivered']} {counts['failed']}\n")
    with open(out + ".ids", "w") as f:
        f.writelines(f"live-{run}-{n}\n" for n in sorted(acked))
    with open(out + ".json", "w") as f:
        json.dump({**counts, "not_flushed": left, "errors": errors, "rate": rate}, f)
    print(json.dumps({**counts, "not_flushed": left, "errors": errors}))
    sys.exit(0 if counts["failed"] == 0 and left == 0 else 1)


def catchup(metrics_url, root, bootstrap, target, since_ms):
    """Milliseconds from SINCE_MS until the broker, the speed layer and the archiver
    each hold TARGET records (summed over partitions)."""
    target, since_ms = int(target), int(since_ms)
    client = watermark_client(bootstrap)
    reached, deadline = {}, time.monotonic() + 600
    while len(reached) < 3 and time.monotonic() < deadline:
        hw = watermarks(client)
        try:
            speed = sum(speed_metrics(metrics_url)["weft_speed_position"].values())
        except OSError:
            speed = 0
        sums = {"broker": sum(hw.values()) if hw else 0, "speed_layer": speed,
                "archiver": sum(archiver_offsets(root).values())}
        for name, value in sums.items():
            if name not in reached and value >= target:
                reached[name] = now_ms() - since_ms
        time.sleep(0.1)
    print(json.dumps({"target_records": target, "ms_after_restart": reached}))
    sys.exit(0 if len(reached) == 3 else 1)


def duckdb_archive(root):
    import duckdb
    con = duckdb.connect()
    con.execute(f"create view archive as select * from read_parquet('{root}/**/*.parquet', hive_partitioning = true)")
    return con


def checks(metrics_url, root, bootstrap, gen_records, producer):
    """(a) speed positions, (b) archiver offsets at every high watermark; (c) the
    archive holds one row per record and every acknowledged live event."""
    with open(producer + ".json") as f:
        produced = json.load(f)
    client = watermark_client(bootstrap)
    started, deadline = time.monotonic(), time.monotonic() + 300
    while True:
        hw, m, arch = watermarks(client), speed_metrics(metrics_url), archiver_offsets(root)
        pos = m["weft_speed_position"]
        if hw and all(pos.get(p) == hw[p] and arch.get(p) == hw[p] for p in hw):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    con = duckdb_archive(root)
    per_partition = dict(con.execute(
        "select _partition, count(*) from archive group by 1").fetchall())
    rows, coords = con.execute(
        "select count(*), count(distinct (_partition, _offset)) from archive").fetchone()
    live_rows, live_ids = con.execute(
        "select count(*), count(distinct event_id) from archive where event_id like 'live-%'").fetchone()
    missing = con.execute(
        f"select count(*) from read_csv('{producer}.ids', header = false, columns = {{'event_id': 'VARCHAR'}}) a "
        "anti join archive using (event_id)").fetchone()[0]
    expected = int(gen_records) + produced["delivered"]
    partitions = [{"partition": p, "high_watermark": hw[p] if hw else None,
                   "speed_high_watermark_metric": m["weft_speed_high_watermark"].get(p),
                   "speed_position": pos.get(p), "archiver_offset": arch.get(p),
                   "archived_rows": per_partition.get(p, 0)} for p in range(PARTITIONS)]
    out = {
        "waited_secs": round(time.monotonic() - started, 1),
        "partitions": partitions,
        "a_speed_at_watermarks": bool(hw) and all(pos.get(p) == hw[p] for p in hw),
        "b_archiver_at_watermarks": bool(hw) and all(arch.get(p) == hw[p] for p in hw),
        "watermark_sum": sum(hw.values()) if hw else None,
        "generated_records": int(gen_records),
        "live_delivered": produced["delivered"],
        "live_failed": produced["failed"],
        "expected_rows": expected,
        "archived_rows": rows,
        "archived_distinct_offsets": coords,
        "archived_live_rows": live_rows,
        "archived_live_distinct_ids": live_ids,
        "acked_live_missing_from_archive": missing,
    }
    out["c_rows_match"] = (rows == coords == expected == out["watermark_sum"]
                           and live_ids == live_rows == produced["delivered"] and missing == 0)
    print(json.dumps(out, indent=1))
    sys.exit(0 if out["a_speed_at_watermarks"] and out["b_archiver_at_watermarks"]
             and out["c_rows_match"] else 1)


def normalize(value):
    """inspect's ranked lists are [value, count] pairs, HTTP's {"value", "count"} objects."""
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, dict) and set(value) == {"value", "count"}:
        return [value["value"], value["count"]]
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 9)
    return value


def spot_check(bin_, views, http, key, root):
    """(d) GetProfile against `weft batch inspect` of the newest view, at the reply's as_of."""
    con = duckdb_archive(root)
    users = [u for (u,) in con.execute(
        "select user_id from archive where event_id like 'live-%' "
        "group by 1 order by count(*) desc, 1 limit 5").fetchall()] + ["u0000000"]
    results = []
    for user in users:
        req = urllib.request.Request(f"{http}/v1/profiles/{user}",
                                     headers={"Authorization": f"Bearer {key}"})
        served = json.load(urllib.request.urlopen(req, timeout=5))
        at = served["freshness"]["as_of_ms"]
        inspect = json.loads(subprocess.run(
            [bin_, "batch", "inspect", "--views", views, "--user", f"{TENANT}/{user}", "--at", str(at)],
            check=True, capture_output=True, text=True).stdout)
        a, b = normalize(served["features"]), normalize(inspect["features"])
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        results.append({"user": user, "view": inspect["view"],
                        "served_view": served["freshness"]["batch_view_version"],
                        "features": len(b), "differing": diff,
                        "served_diff": {k: a.get(k) for k in diff}, "inspect_diff": {k: b.get(k) for k in diff}})
    out = {"users": results, "all_equal": all(not r["differing"] for r in results)}
    print(json.dumps(out, indent=1))
    sys.exit(0 if out["all_equal"] else 1)


# ------------------------------------------------------------------ summary

def load(work, name):
    with open(os.path.join(work, name)) as f:
        return json.load(f)


def row_of(report):
    return report["rows"][0]


def cell(v):
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def windows_between(row, lo_ms, hi_ms):
    """The timeline windows overlapping [lo_ms, hi_ms] (Unix ms)."""
    start = row["started_unix_ms"]
    return [w for w in row["timeline"]
            if start + w["from_secs"] * 1000 <= hi_ms and start + (w["from_secs"] + 1) * 1000 > lo_ms]


def window_table(windows):
    lines = ["| from s | ok | errors | p99 µs | max µs | max speed_lag_ms | max speed_lag_messages | batch views |",
             "|---|---|---|---|---|---|---|---|"]
    for w in windows:
        views = " ".join(f"v{v}" for v in w["batch_view_versions"]) or "-"
        lines.append(f"| {w['from_secs']:g} | {cell(w['ok'])} | {w['errors']} | {cell(w['p99_us'])} | "
                     f"{cell(w['max_us'])} | {cell(w['max_speed_lag_ms'])} | "
                     f"{cell(w['max_speed_lag_messages'])} | {views} |")
    return lines


def phase_line(label, r):
    return (f"| {label} | {r['qps']:,.0f} | {r['ok']:,} | {r['errors']} | {r['p50_us']:,} | "
            f"{r['p99_us']:,} | {r['p999_us']:,} | {r['max_us']:,} |")


def summary(work, users, events, rate, live_rate, archive_delay_ms):
    base, swaps = row_of(load(work, "a-baseline.json")), row_of(load(work, "a-swaps.json"))
    outage_report = load(work, "b-outage.json")
    outage, b = load(work, "outage.json"), row_of(outage_report)
    checks_, spot = load(work, "checks.json"), load(work, "spot-check.json")
    produced = load(work, "producer.json")
    out = [f"## Batch swaps and broker outage under load ({time.strftime('%Y-%m-%d', time.gmtime())})", "",
           f"{int(users):,} users, {int(events):,} generated events (one tenant), GetProfile at {float(rate):,.0f}/s "
           f"({outage_report['concurrency']} workers, {outage_report['connections']} connections, uniformly random users), "
           f"{os.cpu_count()} cores shared by the load generator, Tansu (sqlite storage), weft serve, weft archive "
           f"(--max-delay-ms {archive_delay_ms}), the batch runs (nice -n 19) and the producer "
           f"(load average before the run: {open(os.path.join(work, 'loadavg-before')).read().strip()}).", "",
           "### A. Batch swaps", "",
           "| phase | QPS | ok | errors | p50 µs | p99 µs | p99.9 µs | max µs |", "|---|---|---|---|---|---|---|---|",
           phase_line(f"baseline ({base['elapsed_secs']:.0f} s)", base),
           phase_line(f"during the swaps ({swaps['elapsed_secs']:.0f} s)", swaps), "",
           f"p99 during the swaps / baseline: **{swaps['p99_us'] / max(base['p99_us'], 1):.2f}** "
           f"(failed requests: baseline {base['errors']}, swaps {swaps['errors']})", ""]
    start = swaps["started_unix_ms"]
    out += ["| swap | view | batch run s | publish → served ms | served at s | first window with it | p99 µs there | max µs there |",
            "|---|---|---|---|---|---|---|---|"]
    with open(os.path.join(work, "swaps.tsv")) as f:
        rows = [line.split("\t") for line in f.read().splitlines()[1:]]
    switch_windows, batch_windows = [], []
    for i, version, started, published, served in rows:
        version, started, published, served = int(version), int(started), int(published), int(served)
        first = next((w for w in swaps["timeline"] if version in w["batch_view_versions"]), None)
        if first:
            switch_windows.append(first)
        batch_windows += windows_between(swaps, started, published)
        out.append(f"| {i} | v{version} | {(published - started) / 1000:.1f} | {served - published:,} | "
                   f"{(served - start) / 1000:.1f} | {first['from_secs']:g} s | {cell(first['p99_us'])} | "
                   f"{cell(first['max_us'])} |" if first else f"| {i} | v{version} | - | - | - | not seen | - | - |")
    p99s = lambda ws: [w["p99_us"] for w in ws if w["p99_us"] is not None]
    base_p99s = p99s(base["timeline"])
    busy = {w["from_secs"] for w in batch_windows}
    idle = [w for w in swaps["timeline"] if w["from_secs"] not in busy]
    out += ["", "Per-second p99 (µs), median / max over windows:", "",
            "| windows | n | median p99 | max p99 |", "|---|---|---|---|"]
    for label, ws in [("baseline, all", base["timeline"]), ("swap phase, with a switch", switch_windows),
                      ("swap phase, while a batch job runs", batch_windows),
                      ("swap phase, no batch job", idle)]:
        v = p99s(ws)
        out.append(f"| {label} | {len(v)} | {cell(int(statistics.median(v))) if v else '-'} | "
                   f"{cell(max(v)) if v else '-'} |")
    # B.
    st = b["started_unix_ms"]
    down = windows_between(b, outage["stopped_ms"], outage["restarted_ms"])
    reach = outage["catchup"]["ms_after_restart"]
    out += ["", "### B. Broker outage", "",
            f"Live production {float(live_rate):,.0f} events/s (idempotent producer, stamped now). The broker got "
            f"SIG{outage['signal']} {(outage['stopped_ms'] - st) / 1000:.1f} s into the phase and was restarted "
            f"on the same port and sqlite file {(outage['restarted_ms'] - outage['stopped_ms']) / 1000:.1f} s later.", "",
            "| phase | QPS | ok | errors | p50 µs | p99 µs | p99.9 µs | max µs |", "|---|---|---|---|---|---|---|---|",
            phase_line(f"whole phase ({b['elapsed_secs']:.0f} s)", b), "",
            f"- windows while the broker was down ({len(down)}): max per-second p99 "
            f"{cell(max(p99s(down)) if p99s(down) else None)} µs (baseline median {cell(int(statistics.median(base_p99s)))} µs), "
            f"max latency {cell(max((w['max_us'] or 0) for w in down))} µs, errors {sum(w['errors'] for w in down)}",
            f"- freshness in replies: speed_lag_ms up to {cell(max((w['max_speed_lag_ms'] or 0) for w in down))} "
            f"while the broker was down, {cell(max((w['max_speed_lag_ms'] or 0) for w in b['timeline']))} at most "
            f"(until the speed layer caught up); speed_lag_messages up to "
            f"{cell(max((w['max_speed_lag_messages'] or 0) for w in down))} while it was down (no watermarks can be "
            f"fetched then: the last ones stay) and {cell(max((w['max_speed_lag_messages'] or 0) for w in b['timeline']))} "
            f"right after the restart",
            f"- after the restart, everything produced before it ({outage['catchup']['target_records']:,} records: "
            f"generated + {outage['produced_before_restart']:,} live) was in the broker after "
            f"{cell(reach.get('broker'))} ms, applied by the speed layer after {cell(reach.get('speed_layer'))} ms, "
            f"committed by the archiver after {cell(reach.get('archiver'))} ms",
            f"- producer: {produced['sent']:,} sent, {produced['delivered']:,} acknowledged, {produced['failed']} failed",
            "", "Timeline around the outage (1 s windows from the phase start):", ""]
    lo = outage["stopped_ms"] - 3000
    hi = outage["restarted_ms"] + max(reach.values(), default=0) + 3000
    out += window_table(windows_between(b, lo, hi))
    c = checks_
    out += ["", "### Nothing lost", "",
            "| partition | high watermark | speed position | archiver offset | archived rows |", "|---|---|---|---|---|"]
    for p in c["partitions"]:
        out.append(f"| {p['partition']} | {cell(p['high_watermark'])} | {cell(p['speed_position'])} | "
                   f"{cell(p['archiver_offset'])} | {cell(p['archived_rows'])} |")
    ok = lambda v: "yes" if v else "**NO**"
    out += ["",
            f"- (a) speed layer positions = high watermarks on every partition: {ok(c['a_speed_at_watermarks'])}",
            f"- (b) archiver committed offsets = high watermarks: {ok(c['b_archiver_at_watermarks'])}",
            f"- (c) archived rows {c['archived_rows']:,} (distinct offsets {c['archived_distinct_offsets']:,}) = "
            f"watermark sum {cell(c['watermark_sum'])} = generated {c['generated_records']:,} + acknowledged live "
            f"{c['live_delivered']:,}; live rows {c['archived_live_rows']:,} with {c['archived_live_distinct_ids']:,} "
            f"distinct ids; acknowledged events missing from the archive: {c['acked_live_missing_from_archive']}: "
            f"{ok(c['c_rows_match'])}",
            f"- (d) GetProfile = `weft batch inspect` of v{spot['users'][0]['view'].lstrip('v0')} (built after "
            f"the outage) at the reply's as_of, for {len(spot['users'])} users (the 5 with most live events and "
            f"u0000000): {ok(spot['all_equal'])}"]
    print("\n".join(out))


COMMANDS = {"archived": archived, "produce": produce, "catchup": catchup, "checks": checks,
            "spot-check": spot_check, "summary": summary}
COMMANDS[sys.argv[1]](*sys.argv[2:])
PY
)")

main "$@"
