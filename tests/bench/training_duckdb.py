"""The DuckDB anchor of tests/bench/training_vs_duckdb.sh: labels, the same
point-in-time features as SQL, and the comparison with weft's output.

usage: training_duckdb.py labels ARCHIVE LABELS.parquet ROWS
       training_duckdb.py features ARCHIVE LABELS.parquet OUT.parquet THREADS
       training_duckdb.py compare WEFT.parquet DUCKDB.parquet
"""
import sys
import time

import duckdb

# (name, SQL over the known events of a label row `t`): the example spec's
# features of these kinds, bucket-aligned trailing edge as docs/semantics.md
# states it: from = (t // bucket - buckets + 1) * bucket; leading edge t.
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def since(bucket, n):
    return f"ts_ms >= (t // {bucket} - {n - 1}) * {bucket}"


FEATURES = [
    ("views_1h", f"count(*) FILTER (WHERE kind = 'view' AND {since(MIN, 60)})"),
    ("views_24h", f"count(*) FILTER (WHERE kind = 'view' AND {since(HOUR, 24)})"),
    ("views_7d", f"count(*) FILTER (WHERE kind = 'view' AND {since(6 * HOUR, 28)})"),
    ("searches_24h", f"count(*) FILTER (WHERE kind = 'search' AND {since(HOUR, 24)})"),
    ("carts_7d", f"count(*) FILTER (WHERE kind = 'add_to_cart' AND {since(6 * HOUR, 28)})"),
    ("purchases_90d", f"count(*) FILTER (WHERE kind = 'purchase' AND {since(DAY, 90)})"),
    ("spend_90d", f"coalesce(sum(price_minor * quantity) FILTER (WHERE kind = 'purchase' AND {since(DAY, 90)}), 0)"),
    ("big_purchases_90d", f"count(*) FILTER (WHERE kind = 'purchase' AND price_minor * quantity >= 50000 AND {since(DAY, 90)})"),
    ("max_cart_price_30d", f"max(price_minor) FILTER (WHERE kind = 'add_to_cart' AND {since(DAY, 30)})"),
]
NAMES = [n for n, _ in FEATURES]


def events_view(con, archive):
    con.execute(
        f"""CREATE VIEW events AS SELECT tenant, user_id, event_id, ts_ms, kind, price_minor,
              quantity, _partition, _offset, coalesce(_ingest_ms, ts_ms) AS arrival
            FROM read_parquet('{archive}/**/*.parquet', hive_partitioning = true,
                              union_by_name = true)"""
    )


def labels(archive, out, rows):
    con = duckdb.connect()
    events_view(con, archive)
    # `rows` label rows: users drawn with repetition, times uniform over the
    # data's span (some before a user's first event), a label column.
    con.execute(
        f"""COPY (
          WITH users AS (SELECT DISTINCT tenant, user_id FROM events),
               span AS (SELECT min(ts_ms) AS lo, max(ts_ms) AS hi FROM events),
               numbered AS (SELECT *, row_number() OVER (ORDER BY tenant, user_id) - 1 AS n FROM users),
               picks AS (SELECT i, CAST(hash(i) % (SELECT count(*) FROM users) AS BIGINT) AS n,
                                CAST(hash(i + 7) % 1000000 AS BIGINT) AS frac
                         FROM range({rows}) r(i))
          SELECT u.tenant, u.user_id,
                 CAST(s.lo + (s.hi - s.lo) * p.frac // 1000000 AS BIGINT) AS ts_ms,
                 p.i % 2 = 0 AS label
          FROM picks p JOIN numbered u USING (n), span s ORDER BY p.i
        ) TO '{out}' (FORMAT parquet)"""
    )
    print(con.execute(f"SELECT count(*) FROM '{out}'").fetchone()[0], "label rows")


def features(archive, labels_path, out, threads):
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    events_view(con, archive)
    started = time.time()
    cols = ",\n  ".join(f"{sql} AS {name}" for name, sql in FEATURES)
    con.execute(
        f"""COPY (
          WITH l AS (SELECT *, row_number() OVER () - 1 AS row_id FROM '{labels_path}'),
          known AS (
            SELECT l.row_id, l.ts_ms AS t, e.kind, e.ts_ms, e.price_minor, e.quantity
            FROM l JOIN events e ON e.tenant = l.tenant AND e.user_id = l.user_id
            WHERE e.ts_ms <= l.ts_ms AND e.arrival <= l.ts_ms
            QUALIFY row_number() OVER (PARTITION BY l.row_id, e.event_id
                                       ORDER BY e._partition, e._offset) = 1),
          f AS (SELECT row_id, {cols} FROM known GROUP BY row_id)
          SELECT l.* EXCLUDE (row_id), {", ".join(
              f"coalesce(f.{n}, 0) AS {n}" if n != "max_cart_price_30d" else f"f.{n}"
              for n in NAMES)}
          FROM l LEFT JOIN f USING (row_id) ORDER BY l.row_id
        ) TO '{out}' (FORMAT parquet)"""
    )
    print(f"duckdb: {time.time() - started:.1f} s")


def compare(weft, anchor):
    con = duckdb.connect()
    cols = ", ".join(NAMES)
    n, differ = con.execute(
        f"""WITH a AS (SELECT row_number() OVER () AS r, tenant, user_id, ts_ms, {cols} FROM '{weft}'),
                 b AS (SELECT row_number() OVER () AS r, tenant, user_id, ts_ms, {cols} FROM '{anchor}')
            SELECT count(*), count(*) FILTER (WHERE
              (a.tenant, a.user_id, a.ts_ms, {", ".join("a." + c for c in NAMES)})
              IS DISTINCT FROM (b.tenant, b.user_id, b.ts_ms, {", ".join("b." + c for c in NAMES)}))
            FROM a JOIN b USING (r)"""
    ).fetchone()
    print(f"compare: {n} rows, {differ} differ")
    if differ:
        sys.exit(1)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "labels":
        labels(args[0], args[1], int(args[2]))
    elif cmd == "features":
        features(args[0], args[1], args[2], int(args[3]))
    elif cmd == "compare":
        compare(args[0], args[1])
    else:
        sys.exit(__doc__)
