#!/usr/bin/env bash
# Benchmark of many small hit files against compacted ones (issue 14). Not a test: it
# prints and records numbers in BENCH.md, section "Compaction".
#
#   bench/compact.sh                                      # local lake and moto S3
#   BENCH_LOCAL_HITS=200000 BENCH_S3=0 bench/compact.sh   # a quick look, local only
#   BENCH_LOCAL=0 bench/compact.sh                        # S3 again, the local numbers kept
#
# Each lake is generated as ten collectors flushing every 60 s leave it (`pipeline gen
# --files-per-hour 600`), then measured before and after `pipeline compact`:
#   list     `pipeline compact --grace 36500d`: lists every hits object and compacts
#            nothing (no hour is that old), so it times the listing a run or nightly does
#   run      `pipeline run --from D1 --to D2 --window 28d` over every date of the lake
#   compact  `pipeline compact --grace 0s`, once, between the two
# The local lake's reports after compaction are compared with those of an uncompacted
# twin lake (DuckDB, EXCEPT ALL both ways). S3: a moto server this script starts on
# 127.0.0.1:$BENCH_S3_PORT and stops at the end. Wall time and peak RSS from
# /usr/bin/time -v; medians over BENCH_RUNS runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${BENCH_OUT:-$root/bench/out/compact}"
runs="${BENCH_RUNS:-3}"
files_per_hour="${BENCH_FILES_PER_HOUR:-600}"
local_hits="${BENCH_LOCAL_HITS:-1000000}"
local_days="${BENCH_LOCAL_DAYS:-2}"
local_bench="${BENCH_LOCAL:-1}"
s3="${BENCH_S3:-1}"
s3_hits="${BENCH_S3_HITS:-300000}"
s3_days="${BENCH_S3_DAYS:-1}"
s3_port="${BENCH_S3_PORT:-5057}"
start=2026-01-01
mkdir -p "$out"
rm -f "$out/equal.txt"

command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
(cd "$root" && cargo build --release --bin pipeline)
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/release/pipeline"

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

last_day() { date -u -d "$start + $(($1 - 1)) days" +%F; }

gen() { # gen URL HITS DAYS
  env CLICKTRAIL_LOG=warn "$bin" gen --lake "$1" --hits "$2" --days "$3" --start "$start" --seed 42 \
    --visitors $(($2 / 20)) --files-per-hour "$files_per_hour"
}

# bench_lake NAME URL HITS DAYS
bench_lake() {
  local name=$1 url=$2 hits=$3 days=$4
  local to
  to=$(last_day "$days")
  times="$out/times-$name.txt"
  : >"$times"
  echo "generating $hits hits over $days day(s), $files_per_hour files per hour, into $url" >&2
  measure "gen-$name" "$out/gen-$name.log" \
    env CLICKTRAIL_LOG=warn "$bin" gen --lake "$url" --hits "$hits" --days "$days" --start "$start" --seed 42 \
    --visitors $((hits / 20)) --files-per-hour "$files_per_hour"
  for phase in before after; do
    if [ "$phase" = after ]; then
      measure "compact-$name" "$out/compact-$name.log" env CLICKTRAIL_LOG=warn "$bin" compact --lake "$url" --grace 0s
      cat "$out/compact-$name.log.out" >&2
    fi
    for i in $(seq "$runs"); do
      measure "list-$phase-$name" "$out/list-$phase-$name-$i.log" \
        env CLICKTRAIL_LOG=warn "$bin" compact --lake "$url" --grace 36500d
      measure "run-$phase-$name" "$out/run-$phase-$name-$i.log" \
        env CLICKTRAIL_LOG=warn "$bin" run --lake "$url" --from "$start" --to "$to" --window 28d --tz UTC
    done
    sed "s/^/$phase: /" "$out/run-$phase-$name-1.log.out" >&2
  done
  echo "$name $hits $days" >"$out/lake-$name.txt"
}

local_lake="$out/lake-local"
if [ "$local_bench" = 1 ]; then
  rm -rf "$local_lake"
  bench_lake local "$local_lake" "$local_hits" "$local_days"
fi

twin="$out/lake-local-twin"
if [ -d "$local_lake/reports" ] && python3 -c 'import duckdb' 2>/dev/null; then
  rm -rf "$twin"
  gen "$twin" "$local_hits" "$local_days" >/dev/null
  env CLICKTRAIL_LOG=warn "$bin" run --lake "$twin" --from "$start" --to "$(last_day "$local_days")" --window 28d --tz UTC >/dev/null
  python3 - "$local_lake" "$twin" "$out/equal.txt" <<'PY'
import duckdb, os, sys
a, b, note = sys.argv[1:4]
glob = lambda root, t: os.path.join(root, "reports", "window=28d", t, "*", "*.parquet")
tables = sorted(t for t in os.listdir(os.path.join(a, "reports", "window=28d")) if not t.startswith("_"))
diff = {}
for t in tables:
    q = lambda x, y: f"SELECT count(*) FROM (SELECT * FROM read_parquet('{glob(x, t)}') EXCEPT ALL SELECT * FROM read_parquet('{glob(y, t)}'))"
    con = duckdb.connect()
    diff[t] = con.execute(q(a, b)).fetchone()[0] + con.execute(q(b, a)).fetchone()[0]
text = f"equal ({len(tables)} tables)" if all(v == 0 for v in diff.values()) else f"DIFFERENT: {diff}"
print(f"reports after compaction vs an uncompacted twin: {text}", file=sys.stderr)
open(note, "w").write(text)
PY
fi
rm -rf "$twin"

if [ "$s3" = 1 ]; then
  moto_server -H 127.0.0.1 -p "$s3_port" >"$out/moto.log" 2>&1 &
  moto_pid=$!
  trap 'kill $moto_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $s3_port), 1)" 2>/dev/null && break
    sleep 0.2
  done
  export AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  python3 -c "import boto3, os; boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']).create_bucket(Bucket='bench')"
  bench_lake s3 "s3://bench/lake" "$s3_hits" "$s3_days"
fi

python3 - "$out" "$root/BENCH.md" "$files_per_hour" "$runs" <<'PY'
import glob, statistics, sys, os, subprocess, datetime
NOTES = """
Reading the numbers. *list* includes starting the process (a few ms); moto answers a
1,000-key page far more slowly than S3 does, so its "before" is mostly moto, but the
ratio (one object per hour instead of 600) holds on any store. *run before* is dominated
by per-object costs: a GET (S3) or open (local) and a footer check per file, then polars
planning and scanning hundreds of tiny files per hour; after compaction the same rows
cost a fraction of that. The local run's peak RSS is a little higher after (fewer, larger row groups
decoded at once); on S3 it is the same. *compact* is paid once per hour (nightly compacts
only what is new and leaves a compacted hour alone without reading it); on moto it is one
GET and one DELETE per object through a local single-process server. Safety of compaction
(kill -9 at random points, two at once, a late file into a half-compacted hour, S3) is
covered by tests, not here: `pipeline/tests/pipeline.rs` (`killing_compaction_…`,
`s3_compaction`, `a_run_while_compaction_…`) and `lake/src/compact.rs`.
"""
out_dir, bench, fph, runs = sys.argv[1:5]
equal_path = os.path.join(out_dir, "equal.txt")
equal = open(equal_path).read() if os.path.exists(equal_path) else "not compared (no duckdb)"
rows = {}
for path in glob.glob(os.path.join(out_dir, "times-*.txt")):
    for line in open(path):
        name, wall, rss = line.split()
        rows.setdefault(name, []).append((float(wall), int(rss)))
med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in rows.items()}
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
mem = subprocess.run(["sh", "-c", "free -g | awk '/Mem:/ {print $2}'"], capture_output=True, text=True).stdout.strip()
out = ["## Compaction", "",
       f"`bench/compact.sh`, {datetime.date.today()}, {os.cpu_count()} cores ({cpu}), {mem} GiB RAM, shared with three other "
       f"builders, so modest sizes. Lakes from `pipeline gen --files-per-hour {fph}` (as ten collectors flushing every 60 s leave "
       f"them), measured before and after one `pipeline compact --grace 0s`: list = every hits object listed through the lake's "
       f"store (`pipeline compact --grace 36500d`, which compacts nothing); run = `pipeline run` over every date of the lake, 28d "
       f"window. Medians of {runs} runs; wall time and peak RSS from `/usr/bin/time -v`. Local reports after compaction against "
       f"an uncompacted twin lake generated the same way (DuckDB `EXCEPT ALL` both ways): {equal}.", "",
       "| lake | hits | files before → after | list before | list after | run before | run after | run RSS before | run RSS after | compact wall | compact RSS |",
       "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for name in ["local", "s3"]:
    info = os.path.join(out_dir, f"lake-{name}.txt")
    if not os.path.exists(info):
        continue
    _, hits, days = open(info).read().split()
    hours = int(days) * 24
    g = lambda k: med[f"{k}-{name}"]
    label = "local folder" if name == "local" else "moto S3 (local server)"
    out.append(f"| {label} | {int(hits):,} | {hours * int(fph):,} → {hours} | {g('list-before')[0]:.2f} s | {g('list-after')[0]:.2f} s | "
               f"{g('run-before')[0]:.1f} s | {g('run-after')[0]:.1f} s | {g('run-before')[1]/1024:.0f} MiB | {g('run-after')[1]/1024:.0f} MiB | "
               f"{g('compact')[0]:.1f} s | {g('compact')[1]/1024:.0f} MiB |")
out += ["", NOTES.strip()]
section = "\n".join(out) + "\n\n"
text = open(bench).read() if os.path.exists(bench) else "# Benchmarks\n\n"
start = text.find("## Compaction")
if start >= 0:
    end = text.find("\n## ", start + 1)
    text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
else:
    text = text.rstrip("\n") + "\n\n" + section
open(bench, "w").write(text.rstrip("\n") + "\n")
print(section)
PY
