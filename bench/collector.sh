#!/usr/bin/env bash
# Collector throughput benchmark: clicks/s and p99 latency of `GET /l/{code}` on the
# release collector (every click written to the spool before its 302 and fsync'd within
# 10 ms, spool uploaded to a local lake) against nginx answering a fixed 302 with a
# Set-Cookie, same machine, same load (wrk), alternating rounds, median of ROUNDS.
# Writes bench/out/collector.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
C_PORT=18580
N_PORT=18581

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need wrk wrk
need nginx nginx-light

cargo build --release -q --bin collector
BIN=${CARGO_TARGET_DIR:-target}/release/collector
WORK=$(mktemp -d)
trap 'kill $CPID $NPID 2>/dev/null || true; rm -rf "$WORK"' EXIT

$BIN --lake "$WORK/lake" offers add --offer bench --destination https://shop.example.com/landing --token bench-token-1 >/dev/null
$BIN --lake "$WORK/lake" links add --offer bench --member m1 --code bench1 >/dev/null
RUST_LOG=warn $BIN --lake "$WORK/lake" serve --listen 127.0.0.1:$C_PORT --spool "$WORK/spool" --flush-interval 5s --ip-salt bench &
CPID=$!

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$N_PORT;
    location /l/ {
      add_header Cache-Control no-store;
      add_header Set-Cookie "ct_vid=6f1c1d7e-3f4a-4b8e-9a53-0c1f2d3e4f50; Max-Age=2419200; Path=/; HttpOnly; SameSite=Lax";
      return 302 "https://shop.example.com/landing?ct_click_id=01a20f02-9fe7-76b4-b756-4e4bcb860792";
    }
  }
}
NGINX
nginx -c "$WORK/nginx/nginx.conf" &
NPID=$!
for p in $C_PORT $N_PORT; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$p/l/bench1" && break; sleep 0.1; done
done

run() { # url -> "rps p99_ms"
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$1")
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  local non3xx
  non3xx=$(awk '/Non-2xx or 3xx/ {print $5}' <<<"$out")
  [ -z "$non3xx" ] || echo "warning: $non3xx non-2xx/3xx responses from $1" >&2
  echo "$rps $p99"
}

c_rps=(); c_p99=(); n_rps=(); n_p99=()
for r in $(seq 1 "$ROUNDS"); do
  read -r a b < <(run "http://127.0.0.1:$N_PORT/l/bench1"); n_rps+=("$a"); n_p99+=("$b")
  read -r a b < <(run "http://127.0.0.1:$C_PORT/l/bench1?utm_source=bench"); c_rps+=("$a"); c_p99+=("$b")
  echo "round $r: nginx ${n_rps[-1]} req/s p99 ${n_p99[-1]} ms; collector ${c_rps[-1]} req/s p99 ${c_p99[-1]} ms" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
CR=$(median "${c_rps[@]}"); CP=$(median "${c_p99[@]}"); NR_=$(median "${n_rps[@]}"); NP=$(median "${n_p99[@]}")
RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/$CPID/status)

# Everything acknowledged must be in the lake: stop with SIGTERM (flush) and count rows.
kill -TERM $CPID; wait $CPID || true
HITS=$(python3 -c "import duckdb,sys; print(duckdb.sql(\"select count(*) from read_parquet('$WORK/lake/hits/*/*/*.parquet')\").fetchall()[0][0])" 2>/dev/null || echo "n/a (pip install duckdb)")

RATIO=$(awk -v c="$CR" -v n="$NR_" 'BEGIN {printf "%.2f", c/n}')
mkdir -p bench/out
cat > bench/out/collector.md <<MD
| what | clicks/s (median of $ROUNDS) | p99 latency (ms) |
|---|---|---|
| collector \`GET /l/{code}\` (spooled, fsync ≤ 10 ms, uploaded) | $CR | $CP |
| nginx fixed 302 | $NR_ | $NP |
| **ratio collector / nginx** | **$RATIO** | |

wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS alternating rounds; collector peak RSS $((RSS_KB / 1024)) MiB;
clicks in the lake after SIGTERM: $HITS.
Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load tool and servers share the cores.
MD
cat bench/out/collector.md
