#!/usr/bin/env python3
"""The floor in polars: reading and decoding the hit columns the SQL twin's scan reads.

usage: polars_floor.py LAKE_DIR WINDOW_US TZ DATE_FROM DATE_TO [REGISTRY_DIR]
The same columns and files as bench/duckdb_floor.py: the hit columns named by the twin's
`hits` statement, from every hits file (the twin's `hits_glob`; its scan range, which on
the bench's lakes holds every hit, is left out: a filter would only skip decoding). Every value of every
column is hashed, so every value is decoded; streaming engine. Prints the row count.
Needs polars for Python (`pip install polars`): a newer polars than the pipeline's Rust
0.55, so this is what the engine can do today, not exactly what the pipeline's build can.
"""
import glob
import os
import re
import sys
import tempfile

import duckdb
import polars as pl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from duckdb_attribution import set_variables  # noqa: E402

MARK = "SET preserve_insertion_order = false;"
HIT_COLUMNS = [
    "hit_id", "kind", "ts", "offer_id", "member_id", "link_code", "click_id", "visitor_id", "ip_hash",
    "user_agent", "referer", "event", "order_id", "amount_micros", "currency", "coupon", "action",
    "adjustment_id", "params",
]


def main(argv):
    if len(argv) not in (5, 6):
        sys.exit(__doc__.strip().splitlines()[2])
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
    # The twin reads every hits file (its `hits_glob`) and keeps its scan range by `ts`;
    # on the bench's lakes that range holds every hit.
    files = sorted(glob.glob(os.path.join(lake, "hits", "date=*", "hour=*", "*.parquet")))
    columns = [c for c in HIT_COLUMNS if re.search(r"\b" + c + r"\b", scan)]
    lf = pl.scan_parquet(files).select(columns)
    out = lf.select(pl.len(), *[pl.col(c).hash().sum().alias(c) for c in columns]).collect(engine="streaming")
    print(f"{out[0, 0]} rows, {len(columns)} columns")


if __name__ == "__main__":
    main(sys.argv[1:])
