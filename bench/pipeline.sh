#!/usr/bin/env bash
# Benchmark of the attribution pipeline against DuckDB running queries/attribution.sql (the
# tuned SQL twin) on the same generated lakes, same machine, same run; beside them the first,
# untuned twin (bench/attribution_v1.sql) and the floor: DuckDB only reading what the twin
# reads (bench/duckdb_floor.py), for the range and for the one day. Not a test: it prints and
# records numbers in BENCH.md, section "Pipeline".
#
#   bench/pipeline.sh                       # 10M and 50M hits, 3 runs each
#   BENCH_SIZES="2000000" BENCH_RUNS=1 bench/pipeline.sh   # a quick look
#   BENCH_V1=0 …                            # without the untuned twin (4 min a run at 50M)
#
# Each size: a deterministic lake from `pipeline gen` (60 days from 2026-01-01, seed 42),
# then `pipeline run` over the last 28 days with a 28d window, DuckDB over the same, and a
# one-day run (what nightly does on a quiet night). Wall time and peak RSS come from
# /usr/bin/time -v; the table shows medians and the pipeline/DuckDB ratios. The load average
# (`uptime`) before and after each size is recorded beside the numbers.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${BENCH_OUT:-$root/bench/out}"
sizes="${BENCH_SIZES:-10000000 50000000}"
runs="${BENCH_RUNS:-3}"
from="${BENCH_FROM:-2026-02-01}"
to="${BENCH_TO:-2026-02-28}"
window_us=$((28 * 24 * 3600 * 1000000))
mkdir -p "$out"

command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
python3 -c 'import duckdb' || { echo "needs python3 with duckdb (pip install duckdb)" >&2; exit 1; }
(cd "$root" && cargo build --release --bin pipeline)
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/release/pipeline"

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

for n in $sizes; do
  # Each size's measurements replace that size's earlier ones; other sizes' stay, so sizes
  # can be measured in separate invocations (e.g. fewer runs for the largest).
  times="$out/times-$n.txt"
  : >"$times"
  load="$out/load-$n.txt"
  echo "before $(uptime)" >"$load"
  lake="$out/lake-$n"
  if [ ! -f "$lake/.generated" ]; then
    rm -rf "$lake"
    echo "generating $n hits into $lake" >&2
    "$bin" gen --lake "$lake" --hits "$n" --days 60 --start 2026-01-01 --seed 42 --visitors $((n / 20))
    touch "$lake/.generated"
  fi
  for i in $(seq "$runs"); do
    measure "pipeline-range-$n" "$out/pipeline-$n-$i.log" \
      env CLICKTRAIL_LOG=warn "$bin" run --lake "$lake" --from "$from" --to "$to" --window 28d --tz UTC
    measure "duckdb-range-$n" "$out/duckdb-$n-$i.log" \
      python3 "$root/bench/duckdb_attribution.py" "$lake" "$window_us" UTC "$from" "$to" "$out/sql-$n"
    if [ "${BENCH_V1:-1}" != 0 ]; then
      measure "duckdbv1-range-$n" "$out/duckdb-v1-$n-$i.log" \
        env TWIN_SQL="$root/bench/attribution_v1.sql" \
        python3 "$root/bench/duckdb_attribution.py" "$lake" "$window_us" UTC "$from" "$to" "$out/sql-v1-$n"
    fi
    measure "floor-range-$n" "$out/floor-$n-$i.log" \
      python3 "$root/bench/duckdb_floor.py" "$lake" "$window_us" UTC "$from" "$to"
    if python3 -c 'import polars' 2>/dev/null; then
      measure "pfloor-range-$n" "$out/pfloor-$n-$i.log" \
        python3 "$root/bench/polars_floor.py" "$lake" "$window_us" UTC "$from" "$to"
    fi
    measure "floor-day-$n" "$out/floor-day-$n-$i.log" \
      python3 "$root/bench/duckdb_floor.py" "$lake" "$window_us" UTC "$to" "$to"
    measure "pipeline-day-$n" "$out/pipeline-day-$n-$i.log" \
      env CLICKTRAIL_LOG=warn "$bin" run --lake "$lake" --date "$to" --window 28d --tz UTC
  done
  echo "after $(uptime)" >>"$load"
done

python3 - "$out" "$root/BENCH.md" "$from" "$to" <<'PY'
import glob, statistics, sys, os, subprocess, datetime
out_dir, bench, d_from, d_to = sys.argv[1:5]
rows = {}
for path in glob.glob(os.path.join(out_dir, "times-*.txt")):
    for line in open(path):
        name, wall, rss = line.split()
        rows.setdefault(name, []).append((float(wall), int(rss)))
med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in rows.items()}
sizes = sorted({k.rsplit('-', 1)[1] for k in med if k.startswith("pipeline-range-")}, key=int)
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
mem = subprocess.run(["sh", "-c", "free -g | awk '/Mem:/ {print $2}'"], capture_output=True, text=True).stdout.strip()
def load(n):
    path = os.path.join(out_dir, f"load-{n}.txt")
    if not os.path.exists(path):
        return "not recorded"
    avg = [line.split("load average:")[1].strip() for line in open(path) if "load average:" in line]
    return " → ".join(avg)
def wall(k):
    return f"{med[k][0]:.1f} s" if k in med else "—"
def ratio(a, b, i=0):
    return f"{med[a][i] / med[b][i]:.2f}×" if a in med and b in med else "—"
def gib(k):
    return f"{med[k][1] / 1048576:.2f} GiB" if k in med else "—"
out = ["## Pipeline", "",
       f"`just bench-pipeline` (`bench/pipeline.sh`), {datetime.date.today()}, {os.cpu_count()} cores ({cpu}), {mem} GiB RAM, "
       f"shared with other work (the load average before → after each size is in the last column: the machine was not quiet). "
       f"Lakes from `pipeline gen` (60 days, seed 42); run = `pipeline run --from {d_from} --to {d_to} --window 28d` "
       f"(reads the 28 days plus the 28-day lookback); DuckDB = `queries/attribution.sql`, the tuned SQL twin, on the same files via python duckdb; "
       f"v1 = `bench/attribution_v1.sql`, the first twin (the one earlier tables here compared with); "
       f"floor = `bench/duckdb_floor.py`, DuckDB only reading and decoding the 17 columns the twin reads over its scan range "
       f"(the range's, and for the day the one date's; both reach back lock + 2W, so on these lakes they read every hit); "
       f"day = `pipeline run --date {d_to}` (a quiet nightly). Medians over the runs shown; wall time and peak RSS from `/usr/bin/time -v`. "
       f"Polars floor = `bench/polars_floor.py`, the same 16 hit columns of the same files read and decoded by polars for Python "
       f"(a newer polars than the pipeline's Rust 0.55; the pipeline has no scan-only mode; its own scans are timed in "
       f"\"Where the pipeline's time goes\" below); on these lakes the range's and the day's floors read the same rows. "
       f"v1 columns show — when the run skipped the untuned twin (`BENCH_V1=0`).", "",
       "| hits | runs | pipeline | DuckDB tuned | **pipeline / tuned** | DuckDB v1 | pipeline / v1 | tuned / v1 | DuckDB floor | polars floor | pipeline / DuckDB floor | one day | day floor | **day / floor** | load average |",
       "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
for n in sizes:
    p, d, v1, fl = f"pipeline-range-{n}", f"duckdb-range-{n}", f"duckdbv1-range-{n}", f"floor-range-{n}"
    day, fday = f"pipeline-day-{n}", f"floor-day-{n}"
    runs = len(rows[p])
    out.append(f"| {int(n):,} | {runs} | {wall(p)} | {wall(d)} | **{ratio(p, d)}** | {wall(v1)} | {ratio(p, v1)} | {ratio(d, v1)} | "
               f"{wall(fl)} | {wall(f'pfloor-range-{n}')} | {ratio(p, fl)} | {wall(day)} | {wall(fday)} | **{ratio(day, fday)}** | {load(n)} |")
out += ["", "Peak RSS (medians):", "",
        "| hits | pipeline | DuckDB tuned | pipeline / tuned | DuckDB v1 | pipeline / v1 | one day |",
        "|---:|---:|---:|---:|---:|---:|---:|"]
for n in sizes:
    p, d, v1, day = f"pipeline-range-{n}", f"duckdb-range-{n}", f"duckdbv1-range-{n}", f"pipeline-day-{n}"
    out.append(f"| {int(n):,} | {gib(p)} | {gib(d)} | {ratio(p, d, 1)} | {gib(v1)} | {ratio(p, v1, 1)} | {gib(day)} |")
section = "\n".join(out) + "\n\n"
text = open(bench).read() if os.path.exists(bench) else "# Benchmarks\n\n"
start = text.find("## Pipeline")
if start >= 0:
    end = text.find("\n#", start + 1)  # up to the next heading: its ### subsections stay
    text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
else:
    text = text.rstrip("\n") + "\n\n" + section
open(bench, "w").write(text)
print(section)
PY

# The cost of settling refunds and rejections of open dates (SPEC §7), on the 10M lake.
if [ "${BENCH_SETTLE:-1}" != 0 ]; then
  BENCH_OUT="$out" BENCH_RUNS="$runs" bash "$root/bench/settle.sh"
fi
