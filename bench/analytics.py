#!/usr/bin/env python3
"""Runs Livora's funnel and retention answers (from `livora bench analytics`) against DuckDB and
chDB on the same Parquet file, checks that all three agree, and prints median latencies and Livora's
speed-up.

DuckDB has no windowFunnel: one ASOF LEFT JOIN per step gives the same answer (from every
first-step event, the earliest next step at or after the previous one, within the window of
the first step). chDB runs ClickHouse's own windowFunnel on a MergeTree table. Retention is
the same SQL in both (cohort = week of the first start event ever; returns by week), since
ClickHouse's `retention()` aggregate has no "first occurrence" cohort.
"""
import json
import statistics
import sys
import time

import chdb.session
import duckdb

RUNS = 5


def timed(fn):
    times, result = [], None
    for _ in range(RUNS):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return result, statistics.median(times)


def levels_to_counts(rows, steps):
    """[(level, persons)] -> persons reaching each step."""
    by_level = {int(level): int(n) for level, n in rows}
    return [sum(n for level, n in by_level.items() if level >= i + 1) for i in range(steps)]


def duckdb_funnel(con, steps, window_us, lo, hi):
    names = [s.replace("'", "''") for s in steps]
    ctes = [f"s1 AS (SELECT person, ts AS t1 FROM e WHERE event = '{names[0]}' AND ts >= {lo} AND ts < {hi})"]
    for i in range(2, len(steps) + 1):
        prev_cols = ", ".join(f"s{i-1}.t{k}" for k in range(1, i))
        ctes.append(
            f"s{i} AS (SELECT s{i-1}.person, {prev_cols}, x.ts AS t{i} FROM s{i-1} "
            f"ASOF LEFT JOIN (SELECT person, ts FROM e WHERE event = '{names[i-1]}') x "
            f"ON s{i-1}.person = x.person AND x.ts >= s{i-1}.t{i-1})"
        )
    n = len(steps)
    case = " ".join(
        f"WHEN t{k} IS NOT NULL AND t{k} <= t1 + {window_us} THEN {k}" for k in range(n, 1, -1)
    )
    sql = (
        "WITH " + ", ".join(ctes) +
        f", lv AS (SELECT person, max(CASE {case} ELSE 1 END) AS level FROM s{n} GROUP BY person) "
        "SELECT level, count(*) FROM lv GROUP BY level"
    )
    return con.execute(sql).fetchall()


def main():
    livora = json.load(open(sys.argv[1]))
    parquet = sys.argv[2]
    steps, window_us = livora["steps"], livora["window_seconds"] * 1_000_000
    lo, hi = livora["from_us"], livora["to_us"]

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE e AS SELECT CAST(person AS BIGINT) AS person, ts, event, category, revenue "
        "FROM read_parquet(?)",
        [parquet],
    )
    duck_rows, duck_ms = timed(lambda: duckdb_funnel(con, steps, window_us, lo, hi))
    duck = levels_to_counts(duck_rows, len(steps))

    sess = chdb.session.Session()
    sess.query("CREATE DATABASE IF NOT EXISTS b")
    sess.query(
        "CREATE TABLE b.e (person UInt64, ts UInt64, event String, category String, revenue Nullable(Float64)) "
        "ENGINE = MergeTree ORDER BY (person, ts)"
    )
    # chDB reads Parquet columns as Nullable, which MergeTree refuses as sort keys: an explicit
    # schema, then INSERT ... SELECT.
    sess.query(
        f"INSERT INTO b.e SELECT assumeNotNull(person), toUInt64(assumeNotNull(ts)), assumeNotNull(event), "
        f"ifNull(category, ''), revenue FROM file('{parquet}', Parquet)"
    )
    conds = ", ".join("event = '{}'".format(s.replace("'", "\\'")) for s in steps)
    ch_sql = (
        f"SELECT level, count() FROM (SELECT person, windowFunnel({window_us})(ts, {conds}) AS level "
        f"FROM b.e WHERE ts >= {lo} AND ts < {hi} GROUP BY person) WHERE level > 0 GROUP BY level FORMAT JSONCompact"
    )
    ch_text, ch_ms = timed(lambda: sess.query(ch_sql).bytes())
    ch = levels_to_counts(json.loads(ch_text)["data"], len(steps))

    # Retention: cohorts by the week of each person's first start event ever, returns by week.
    r = livora["retention"]
    r0, wk, nper = r["from_us"], r["period_us"], r["periods"]
    start_ev, ret_ev = r["start_event"].replace("'", "''"), r["return_event"].replace("'", "''")
    duck_ret_sql = f"""
        WITH firsts AS (SELECT person, min(ts) AS f FROM e WHERE event = '{start_ev}' GROUP BY person),
        cohort AS (SELECT person, CAST(floor((f - {r0}) / {wk}) AS BIGINT) AS c FROM firsts
                   WHERE f >= {r0} AND f < {r0} + {nper} * {wk}),
        ret AS (SELECT DISTINCT person, CAST(floor((ts - {r0}) / {wk}) AS BIGINT) AS w FROM e
                WHERE event = '{ret_ev}' AND ts >= {r0} AND ts < {r0} + {nper} * {wk})
        SELECT c, 0 AS k, count(*) FROM cohort GROUP BY c
        UNION ALL
        SELECT c, w - c AS k, count(*) FROM cohort JOIN ret USING (person) WHERE w > c GROUP BY c, k"""
    duck_ret, duck_ret_ms = timed(lambda: con.execute(duck_ret_sql).fetchall())
    ch_ret_sql = f"""
        WITH firsts AS (SELECT person, min(ts) AS f FROM b.e WHERE event = '{start_ev}' GROUP BY person),
        cohort AS (SELECT person, intDiv(f - {r0}, {wk}) AS c FROM firsts
                   WHERE f >= {r0} AND f < {r0} + {nper} * {wk}),
        ret AS (SELECT DISTINCT person, intDiv(ts - {r0}, {wk}) AS w FROM b.e
                WHERE event = '{ret_ev}' AND ts >= {r0} AND ts < {r0} + {nper} * {wk})
        SELECT c, 0 AS k, count() FROM cohort GROUP BY c
        UNION ALL
        SELECT c, w - c AS k, count() FROM cohort INNER JOIN ret USING (person) WHERE w > c GROUP BY c, k
        FORMAT JSONCompact"""
    ch_ret_text, ch_ret_ms = timed(lambda: sess.query(ch_ret_sql).bytes())

    def matrix(rows):
        m = [[0] * (nper - c) for c in range(nper)]
        for c, k, n in rows:
            m[int(c)][int(k)] = int(n)
        return m

    duck_m = matrix(duck_ret)
    ch_m = matrix(json.loads(ch_ret_text)["data"])

    # Trends: daily revenue by category, 90 days (UTC, the bench tenant's zone).
    tr = livora["trends"]
    t0, days, day = tr["from_us"], tr["days"], 86_400_000_000
    tev = tr["event"].replace("'", "''")
    duck_tr_sql = f"""
        SELECT category, CAST(floor((ts - {t0}) / {day}) AS BIGINT) AS d, sum(revenue) FROM e
        WHERE event = '{tev}' AND ts >= {t0} AND ts < {t0} + {days} * {day} GROUP BY ALL"""
    duck_tr, duck_tr_ms = timed(lambda: con.execute(duck_tr_sql).fetchall())
    ch_tr_sql = f"""
        SELECT category, intDiv(ts - {t0}, {day}) AS d, sum(revenue) FROM b.e
        WHERE event = '{tev}' AND ts >= {t0} AND ts < {t0} + {days} * {day} GROUP BY category, d
        FORMAT JSONCompact"""
    ch_tr_text, ch_tr_ms = timed(lambda: sess.query(ch_tr_sql).bytes())

    def cells(rows):
        out = {}
        for cat, d, total in rows:
            if total:
                out[(cat or "", int(d))] = float(total)
        return out

    mine_tr = {(cat, d): v for cat, vs in tr["series"].items() for d, v in enumerate(vs) if v}

    def close(a, b):
        return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-6 * max(1.0, abs(a[k])) for k in a)

    duck_cells, ch_cells = cells(duck_tr), cells(json.loads(ch_tr_text)["data"])

    mine = livora["counts"]
    print(f"funnel over {livora['events']:,} events, {livora['persons']:,} persons, {len(steps)} steps, 7-day window")
    print(f"  {'engine':8} {'median ms':>10}  counts per step")
    print(f"  {'livora':8} {livora['median_ms']:10.1f}  {mine}")
    print(f"  {'duckdb':8} {duck_ms:10.1f}  {duck}")
    print(f"  {'chdb':8} {ch_ms:10.1f}  {ch}")
    best = min(duck_ms, ch_ms)
    print(f"  livora speed-up over the faster peer: {best / livora['median_ms']:.2f}x")
    funnel_same = mine == duck == ch
    print(f"  answers: {'identical' if funnel_same else 'DIFFERENT'}")

    print(f"retention: weekly, {nper} weeks, cohort = week of first '{r['start_event']}', return = '{r['return_event']}'")
    print(f"  {'engine':8} {'median ms':>10}  first cohort row")
    print(f"  {'livora':8} {r['median_ms']:10.1f}  {r['matrix'][0]}")
    print(f"  {'duckdb':8} {duck_ret_ms:10.1f}  {duck_m[0]}")
    print(f"  {'chdb':8} {ch_ret_ms:10.1f}  {ch_m[0]}")
    print(f"  livora speed-up over the faster peer: {min(duck_ret_ms, ch_ret_ms) / r['median_ms']:.2f}x")
    retention_same = r["matrix"] == duck_m == ch_m
    print(f"  answers (all {nper} cohorts): {'identical' if retention_same else 'DIFFERENT'}")
    trends_same = close(mine_tr, duck_cells) and close(mine_tr, ch_cells)
    print(f"trends: daily sum of revenue of '{tr['event']}' by category, {days} days ({len(mine_tr)} non-empty cells)")
    print(f"  {'engine':8} {'median ms':>10}  total revenue")
    print(f"  {'livora':8} {tr['median_ms']:10.1f}  {sum(mine_tr.values()):.2f}")
    print(f"  {'duckdb':8} {duck_tr_ms:10.1f}  {sum(duck_cells.values()):.2f}")
    print(f"  {'chdb':8} {ch_tr_ms:10.1f}  {sum(ch_cells.values()):.2f}")
    print(f"  livora speed-up over the faster peer: {min(duck_tr_ms, ch_tr_ms) / tr['median_ms']:.2f}x")
    print(f"  answers (every category and day, within 1e-6 relative): {'identical' if trends_same else 'DIFFERENT'}")
    print(
        f"storage: {livora['memory_bytes_per_event']:.1f} bytes/event in memory (column store; "
        f"the bench process's RSS is {livora.get('rss_bytes_per_event', float('nan')):.0f} bytes/event), "
        f"{livora['segment_bytes_per_event']:.1f} bytes/event on disk as sealed Parquet segments, "
        f"{livora['log_bytes_per_event']:.0f} bytes/event in the log; sealing took {livora['seal_seconds']:.2f} s, "
        f"the person-ordered projection {livora['projection_seconds']:.2f} s"
    )
    if not (funnel_same and retention_same and trends_same):
        print("ANSWERS DIFFER", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
