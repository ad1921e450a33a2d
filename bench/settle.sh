#!/usr/bin/env bash
# What a nightly costs when older dates have news (SPEC §7): refunds and rejections of
# conversions still in their lock period. Not a test: it prints and records numbers in
# BENCH.md, section "Nightly with adjustments". Run by bench/pipeline.sh after its table,
# or alone:
#
#   bench/settle.sh                                   # the 10M-hit lake, 3 runs
#   BENCH_SETTLE_HITS=2000000 BENCH_RUNS=1 bench/settle.sh
#
# The lake is bench/pipeline.sh's (60 days from 2026-01-01, seed 42; `pipeline gen` puts
# refunds, partial refunds, rejections and restores on ~7% of orders, mostly within 20 days;
# the night's news is topped up with whole refunds to BENCH_SETTLE_REFUND_PCT, default 1%,
# of the open dates' orders).
# Prepared once: the hits up to 2026-02-27 and `pipeline nightly --today 2026-02-28`, so
# every date up to Feb 27 is computed and recorded; then Feb 28's hits arrive. Measured,
# each from the prepared reports and nightly state:
#   night    `pipeline nightly --today 2026-03-01`: Feb 28 in full, and the 29 earlier dates
#            whose lock (30 days) is open re-settled from their stored tables;
#   one day  `pipeline run --date 2026-02-28`: a night with no news for older dates;
#   full     `pipeline run --from 2026-01-30 --to 2026-02-28`: the same night if every open
#            date were recomputed (what nightly did before it could settle).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${BENCH_OUT:-$root/bench/out}"
n="${BENCH_SETTLE_HITS:-10000000}"
runs="${BENCH_RUNS:-3}"
mkdir -p "$out"
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
python3 -c 'import duckdb' || { echo "needs python3 with duckdb (pip install duckdb)" >&2; exit 1; }
(cd "$root" && cargo build --release --bin pipeline)
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/release/pipeline"
times="$out/settle-times-$n.txt"
: >"$times"

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

lake="$out/lake-$n"
if [ ! -f "$lake/.generated" ]; then
  rm -rf "$lake"
  "$bin" gen --lake "$lake" --hits "$n" --days 60 --start 2026-01-01 --seed 42 --visitors $((n / 20))
  touch "$lake/.generated"
fi
# The prepared lake is measured in place: its hit files are never copied again, because a
# local file's e-tag includes its inode and a copied lake's listing differs from the one
# nightly fingerprinted (every date would be recomputed). Only its reports are restored
# from a snapshot before each measurement.
prep="$out/settle-prep-$n"
if [ ! -f "$prep/.prepared" ]; then
  rm -rf "$prep" "$prep.aside" "$prep.reports"
  mkdir -p "$prep" "$prep.aside"
  cp -a "$lake/hits" "$prep/"
  [ -d "$lake/registry" ] && cp -a "$lake/registry" "$prep/"
  for d in "$prep"/hits/date=2026-02-28 "$prep"/hits/date=2026-03-*; do
    [ -d "$d" ] && mv "$d" "$prep.aside/"
  done
  echo "preparing: nightly over every date up to 2026-02-27" >&2
  CLICKTRAIL_LOG=warn "$bin" nightly --lake "$prep" --today 2026-02-28 --window 28d --tz UTC >/dev/null
  mv "$prep.aside/date=2026-02-28" "$prep/hits/"
  # Top the night's news up to BENCH_SETTLE_REFUND_PCT (default 1) percent of the open
  # dates' orders refunded: whole refunds of randomly chosen orders, at Feb 28 12:00-13:00,
  # in one more hits file of the lake's own schema (DuckDB copies it from the conversions).
  python3 - "$prep" "${BENCH_SETTLE_REFUND_PCT:-1}" <<'PY'
import duckdb, sys
p, pct = sys.argv[1], float(sys.argv[2])
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
hits = f"read_parquet('{p}/hits/*/*/*.parquet', hive_partitioning = false)"
have = con.execute(f"SELECT count(*) FROM read_parquet('{p}/hits/date=2026-02-28/*/*.parquet') WHERE kind = 'adjustment'").fetchone()[0]
orders = con.execute(f"""SELECT count(DISTINCT (offer_id, event, order_id)) FROM {hits} WHERE kind IN ('pixel', 'postback')
    AND order_id IS NOT NULL AND ts >= TIMESTAMPTZ '2026-01-30 00:00:00+00' AND ts < TIMESTAMPTZ '2026-02-28 00:00:00+00'""").fetchone()[0]
extra = max(0, int(orders * pct / 100) - have)
out = f"{p}/hits/date=2026-02-28/hour=12/bench-refunds.parquet"
con.execute(f"""COPY (
    SELECT * REPLACE (
        gen_random_uuid()::VARCHAR AS hit_id, 'adjustment' AS kind,
        TIMESTAMPTZ '2026-02-28 12:00:00+00' + to_microseconds((random() * 3600000000)::BIGINT) AS ts,
        NULL::BIGINT AS amount_micros, NULL::VARCHAR AS currency, NULL::VARCHAR AS click_id, NULL::VARCHAR AS visitor_id,
        'refund' AS action, 'bench-' || row_number() OVER () AS adjustment_id)
    FROM (SELECT DISTINCT ON (offer_id, event, order_id) * FROM {hits}
          WHERE kind IN ('pixel', 'postback') AND order_id IS NOT NULL
            AND ts >= TIMESTAMPTZ '2026-01-30 00:00:00+00' AND ts < TIMESTAMPTZ '2026-02-28 00:00:00+00'
          ORDER BY offer_id, event, order_id, ts)
    USING SAMPLE {extra} ROWS (reservoir, 42)
) TO '{out}' (FORMAT parquet)""")
print(f"added {extra} refunds to the {have} generated adjustments of Feb 28", file=sys.stderr)
PY
  cp -a "$prep/reports" "$prep.reports"
  touch "$prep/.prepared"
fi
news=$(python3 - "$prep" <<'PY'
import duckdb, sys
p = sys.argv[1]
con = duckdb.connect()
adj = con.execute(f"SELECT count(*) FROM read_parquet('{p}/hits/date=2026-02-28/*/*.parquet') WHERE kind = 'adjustment'").fetchone()[0]
orders = con.execute(f"""SELECT count(DISTINCT (offer_id, event, order_id)) FROM read_parquet('{p}/hits/*/*/*.parquet', hive_partitioning = false)
    WHERE kind IN ('pixel', 'postback') AND order_id IS NOT NULL AND ts >= TIMESTAMPTZ '2026-01-30 00:00:00+00' AND ts < TIMESTAMPTZ '2026-02-28 00:00:00+00'""").fetchone()[0]
print(f"{adj} {orders}")
PY
)
restore() { rm -rf "$prep/reports"; cp -a "$prep.reports" "$prep/reports"; }
for i in $(seq "$runs"); do
  restore
  measure night "$out/settle-night-$n-$i.log" env CLICKTRAIL_LOG=warn "$bin" nightly --lake "$prep" --today 2026-03-01 --window 28d --tz UTC
  grep -h "re-settled" "$out/settle-night-$n-$i.log.out" >&2 || { echo "the night settled no date" >&2; exit 1; }
  restore
  measure day "$out/settle-day-$n-$i.log" env CLICKTRAIL_LOG=warn "$bin" run --lake "$prep" --date 2026-02-28 --window 28d --tz UTC
  restore
  measure full "$out/settle-full-$n-$i.log" env CLICKTRAIL_LOG=warn "$bin" run --lake "$prep" --from 2026-01-30 --to 2026-02-28 --window 28d --tz UTC
done
restore
settled_line=$(grep -h "re-settled" "$out/settle-night-$n-1.log.out" | head -1)

python3 - "$times" "$root/BENCH.md" "$n" "$runs" "$news" "$settled_line" <<'PY'
import statistics, sys, os, subprocess, datetime
times, bench, n, runs, news, settled_line = sys.argv[1:7]
adj, orders = (int(x) for x in news.split())
rows = {}
for line in open(times):
    name, wall, rss = line.split()
    rows.setdefault(name, []).append((float(wall), int(rss)))
med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in rows.items()}
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
night, day, full = med["night"], med["day"], med["full"]
out = ["### Nightly with adjustments (SPEC §7)", "",
       f"`bench/settle.sh` (run by `just bench-pipeline`), {datetime.date.today()}, {os.cpu_count()} cores ({cpu}), release build, "
       f"the {int(n):,}-hit lake above. Every date up to Feb 27 computed by nightly; then Feb 28's hits arrive, with "
       f"{adj:,} adjustments (generated refunds, rejections and restores, topped up with whole refunds) for the {orders:,} orders of the 29 open dates ({100*adj/orders:.2f}%). "
       f"Medians of {runs} runs, each from the same prepared reports and nightly state; wall time and peak RSS from `/usr/bin/time -v`.", "",
       "| what | wall | peak RSS | vs one day |", "|---|---:|---:|---:|",
       f"| night: `pipeline nightly --today 2026-03-01` (Feb 28 in full, open dates re-settled) | {night[0]:.1f} s | {night[1]/1048576:.2f} GiB | **{night[0]/day[0]:.2f}×** |",
       f"| one day: `pipeline run --date 2026-02-28` (no news for older dates) | {day[0]:.1f} s | {day[1]/1048576:.2f} GiB | 1.00× |",
       f"| full: `pipeline run --from 2026-01-30 --to 2026-02-28` (every open date recomputed) | {full[0]:.1f} s | {full[1]/1048576:.2f} GiB | {full[0]/day[0]:.2f}× |",
       "", f"The night printed: `{settled_line.strip()}`.", ""]
section = "\n".join(out) + "\n"
text = open(bench).read() if os.path.exists(bench) else "# Benchmarks\n\n"
start = text.find("### Nightly with adjustments")
if start >= 0:
    end = text.find("\n#", start + 1)
    text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
else:
    pos = text.find("\n## ", text.find("## Pipeline") + 1)
    text = (text[:pos + 1] + section + "\n" + text[pos + 1:]) if pos >= 0 else text.rstrip("\n") + "\n\n" + section
open(bench, "w").write(text)
print(section)
PY
