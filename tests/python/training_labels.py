"""Label files for the training-set tests on a cluster (tests/cluster.rs).

usage: training_labels.py make ARCHIVE_DIR LABELS.parquet
       training_labels.py same A.parquet B.parquet

make: per user of the archive, label times spread from a day before its
first event to a day after its last, and at its events' exact times (so
late arrivals, duplicates and events exactly at ts_ms are all probed);
label users the archive does not have; the rows shuffled, with a label
and a weight column passed through.
same: the two Parquet files hold the same table, schema, rows and order.
"""
import sys

import duckdb
import pyarrow.parquet as pq


def make(archive, out):
    con = duckdb.connect()
    con.execute(
        f"""CREATE VIEW events AS SELECT * FROM read_parquet(
              '{archive}/**/*.parquet', hive_partitioning = true, union_by_name = true)"""
    )
    con.execute(
        f"""COPY (
          WITH span AS (
            SELECT tenant, user_id, min(ts_ms) AS lo, max(ts_ms) AS hi
            FROM events GROUP BY tenant, user_id),
          spread AS (
            SELECT tenant, user_id,
                   lo - 86400000 + (hi - lo + 2 * 86400000) * k // 4 AS ts_ms, k AS label
            FROM span, range(0, 5) r(k)),
          exact AS (
            SELECT tenant, user_id, ts_ms, 9 AS label FROM events
            WHERE hash(event_id) % 7 = 0),
          nobody AS (
            SELECT (SELECT min(tenant) FROM span) AS tenant, 'nobody-' || i AS user_id,
                   CAST(1700000000000 + i AS BIGINT) AS ts_ms, 0 AS label
            FROM range(0, 50) r(i)),
          labels AS (
            SELECT * FROM spread UNION ALL SELECT * FROM exact UNION ALL SELECT * FROM nobody)
          SELECT tenant, user_id, CAST(ts_ms AS BIGINT) AS ts_ms, CAST(label AS BIGINT) AS label,
                 CAST(hash(user_id, ts_ms) % 100 AS DOUBLE) / 100 AS weight
          FROM labels ORDER BY hash(tenant, user_id, ts_ms, label)
        ) TO '{out}' (FORMAT parquet)"""
    )
    (n,) = con.execute(f"SELECT count(*) FROM '{out}'").fetchone()
    print(f"labels: {n} rows")


def same(a, b):
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.schema.equals(tb.schema), f"schemas differ:\n{ta.schema}\n{tb.schema}"
    assert ta.num_rows == tb.num_rows, (ta.num_rows, tb.num_rows)
    for name in ta.column_names:
        ca, cb = ta.column(name), tb.column(name)
        if not ca.equals(cb):
            la, lb = ca.to_pylist(), cb.to_pylist()
            i = next(i for i in range(len(la)) if la[i] != lb[i])
            raise AssertionError(f"column {name}, row {i}: {la[i]!r} != {lb[i]!r}")
    print(f"same: {ta.num_rows} rows, {ta.num_columns} columns")


if __name__ == "__main__":
    {"make": make, "same": same}[sys.argv[1]](*sys.argv[2:])
