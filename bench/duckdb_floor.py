#!/usr/bin/env python3
"""The floor for the SQL twin: DuckDB reading what queries/attribution.sql reads, and nothing else.

usage: duckdb_floor.py LAKE_DIR WINDOW_US TZ DATE_FROM DATE_TO [REGISTRY_DIR]
Runs the twin's statements up to its scan (the registry and the scan range), then its scan
itself, the `hits` statement's SELECT, turned into a sum of the hash of every column (so every
value of every column read is decoded) instead of a table. Prints the row count. The time of
this is what no formulation of the rules over these files can go under (bench/pipeline.sh,
BENCH.md "Pipeline").
"""
import os
import re
import sys
import tempfile

import duckdb

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from duckdb_attribution import set_variables  # noqa: E402

MARK = "SET preserve_insertion_order = false;"


def twin_scan(argv, usage):
    """The twin's statements run up to its scan, for ARGV (the scripts' shared arguments).
    Returns the connection, the scan's SELECT and the temporary folder (keep it alive)."""
    if len(argv) not in (5, 6):
        sys.exit(usage)
    lake, window_us, tz, date_from, date_to = argv[:5]
    registry = argv[5] if len(argv) == 6 else os.path.join(lake, "registry")
    sql = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "queries", "attribution.sql")).read()
    prefix, rest = sql.split(MARK, 1)
    scan = re.search(r"CREATE OR REPLACE TEMP TABLE hits AS\n(.*?);\n", rest, re.S).group(1)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    tmp = tempfile.TemporaryDirectory()
    set_variables(con, lake, window_us, tz, date_from, date_to, registry, tmp.name)
    con.execute(prefix)
    return con, scan, tmp


def main(argv):
    con, scan, _tmp = twin_scan(argv, __doc__.strip().splitlines()[2])
    row = con.execute(f"SELECT count(*), sum(hash(COLUMNS(*))) FROM ({scan})").fetchone()
    print(f"{row[0]} rows, {len(row) - 1} columns")


if __name__ == "__main__":
    main(sys.argv[1:])
