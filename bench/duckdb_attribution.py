#!/usr/bin/env python3
"""Runs queries/attribution.sql (the SQL twin of the pipeline) with DuckDB on a local lake.

usage: duckdb_attribution.py LAKE_DIR WINDOW_US TZ DATE_FROM DATE_TO OUT_DIR [REGISTRY_DIR]
Writes OUT_DIR/<table>.parquet for attributions, clicks, conversions, revenue, earnings and
adjustments. The registry (offers.csv, commissions.csv, coupons.csv) is read from REGISTRY_DIR, default
LAKE_DIR/registry; a missing file reads as one with only its header (every offer takes the
defaults, no commission rules). TWIN_SQL=FILE runs FILE instead of queries/attribution.sql
(bench/pipeline.sh times bench/attribution_v1.sql, the untuned first twin, that way). Used by the pipeline's equivalence test, bench/pipeline.sh
and queries/tests/sql_twin_edges.py.
"""
import os
import sys
import tempfile

import duckdb

TABLES = ["attributions", "clicks", "conversions", "revenue", "earnings", "adjustments"]
HEADERS = {
    "offers.csv": "offer_id,destination_url,postback_token,currency,cookie_days,lock_days,min_lag_seconds,coupon_priority\n",
    "commissions.csv": "offer_id,member_id,event,percent,flat,valid_from\n",
    "coupons.csv": "code,offer_id,member_id,valid_from,valid_to\n",
}


def set_variables(con, lake, window_us, tz, date_from, date_to, registry, tmp):
    """Sets the twin's variables; a registry file that is missing or empty is replaced by one
    with only its header, written into the folder tmp."""
    paths = {}
    for name, header in HEADERS.items():
        path = os.path.join(registry, name)
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write(header)
        paths[name] = path
    con.execute("SET VARIABLE hits_glob = ?", [os.path.join(lake, "hits", "*", "*", "*.parquet")])
    con.execute(f"SET VARIABLE window_us = {int(window_us)}::BIGINT")
    con.execute("SET VARIABLE tz = ?", [tz])
    con.execute(f"SET VARIABLE date_from = DATE '{date_from}'")
    con.execute(f"SET VARIABLE date_to = DATE '{date_to}'")
    con.execute("SET VARIABLE offers_csv = ?", [paths["offers.csv"]])
    con.execute("SET VARIABLE commissions_csv = ?", [paths["commissions.csv"]])
    con.execute("SET VARIABLE coupons_csv = ?", [paths["coupons.csv"]])


def main(argv):
    if len(argv) not in (6, 7):
        sys.exit(__doc__.strip().splitlines()[2])
    lake, window_us, tz, date_from, date_to, out = argv[:6]
    registry = argv[6] if len(argv) == 7 else os.path.join(lake, "registry")
    # TWIN_SQL: another script with the same parameters and tables (bench/attribution_v1.sql).
    sql_path = os.environ.get("TWIN_SQL") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "queries", "attribution.sql")
    con = duckdb.connect()
    threads = os.environ.get("DUCKDB_THREADS")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    with tempfile.TemporaryDirectory() as tmp:
        set_variables(con, lake, window_us, tz, date_from, date_to, registry, tmp)
        with open(sql_path) as f:
            con.execute(f.read())
        os.makedirs(out, exist_ok=True)
        for table in TABLES:
            target = os.path.join(out, table + ".parquet").replace("'", "''")
            con.execute(f"COPY {table} TO '{target}' (FORMAT parquet)")


if __name__ == "__main__":
    main(sys.argv[1:])
