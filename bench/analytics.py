#!/usr/bin/env python3
"""Runs Livora's funnel and retention answers (from `livora bench analytics`) against DuckDB and
chDB on the same Parquet file, checks that all three agree, and prints median latencies and Livora's
speed-up. With a work directory as third argument (where `livora bench analytics --cold` left
livora-cold.json), also cold runs: each peer's data in an on-disk database, then for each engine
the page cache dropped and a new process that opens it and runs each query once.

DuckDB has no windowFunnel: one ASOF LEFT JOIN per step gives the same answer (from every
first-step event, the earliest next step at or after the previous one, within the window of
the first step). chDB runs ClickHouse's own windowFunnel on a MergeTree table. Retention is
the same SQL in both (cohort = week of the first start event ever; returns by week), since
ClickHouse's `retention()` aggregate has no "first occurrence" cohort.
"""
import json
import os
import statistics
import subprocess
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


def duckdb_funnel(steps, window_us, lo, hi):
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
    return sql


def peer_sql(livora):
    """The three queries in each peer's SQL: {engine: {query: sql}}."""
    steps, window_us = livora["steps"], livora["window_seconds"] * 1_000_000
    lo, hi = livora["from_us"], livora["to_us"]
    conds = ", ".join("event = '{}'".format(s.replace("'", "\\'")) for s in steps)
    r = livora["retention"]
    r0, wk, nper = r["from_us"], r["period_us"], r["periods"]
    start_ev, ret_ev = r["start_event"].replace("'", "''"), r["return_event"].replace("'", "''")
    tr = livora["trends"]
    t0, days, day = tr["from_us"], tr["days"], 86_400_000_000
    tev = tr["event"].replace("'", "''")
    return {
        "duckdb": {
            "funnel": duckdb_funnel(steps, window_us, lo, hi),
            "retention": f"""
        WITH firsts AS (SELECT person, min(ts) AS f FROM e WHERE event = '{start_ev}' GROUP BY person),
        cohort AS (SELECT person, CAST(floor((f - {r0}) / {wk}) AS BIGINT) AS c FROM firsts
                   WHERE f >= {r0} AND f < {r0} + {nper} * {wk}),
        ret AS (SELECT DISTINCT person, CAST(floor((ts - {r0}) / {wk}) AS BIGINT) AS w FROM e
                WHERE event = '{ret_ev}' AND ts >= {r0} AND ts < {r0} + {nper} * {wk})
        SELECT c, 0 AS k, count(*) FROM cohort GROUP BY c
        UNION ALL
        SELECT c, w - c AS k, count(*) FROM cohort JOIN ret USING (person) WHERE w > c GROUP BY c, k""",
            "trends": f"""
        SELECT category, CAST(floor((ts - {t0}) / {day}) AS BIGINT) AS d, sum(revenue) FROM e
        WHERE event = '{tev}' AND ts >= {t0} AND ts < {t0} + {days} * {day} GROUP BY ALL""",
        },
        "chdb": {
            "funnel": (
                f"SELECT level, count() FROM (SELECT person, windowFunnel({window_us})(ts, {conds}) AS level "
                f"FROM b.e WHERE ts >= {lo} AND ts < {hi} GROUP BY person) WHERE level > 0 GROUP BY level FORMAT JSONCompact"
            ),
            "retention": f"""
        WITH firsts AS (SELECT person, min(ts) AS f FROM b.e WHERE event = '{start_ev}' GROUP BY person),
        cohort AS (SELECT person, intDiv(f - {r0}, {wk}) AS c FROM firsts
                   WHERE f >= {r0} AND f < {r0} + {nper} * {wk}),
        ret AS (SELECT DISTINCT person, intDiv(ts - {r0}, {wk}) AS w FROM b.e
                WHERE event = '{ret_ev}' AND ts >= {r0} AND ts < {r0} + {nper} * {wk})
        SELECT c, 0 AS k, count() FROM cohort GROUP BY c
        UNION ALL
        SELECT c, w - c AS k, count() FROM cohort INNER JOIN ret USING (person) WHERE w > c GROUP BY c, k
        FORMAT JSONCompact""",
            "trends": f"""
        SELECT category, intDiv(ts - {t0}, {day}) AS d, sum(revenue) FROM b.e
        WHERE event = '{tev}' AND ts >= {t0} AND ts < {t0} + {days} * {day} GROUP BY category, d
        FORMAT JSONCompact""",
        },
    }


def answers(livora, rows):
    """A peer's result rows of each query as comparable answers."""
    nper = livora["retention"]["periods"]
    m = [[0] * (nper - c) for c in range(nper)]
    for c, k, n in rows["retention"]:
        m[int(c)][int(k)] = int(n)
    cells = {}
    for cat, d, total in rows["trends"]:
        if total:
            cells[(cat or "", int(d))] = float(total)
    return levels_to_counts(rows["funnel"], len(livora["steps"])), m, cells


def drop_page_cache():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def cold_child(engine, path, livora_json):
    """In a new process: open the engine's database at `path`, run each query once."""
    livora = json.load(open(livora_json))
    sql = peer_sql(livora)[engine]
    t = time.perf_counter()
    if engine == "duckdb":
        con = duckdb.connect(path, read_only=True)
        run = lambda q: con.execute(q).fetchall()
    else:
        sess = chdb.session.Session(path)
        run = lambda q: json.loads(sess.query(q).bytes())["data"]
    out = {"open_ms": (time.perf_counter() - t) * 1000}
    rows = {}
    for q in ("funnel", "retention", "trends"):
        t = time.perf_counter()
        rows[q] = run(sql[q])
        out[q + "_ms"] = (time.perf_counter() - t) * 1000
    funnel, matrix, cells = answers(livora, rows)
    out.update(counts=funnel, matrix=matrix, cells=[[k[0], k[1], v] for k, v in cells.items()])
    print(json.dumps(out))


def load_duckdb(con, parquet):
    con.execute(
        "CREATE TABLE e AS SELECT CAST(person AS BIGINT) AS person, ts, event, category, revenue "
        "FROM read_parquet(?)",
        [parquet],
    )


def load_chdb(sess, parquet):
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


def cold_runs(livora_json, livora, parquet, work, mine, mine_m, mine_tr, close):
    """Each peer's data in its own on-disk database; then, per engine, the page cache dropped
    and a new process that opens it and runs each query once. Returns whether the answers are
    the warm ones."""
    cold_livora = json.load(open(os.path.join(work, "livora-cold.json")))
    duck_path = os.path.join(work, "cold.duckdb")
    con = duckdb.connect(duck_path)
    load_duckdb(con, parquet)
    con.close()
    ch_path = os.path.join(work, "cold-chdb")
    sess = chdb.session.Session(ch_path)
    load_chdb(sess, parquet)
    sess.close()
    peers = {}
    for engine, path in (("duckdb", duck_path), ("chdb", ch_path)):
        drop_page_cache()
        out = subprocess.run(
            [sys.executable, __file__, "--cold-child", engine, path, livora_json],
            check=True, capture_output=True, text=True,
        )
        peers[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    same = cold_livora["counts"] == mine and cold_livora["matrix"] == mine_m
    cold_tr = {(cat, d): v for cat, vs in cold_livora["series"].items() for d, v in enumerate(vs) if v}
    same = same and close(cold_tr, mine_tr)
    for p in peers.values():
        cells = {(c, int(d)): v for c, d, v in p["cells"]}
        same = same and p["counts"] == mine and p["matrix"] == mine_m and close(cells, mine_tr)
    print("cold: page cache dropped, a new process opens the data on disk and runs each query once")
    print(f"  {'engine':8} {'open ms':>9} {'funnel':>9} {'retention':>10} {'trends':>9}")
    print(
        f"  {'livora':8} {cold_livora['load_ms']:9.1f} {cold_livora['funnel_ms']:9.1f} "
        f"{cold_livora['retention_ms']:10.1f} {cold_livora['trends_ms']:9.1f}   (the column image mapped)"
    )
    for engine, p in peers.items():
        print(f"  {engine:8} {p['open_ms']:9.1f} {p['funnel_ms']:9.1f} {p['retention_ms']:10.1f} {p['trends_ms']:9.1f}")
    for q in ("funnel", "retention", "trends"):
        best = min(p[q + "_ms"] for p in peers.values())
        print(f"  livora {q} speed-up over the faster peer, cold: {best / cold_livora[q + '_ms']:.2f}x")
    print(f"  answers: {'identical to the warm ones' if same else 'DIFFERENT'}")
    return same


def main():
    if sys.argv[1] == "--cold-child":
        cold_child(*sys.argv[2:5])
        return
    livora_json = sys.argv[1]
    livora = json.load(open(livora_json))
    parquet = sys.argv[2]
    # With a third argument (a work directory holding livora-cold.json), cold runs too.
    work = sys.argv[3] if len(sys.argv) > 3 else None
    steps = livora["steps"]
    sql = peer_sql(livora)

    con = duckdb.connect()
    load_duckdb(con, parquet)
    duck_rows = {}
    duck_rows["funnel"], duck_ms = timed(lambda: con.execute(sql["duckdb"]["funnel"]).fetchall())
    duck_rows["retention"], duck_ret_ms = timed(lambda: con.execute(sql["duckdb"]["retention"]).fetchall())
    duck_rows["trends"], duck_tr_ms = timed(lambda: con.execute(sql["duckdb"]["trends"]).fetchall())
    con.close()
    duck, duck_m, duck_cells = answers(livora, duck_rows)

    sess = chdb.session.Session()
    load_chdb(sess, parquet)
    ch_rows = {}
    ch_run = lambda q: json.loads(sess.query(sql["chdb"][q]).bytes())["data"]
    ch_rows["funnel"], ch_ms = timed(lambda: ch_run("funnel"))
    ch_rows["retention"], ch_ret_ms = timed(lambda: ch_run("retention"))
    ch_rows["trends"], ch_tr_ms = timed(lambda: ch_run("trends"))
    sess.close()
    ch, ch_m, ch_cells = answers(livora, ch_rows)

    r = livora["retention"]
    nper = r["periods"]
    tr = livora["trends"]
    days = tr["days"]
    mine_tr = {(cat, d): v for cat, vs in tr["series"].items() for d, v in enumerate(vs) if v}

    def close(a, b):
        return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-6 * max(1.0, abs(a[k])) for k in a)

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
    cold_same = True
    if work:
        cold_same = cold_runs(livora_json, livora, parquet, work, mine, r["matrix"], mine_tr, close)
    if not (funnel_same and retention_same and trends_same and cold_same):
        print("ANSWERS DIFFER", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
