#!/usr/bin/env python3
"""Runs queries/attribution.sql (the SQL twin of the pipeline) with DuckDB on a local lake.

usage: duckdb_attribution.py LAKE_DIR WINDOW_US TZ DATE_FROM DATE_TO OUT_DIR
Writes OUT_DIR/<table>.parquet for attributions, clicks, conversions and revenue.
Used by the pipeline's equivalence test and by bench/pipeline.sh.
"""
import os
import sys

import duckdb

lake, window_us, tz, date_from, date_to, out = sys.argv[1:7]
sql_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "queries", "attribution.sql")
con = duckdb.connect()
threads = os.environ.get("DUCKDB_THREADS")
if threads:
    con.execute(f"SET threads = {int(threads)}")
con.execute("SET VARIABLE hits_glob = ?", [os.path.join(lake, "hits", "*", "*", "*.parquet")])
con.execute(f"SET VARIABLE window_us = {int(window_us)}::BIGINT")
con.execute("SET VARIABLE tz = ?", [tz])
con.execute(f"SET VARIABLE date_from = DATE '{date_from}'")
con.execute(f"SET VARIABLE date_to = DATE '{date_to}'")
with open(sql_path) as f:
    con.execute(f.read())
os.makedirs(out, exist_ok=True)
for table in ["attributions", "clicks", "conversions", "revenue"]:
    con.execute(f"COPY {table} TO '{os.path.join(out, table + '.parquet')}' (FORMAT parquet)")
