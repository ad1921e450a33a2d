#!/usr/bin/env bash
# Benchmark of `pipeline run --engine spark` (Spark local mode) against the polars engine
# on the same generated lake, same machine, same window and dates. Not a test: it prints
# and records numbers for BENCH.md, section "Spark local mode against polars".
#
#   bench/spark.sh                                   # 10M hits, 3 runs of each engine
#   BENCH_RUNS=1 BENCH_HITS=1000000 bench/spark.sh   # a quick look
#
# The lake: `pipeline gen --hits $BENCH_HITS --days 60 --start 2026-01-01 --seed 42
# --visitors 500000`; both engines run 2026-02-01..2026-02-28 with a 28d window.
# BENCH_POLARS is the binary for the polars runs (a release build), BENCH_SPARK_BIN the
# one for the Spark runs (any build: it only lists, launches and copies files); both
# default to target/release/pipeline. Wall time and peak RSS come from /usr/bin/time -v:
# for Spark that is its largest process (the driver JVM, which in local mode also runs the
# executors), not the sum with the Python driver and this launcher.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${BENCH_OUT:-$root/bench/out}"
hits="${BENCH_HITS:-10000000}"
runs="${BENCH_RUNS:-3}"
from="${BENCH_FROM:-2026-02-01}"
to="${BENCH_TO:-2026-02-28}"
master="${BENCH_MASTER:-local[2]}"
driver_memory="${BENCH_DRIVER_MEMORY:-6g}"
target="${CARGO_TARGET_DIR:-$root/target}"
polars="${BENCH_POLARS:-$target/release/pipeline}"
sparkbin="${BENCH_SPARK_BIN:-$target/release/pipeline}"
mkdir -p "$out"
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
command -v spark-submit >/dev/null || { echo "needs spark-submit (pip install pyspark) and a Java 17 runtime" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
times="$out/times-spark-$hits.txt"
: >"$times"
lake="${BENCH_LAKE:-$out/lake-$hits}"
if [ ! -d "$lake/hits" ]; then
  "$polars" gen --lake "$lake" --hits "$hits" --days 60 --start 2026-01-01 --seed 42 --visitors 500000
fi
for i in $(seq 1 "$runs"); do
  measure polars "$out/spark-bench-polars-$i.log" "$polars" run --lake "$lake" --from "$from" --to "$to" --window 28d
  measure spark "$out/spark-bench-spark-$i.log" "$sparkbin" run --lake "$lake" --from "$from" --to "$to" --window 28d \
    --engine spark --master "$master" --spark-conf "spark.driver.memory=$driver_memory"
done
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
for e in polars spark; do
  wall=$(awk -v e=$e '$1 == e { print $2 }' "$times" | median)
  rss=$(awk -v e=$e '$1 == e { print $3 }' "$times" | median)
  echo "$e: median wall ${wall}s, median peak RSS $((rss / 1024)) MiB over $runs runs ($hits hits, $master)"
done
