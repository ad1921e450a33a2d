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

import polars as pl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from duckdb_floor import twin_scan  # noqa: E402

HIT_COLUMNS = [
    "hit_id", "kind", "ts", "offer_id", "member_id", "link_code", "click_id", "visitor_id", "ip_hash",
    "user_agent", "referer", "event", "order_id", "amount_micros", "currency", "coupon", "action",
    "adjustment_id", "params",
]


def main(argv):
    _con, scan, _tmp = twin_scan(argv, __doc__.strip().splitlines()[2])
    lake = argv[0]
    # The twin reads every hits file (its `hits_glob`) and keeps its scan range by `ts`;
    # on the bench's lakes that range holds every hit.
    files = sorted(glob.glob(os.path.join(lake, "hits", "date=*", "hour=*", "*.parquet")))
    columns = [c for c in HIT_COLUMNS if re.search(r"\b" + c + r"\b", scan)]
    lf = pl.scan_parquet(files).select(columns)
    out = lf.select(pl.len(), *[pl.col(c).hash().sum().alias(c) for c in columns]).collect(engine="streaming")
    print(f"{out[0, 0]} rows, {len(columns)} columns")


if __name__ == "__main__":
    main(sys.argv[1:])
