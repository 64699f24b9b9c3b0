"""Checks a generated archive with DuckDB and pyarrow against the JSONL the
same `weft gen` run wrote, and against the schema in docs/archive.md.

usage: check_archive.py ARCHIVE_DIR JSONL_FILE
Exits non-zero with a message on the first mismatch.
"""
import json
import sys
from collections import Counter

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

EXPECTED = {
    "event_id": pa.string(),
    "user_id": pa.string(),
    "ts_ms": pa.int64(),
    "kind": pa.string(),
    "item_id": pa.string(),
    "category": pa.string(),
    "price_minor": pa.int64(),
    "quantity": pa.int32(),
    "_partition": pa.int32(),
    "_offset": pa.int64(),
    "_ingest_ms": pa.int64(),
}


def fail(msg):
    print(f"check_archive: {msg}", file=sys.stderr)
    sys.exit(1)


def main(archive, jsonl):
    rows = [json.loads(line) for line in open(jsonl)]
    want = {(r["_partition"], r["_offset"]): r for r in rows}

    # pyarrow: schema and content.
    dataset = ds.dataset(archive, format="parquet", partitioning="hive")
    schema = dataset.schema
    for name, typ in EXPECTED.items():
        if schema.field(name).type != typ:
            fail(f"pyarrow: column {name} is {schema.field(name).type}, expected {typ}")
    if not pa.types.is_map(schema.field("attributes").type):
        fail(f"pyarrow: attributes is {schema.field('attributes').type}, expected a map")
    for hive in ("tenant", "date"):
        if hive not in schema.names:
            fail(f"pyarrow: hive column {hive} missing from {schema.names}")
    table = dataset.to_table()
    if table.num_rows != len(rows):
        fail(f"pyarrow: {table.num_rows} rows, JSONL has {len(rows)}")
    got = table.to_pylist()
    for r in got:
        w = want.get((r["_partition"], r["_offset"]))
        if w is None:
            fail(f"pyarrow: unexpected record {r['_partition']}:{r['_offset']}")
        for key in ("event_id", "user_id", "ts_ms", "kind", "item_id", "category", "price_minor", "quantity", "tenant", "_ingest_ms"):
            if r[key] != w[key]:
                fail(f"pyarrow: {r['_partition']}:{r['_offset']} {key} = {r[key]!r}, JSONL {w[key]!r}")
        if dict(r["attributes"]) != w["attributes"]:
            fail(f"pyarrow: {r['_partition']}:{r['_offset']} attributes differ")

    # DuckDB: hive partitioning and aggregate agreement.
    con = duckdb.connect()
    glob = f"{archive}/**/*.parquet"
    n, revenue, tenants = con.execute(
        "SELECT count(*), sum(price_minor * quantity), count(DISTINCT tenant) "
        "FROM read_parquet(?, hive_partitioning = true)",
        [glob],
    ).fetchone()
    if n != len(rows):
        fail(f"duckdb: {n} rows, JSONL has {len(rows)}")
    want_revenue = sum(r["price_minor"] * r["quantity"] for r in rows)
    if revenue != want_revenue:
        fail(f"duckdb: revenue {revenue}, JSONL {want_revenue}")
    want_kinds = Counter((r["tenant"], r["kind"]) for r in rows)
    got_kinds = Counter({
        (t, k): c
        for t, k, c in con.execute(
            "SELECT tenant, kind, count(*) FROM read_parquet(?, hive_partitioning = true) GROUP BY ALL",
            [glob],
        ).fetchall()
    })
    if got_kinds != want_kinds:
        fail(f"duckdb: per tenant/kind counts differ: {got_kinds} vs {want_kinds}")
    bad_dates = con.execute(
        "SELECT count(*) FROM read_parquet(?, hive_partitioning = true) "
        "WHERE strftime(epoch_ms(ts_ms), '%Y-%m-%d') <> CAST(date AS VARCHAR)",
        [glob],
    ).fetchone()[0]
    if bad_dates:
        fail(f"duckdb: {bad_dates} rows sit in a date= directory that is not their UTC day")
    devices = con.execute(
        "SELECT count(*) FROM read_parquet(?, hive_partitioning = true) WHERE attributes['device'] IS NOT NULL",
        [glob],
    ).fetchone()[0]
    if devices != sum(1 for r in rows if "device" in r["attributes"]):
        fail("duckdb: attributes['device'] does not match the JSONL")
    # Arrival never precedes the event in a generated archive, and some
    # events (the late ones) arrive more than a minute after.
    early, late = con.execute(
        "SELECT count(*) FILTER (WHERE _ingest_ms < ts_ms), "
        "count(*) FILTER (WHERE _ingest_ms - ts_ms > 60000) "
        "FROM read_parquet(?, hive_partitioning = true)",
        [glob],
    ).fetchone()
    if early or (n >= 10000 and not late):
        fail(f"duckdb: {early} rows arrive before their event time, {late} more than a minute late")
    print(f"check_archive: {n} rows agree (pyarrow and duckdb), {tenants} tenants, {late} late arrivals")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail(__doc__)
    main(sys.argv[1], sys.argv[2])
