#!/usr/bin/env python3
"""Checks the modern DDL and queries on a current ClickHouse engine (PyPI chdb).

Usage: pip install chdb && python3 schemas/clickhouse/check_modern.py
Runs every modern statement twice (IF NOT EXISTS must make that safe), inserts
rows as the sink does (same columns, insert_deduplication_token), retries the
identical batch and checks that neither user_behaviors nor the views count it
twice, then runs the canonical queries of queries.sql.
"""
import os
import sys

from chdb import session

HERE = os.path.dirname(os.path.abspath(__file__))
DB = "rf_check"


def statements(name):
    text = open(os.path.join(HERE, name)).read()
    code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("--"))
    return [s.strip().replace("{db}", f"`{DB}`") for s in code.split(";") if s.strip()]


def main():
    s = session.Session()
    s.query(f"DROP DATABASE IF EXISTS {DB}")
    s.query(f"CREATE DATABASE IF NOT EXISTS `{DB}`")
    for _ in range(2):
        for f in ("user_behaviors.sql", "metrics_hourly.sql", "item_stats_daily.sql"):
            for st in statements(f):
                s.query(st)
    cols = ("event_id, tenant_id, scenario_id, user_id, item_id, action_type, event_time, request_id, "
            "experiment_id, variant, category, context, watch_duration, completion_rate, amount, "
            "source_topic, source_partition, source_offset")
    rows = ", ".join([
        "('e1','t1','vlog','u1','i1','play',toDateTime64(1767520800.123,3,'UTC'),'','exp','A','c','{}',12.5,0.5,NULL,'topic',0,1)",
        "('e2','t1','vlog','u1','i1','payment',toDateTime64(1767524400.5,3,'UTC'),'','exp','A','c','',NULL,NULL,3.25,'topic',0,2)",
        "('e3','t1','vlog','u2','i2','impression',toDateTime64(1767607200.0,3,'UTC'),'r','exp','B','c','',NULL,NULL,NULL,'topic',1,7)",
    ])
    settings = ("SETTINGS insert_deduplication_token = 'recflow-test', "
                "deduplicate_blocks_in_dependent_materialized_views = 1")
    for _ in range(2):  # the second insert is the sink's retry of the same batch
        s.query(f"INSERT INTO {DB}.user_behaviors ({cols}) {settings} VALUES {rows}")
    count = s.query(f"SELECT count() FROM {DB}.user_behaviors", "CSV").bytes().decode().strip()
    assert count == "3", f"retried batch duplicated: count {count}"
    q = statements("queries.sql")
    metrics = s.query(q[0].replace("?", "'t1'", 1).replace("?", "0", 1).replace("?", "4000000000", 1), "CSV")
    lines = metrics.bytes().decode().strip().splitlines()
    print("metrics_hourly:", *lines, sep="\n  ")
    assert len(lines) == 3, lines
    assert lines[0].startswith('"t1","vlog","exp","A","2026-01-04 10:00:00",0,0,1,'), lines[0]
    assert lines[1].endswith(",0,0,0,0,3.25"), lines[1]
    daily = s.query(q[1].replace("?", "'t1'", 1).replace("?", "'2026-01-01'", 1).replace("?", "'2026-02-01'", 1), "CSV")
    dlines = daily.bytes().decode().strip().splitlines()
    print("item_stats_daily:", *dlines, sep="\n  ")
    assert dlines == ['"t1","vlog","i1","2026-01-04",0,0,0,1,0,0,0,0,0,0,0,1',
                      '"t1","vlog","i2","2026-01-05",1,0,0,0,0,0,0,0,0,0,0,0'], dlines
    exact = s.query(q[2].replace("?", "'t1'"), "CSV").bytes().decode().strip()
    assert exact == "3", exact
    print("modern DDL OK on ClickHouse", s.query("SELECT version()", "CSV").bytes().decode().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
