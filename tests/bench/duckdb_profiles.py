#!/usr/bin/env python3
"""DuckDB peer for Weft's batch job: the same per-user partials, in SQL.

    python3 tests/bench/duckdb_profiles.py ARCHIVE_DIR SPEC_TOML
            [--threads N] [--memory-limit 2GB] [--out DIR]

Weft's batch job (batch/src/job.rs) reads the hive-partitioned Parquet archive,
drops duplicate events (the first occurrence of (tenant, user_id, event_id) in
(_partition, _offset) order wins) and folds each event into one partial per
(tenant, user_id, feature, bucket = floor(ts_ms / bucket_ms)), bucket_ms by the
rule of docs/semantics.md. The window only picks the bucket size: the view
holds every bucket's partial; serving folds the ones a window covers.

Here: (a) load + dedup into temp table `ev`, (b) per feature one `GROUP BY
tenant, user_id, bucket` into temp table `f_<name>`. Printed: phase times,
events after dedup and partial rows (comparable to Weft's `partials` count: as
in Weft, an event passing the filter creates its bucket even when the field is
missing). --out also writes DIR/<name>.parquet (timed separately).

Not exactly Weft's partials (the work is comparable, the encodings are not):
- distinct_count: approx_count_distinct() gives a per-bucket HLL *estimate*,
  not a mergeable sketch (Weft keeps a DataSketches HLL, lg_k = 12, per bucket);
- top_k: histogram() -> MAP of exact counts (NULL when no value, Weft: empty);
- last: value plus its (ts_ms, event_id) stamp; last_n: the values only, newest
  first (Weft keeps each one's stamp), exact also with distinct = true;
- no archiver-state boundary filter and no recommendations (Weft computes both).
Memory: `ev` lives in memory (~165 bytes/event with attributes); a memory limit
well below that fails instead of spilling.
"""
import argparse
import os
import sys
import tempfile
import time
import tomllib

import duckdb

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
UNIT_MS = {"m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
STANDARD_BUCKETS = [MINUTE, 5 * MINUTE, 15 * MINUTE, HOUR, 6 * HOUR, DAY]
TARGET_BUCKETS = 24
I64_MAX = 2**63 - 1
# Field values as SQL, NULL when missing (empty item_id/category, absent attribute).
STRING_FIELDS = {"item_id": "nullif(item_id, '')", "category": "nullif(category, '')", "kind": "kind"}
NUMERIC_FIELDS = {"price": "price_minor", "quantity": "quantity::BIGINT",  # revenue saturates
                  "revenue": f"least(price_minor::HUGEINT * quantity, {I64_MAX})::BIGINT"}
COLUMNS = ["tenant", "user_id", "event_id", "ts_ms", "kind", "item_id", "category", "price_minor",
           "quantity", "attributes"]


def parse_duration(s: str) -> int:
    s = s.strip()
    num, unit = s[:-1], s[-1:]
    if not num.isdigit() or unit not in UNIT_MS or int(num) <= 0:
        raise ValueError(f"'{s}' is not a duration like 15m, 24h, 7d or 2w")
    return int(num) * UNIT_MS[unit]


def bucket_ms(f: dict) -> int:
    """Explicit `bucket`, else the largest standard bucket giving >= 24 per window."""
    window = None if f["window"] == "lifetime" else parse_duration(f["window"])
    if "bucket" in f:
        b = parse_duration(f["bucket"])
        if window is not None and window % b:
            raise ValueError(f"{f['name']}: bucket {f['bucket']} does not divide window {f['window']}")
        return b
    if window is None:
        return DAY
    fits = [b for b in STANDARD_BUCKETS if window % b == 0]
    big = [b for b in fits if window // b >= TARGET_BUCKETS]
    if not fits:
        raise ValueError(f"{f['name']}: no standard bucket divides window {f['window']}; set bucket")
    return max(big) if big else min(fits)


def quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def field_sql(name: str) -> str:
    if name.startswith("attr.") and len(name) > 5:
        return f"attributes[{quote(name[5:])}]"  # NULL when absent
    if name not in STRING_FIELDS | NUMERIC_FIELDS:
        raise ValueError(f"unknown field '{name}'")
    return (STRING_FIELDS | NUMERIC_FIELDS)[name]


def literal(field: str, v) -> str:
    numeric = field in NUMERIC_FIELDS
    if isinstance(v, int) and not isinstance(v, bool) and numeric:
        return str(v)
    if isinstance(v, str) and not numeric:
        return quote(v)
    raise ValueError(f"{v!r} does not have the type of field '{field}'")


def condition_sql(c: dict) -> str:
    """SQL three-valued logic gives Weft's rule: a condition on a missing
    (NULL) field is NULL, i.e. false in WHERE, except `missing`/`exists`."""
    field, op = c["field"], c["op"]
    v = field_sql(field)
    if op in ("exists", "missing"):
        return f"{v} IS {'NOT ' if op == 'exists' else ''}NULL"
    if op in ("in", "not_in"):
        items = c.get("values", c.get("value"))
        lits = ", ".join(literal(field, x) for x in items)
        return f"{v} {'NOT ' if op == 'not_in' else ''}IN ({lits})"
    sym = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    if sym in ("=", "<>"):
        return f"{v} {sym} {literal(field, c['value'])}"
    if field not in NUMERIC_FIELDS or not isinstance(c["value"], int):
        raise ValueError(f"op '{op}' needs a numeric field and an integer value")
    return f"{v} {sym} {c['value']}"


def feature_sql(f: dict, b: int) -> str:
    conds = [f"kind IN ({', '.join(quote(k) for k in f['kinds'])})"] if f.get("kinds") else []
    conds += [condition_sql(c) for c in f.get("where", [])]
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    agg = f["aggregate"]
    n = int(f["n"]) if agg == "last_n" else 0  # Weft requires n for last_n
    # Aggregates skip NULLs (missing fields), but the bucket's row still exists.
    v = field_sql(f["field"]) if agg not in ("count", "first_seen", "last_seen") else "NULL"
    stamp = f"CASE WHEN {v} IS NOT NULL THEN {{'ts_ms': ts_ms, 'event_id': event_id}} END"
    keys, grp = "tenant, user_id, ts_ms // " + str(b) + " AS bucket", "GROUP BY tenant, user_id, bucket"
    if agg == "last_n" and f.get("distinct", False):
        # Exact Weft partial: each value once at its latest stamp, newest n values.
        inner = f"SELECT {keys}, {v} AS v, max({stamp}) AS stamp FROM ev {where} {grp}, v"
        return f"SELECT tenant, user_id, bucket, arg_max(v, stamp, {n}) AS values FROM ({inner}) {grp}"
    sat_sum = f"least(coalesce(sum({v}), 0), {I64_MAX})::BIGINT AS sum"
    cols = {
        "count": "count(*) AS count",
        "sum": sat_sum,
        "min": f"min({v}) AS min",
        "max": f"max({v}) AS max",
        "avg": f"{sat_sum}, count({v}) AS count",
        "last": f"arg_max({v}, {stamp}) AS value, max({stamp}) AS stamp",
        "last_n": f"arg_max({v}, {stamp}, {n}) AS values",  # newest first
        "top_k": f"histogram({v}) AS counts",
        "distinct_count": f"approx_count_distinct({v}) AS estimate",
        "first_seen": "min(ts_ms) AS first_seen",
        "last_seen": "max(ts_ms) AS last_seen",
    }[agg]
    return f"SELECT {keys}, {cols} FROM ev {where} {grp}"


def needed_columns(features: list) -> list:
    """Columns the SQL of all features mentions (attributes only for attr.*)."""
    text = " ".join(feature_sql(f, 1) for f in features)
    return [c for c in COLUMNS if c in ("tenant", "user_id", "ts_ms") or c in text]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive")
    ap.add_argument("spec")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--out", help="also write DIR/<feature>.parquet")
    args = ap.parse_args()

    with open(args.spec, "rb") as fh:
        features = tomllib.load(fh)["feature"]
    plans = [(f["name"], bucket_ms(f), feature_sql(f, bucket_ms(f))) for f in features]
    cols = ", ".join(needed_columns(features))
    source = f"read_parquet({quote(os.path.join(args.archive, '*/*/*.parquet'))}, hive_partitioning = true)"
    if args.out:
        os.makedirs(args.out, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="weft-duckdb-") as spill:
        con = duckdb.connect()
        con.execute(f"SET threads = {int(args.threads)}")
        con.execute(f"SET memory_limit = {quote(args.memory_limit)}")
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"SET temp_directory = {quote(spill)}")
        rows = con.sql(f"SELECT count(*) FROM {source}").fetchone()[0]  # footers only, untimed

        t0 = time.perf_counter()
        # Keep the first occurrence per (tenant, user_id, event_id) in (_partition,
        # _offset) order. Same result as `QUALIFY row_number() OVER (PARTITION BY
        # tenant, user_id, event_id ORDER BY _partition, _offset) = 1`, but about
        # twice as fast: duplicates are rare, so only the repeated keys go through
        # the window, and the later copies (a (_partition, _offset) pair names one
        # record, docs/archive.md) are removed from the full scan by an anti join.
        con.execute(f"""CREATE TEMP TABLE ev AS
            WITH repeated AS (SELECT tenant, user_id, event_id FROM {source}
                              GROUP BY ALL HAVING count(*) > 1),
            later AS (SELECT tenant, user_id, _partition, _offset FROM {source}
                      SEMI JOIN repeated USING (tenant, user_id, event_id)
                      QUALIFY row_number() OVER (PARTITION BY tenant, user_id, event_id
                                                 ORDER BY _partition, _offset) > 1)
            SELECT {cols} FROM {source} ANTI JOIN later USING (tenant, user_id, _partition, _offset)""")
        t1 = time.perf_counter()
        secs, counts, write = [], [], 0.0
        for name, b, sql in plans:
            s = time.perf_counter()
            con.execute(f'CREATE TEMP TABLE "f_{name}" AS {sql}')
            w = time.perf_counter()
            if args.out:
                path = os.path.join(args.out, f"{name}.parquet")
                con.execute(f'COPY "f_{name}" TO {quote(path)} (FORMAT parquet)')
            secs.append(w - s)
            write += time.perf_counter() - w
            counts.append(con.sql(f'SELECT count(*) FROM "f_{name}"').fetchone()[0])
            # Weft streams partials out as it goes; don't let them pile up in memory.
            con.execute(f'DROP TABLE "f_{name}"')
        t2 = time.perf_counter()
        events = con.sql("SELECT count(*) FROM ev").fetchone()[0]
        con.close()

    for (name, b, _), n, sec in zip(plans, counts, secs):
        print(f"  {name:<24} bucket {b // MINUTE:>5} min  {n:>10} partial rows  {sec:6.2f} s")
    partials, aggs = sum(counts), sum(secs)
    write = f", write {write:.2f} s" if args.out else ""
    print(f"duckdb: total {t2 - t0:.2f} s (dedup {t1 - t0:.2f} s, aggregates {aggs:.2f} s{write}), "
          f"{events} events after dedup ({rows - events} duplicates of {rows} rows), "
          f"{partials} partial rows, {len(plans)} features, threads {args.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
