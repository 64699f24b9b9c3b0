"""The worked example of docs/batch.md ("Training sets"), run by the test
suite (tests/cli.rs): labels from the archive with DuckDB, then the
training set `weft batch training-set` wrote, read with pyarrow/pandas and
DuckDB.

usage: training_example.py labels ARCHIVE_DIR LABELS.parquet
       training_example.py read TRAIN.parquet LABELS.parquet
"""
import sys

import duckdb
import pyarrow.parquet as pq


def make_labels(archive, out):
    con = duckdb.connect()
    con.execute(
        f"""CREATE VIEW events AS SELECT * FROM read_parquet(
              '{archive}/**/*.parquet', hive_partitioning = true, union_by_name = true)"""
    )
    # One label time per user, somewhere in their history (deterministic);
    # the label: did the user buy within 24 h *after* it. Features must be
    # as of ts_ms, so nothing of those 24 h may leak into them.
    con.execute(
        f"""COPY (
          WITH anchors AS (
            SELECT tenant, user_id,
                   CAST(min(ts_ms) + (max(ts_ms) - min(ts_ms))
                        * CAST(hash(user_id) % 1000 AS BIGINT) // 1000 AS BIGINT) AS ts_ms
            FROM events GROUP BY tenant, user_id)
          SELECT a.tenant, a.user_id, a.ts_ms,
                 EXISTS (SELECT 1 FROM events e
                         WHERE e.tenant = a.tenant AND e.user_id = a.user_id
                           AND e.kind = 'purchase'
                           AND e.ts_ms > a.ts_ms AND e.ts_ms <= a.ts_ms + 86400000)
                   AS purchased_24h
          FROM anchors a ORDER BY a.tenant, a.user_id
        ) TO '{out}' (FORMAT parquet)"""
    )
    n, bought = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE purchased_24h) FROM '{out}'"
    ).fetchone()
    print(f"labels: {n} rows, {bought} purchased within 24 h")


def read(train, labels):
    # pandas, through pyarrow.
    df = pq.read_table(train).to_pandas()
    want = pq.read_table(labels).to_pandas()
    assert len(df) == len(want), (len(df), len(want))
    for c in want.columns:  # the label columns, unchanged, in order
        assert (df[c].values == want[c].values).all(), c
    assert df["views_7d"].dtype == "int64", df["views_7d"].dtype
    means = df.groupby("purchased_24h")["views_7d"].mean()
    print(f"pandas: {len(df)} rows; mean views_7d by purchased_24h: {means.round(2).to_dict()}")
    # DuckDB, straight from the file.
    rows = duckdb.sql(
        f"""SELECT purchased_24h, count(*) AS n, avg(spend_90d) / 100 AS spend
            FROM '{train}' GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    print(f"duckdb: {rows}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("labels", "read"):
        sys.exit(__doc__)
    (make_labels if sys.argv[1] == "labels" else read)(sys.argv[2], sys.argv[3])
