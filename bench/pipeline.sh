#!/usr/bin/env bash
# Benchmark of the attribution pipeline against DuckDB running queries/attribution.sql on
# the same generated lakes, same machine, same run. Not a test: it prints and records
# numbers in BENCH.md, section "Pipeline".
#
#   bench/pipeline.sh                       # 10M and 50M hits, 3 runs each
#   BENCH_SIZES="2000000" BENCH_RUNS=1 bench/pipeline.sh   # a quick look
#
# Each size: a deterministic lake from `pipeline gen` (60 days from 2026-01-01, seed 42),
# then `pipeline run` over the last 28 days with a 28d window, DuckDB over the same, and a
# one-day run (what nightly does on a quiet night). Wall time and peak RSS come from
# /usr/bin/time -v; the table shows medians and the pipeline/DuckDB ratios.
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
    measure "pipeline-day-$n" "$out/pipeline-day-$n-$i.log" \
      env CLICKTRAIL_LOG=warn "$bin" run --lake "$lake" --date "$to" --window 28d --tz UTC
  done
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
sizes = sorted({k.rsplit('-', 1)[1] for k in med}, key=int)
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
mem = subprocess.run(["sh", "-c", "free -g | awk '/Mem:/ {print $2}'"], capture_output=True, text=True).stdout.strip()
out = ["## Pipeline", "",
       f"`just bench-pipeline` (`bench/pipeline.sh`), {datetime.date.today()}, {os.cpu_count()} cores ({cpu}), {mem} GiB RAM, "
       f"shared with other work. Lakes from `pipeline gen` (60 days, seed 42); run = `pipeline run --from {d_from} --to {d_to} --window 28d` "
       f"(reads the 28 days plus the 28-day lookback); DuckDB = `queries/attribution.sql` on the same files via python duckdb; "
       f"day = `pipeline run --date {d_to}` (a quiet nightly). Medians over the runs shown; wall time and peak RSS from `/usr/bin/time -v`.", "",
       "| hits | runs | pipeline wall | DuckDB wall | time ratio | pipeline RSS | DuckDB RSS | RSS ratio | one day wall | one day RSS |",
       "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for n in sizes:
    p, d, day = med[f"pipeline-range-{n}"], med[f"duckdb-range-{n}"], med[f"pipeline-day-{n}"]
    runs = len(rows[f"pipeline-range-{n}"])
    out.append(f"| {int(n):,} | {runs} | {p[0]:.1f} s | {d[0]:.1f} s | {p[0]/d[0]:.2f}× | {p[1]/1048576:.2f} GiB | {d[1]/1048576:.2f} GiB | {p[1]/d[1]:.2f}× | {day[0]:.1f} s | {day[1]/1048576:.2f} GiB |")
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
