#!/usr/bin/env bash
# Collector throughput benchmark: clicks/s and p99 latency of `GET /l/{code}` on the
# release collector (every click written to the spool before its 302 and fsync'd within
# 10 ms, spool uploaded to a local lake every 5 s) against nginx answering a fixed 302 with
# a Set-Cookie, same machine, same load tool, alternating rounds, median of ROUNDS.
#
# Reported: clicks/s (wrk, closed loop, CONNS connections) and each server's CPU time per
# request (utime+stime of its processes over the round / requests: the measure least moved
# by other work on the machine); the round-to-round trend with the spool's backlog after
# each round (a sink that falls behind shows here); p99 at half nginx's median rate (h2load,
# open loop at a fixed rate, both servers); the collector's peak RSS; and, after SIGTERM,
# the clicks in the lake against the clicks acknowledged. Writes bench/out/collector.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
HALF_DURATION=${HALF_DURATION:-10}
C_PORT=18580
N_PORT=18581

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need wrk wrk
need nginx nginx-light
need h2load nghttp2-client

# COLLECTOR_BIN: benchmark that binary instead (an earlier build, for a before/after).
if [ -n "${COLLECTOR_BIN:-}" ]; then
  BIN=$COLLECTOR_BIN
else
  cargo build --release -q --bin collector
  BIN=${CARGO_TARGET_DIR:-target}/release/collector
fi
WORK=$(mktemp -d)
trap 'kill $CPID $NPID 2>/dev/null || true; rm -rf "$WORK"' EXIT
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

$BIN --lake "$WORK/lake" offers add --offer bench --destination https://shop.example.com/landing --token bench-token-1 >/dev/null
$BIN --lake "$WORK/lake" links add --offer bench --member m1 --code bench1 >/dev/null
RUST_LOG=warn $BIN --lake "$WORK/lake" serve --listen 127.0.0.1:$C_PORT --spool "$WORK/spool" --flush-interval 5s --ip-salt bench &
CPID=$!

# nginx as a user would tune it for this: a worker per core, no access log, keep-alive.
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  server {
    # reuseport: a listening socket per worker, as the collector has one per HTTP thread;
    # without it the kernel may hand all 64 connections to one worker (138k-255k req/s from
    # one round to the next in the same run).
    listen 127.0.0.1:$N_PORT reuseport;
    location /l/ {
      add_header Cache-Control no-store;
      add_header Set-Cookie "ct_vid=6f1c1d7e-3f4a-4b8e-9a53-0c1f2d3e4f50; Max-Age=2419200; Path=/; HttpOnly; SameSite=Lax";
      return 302 "https://shop.example.com/landing?utm_source=bench&ct_click_id=01a20f02-9fe7-76b4-b756-4e4bcb860792&ct_cd=28";
    }
  }
}
NGINX
nginx -c "$WORK/nginx/nginx.conf" &
NPID=$!
ACKED=0
for p in $C_PORT $N_PORT; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$p/l/bench1" && break; sleep 0.1; done
done
ACKED=1 # the collector's warm-up click above

C_URL="http://127.0.0.1:$C_PORT/l/bench1?utm_source=bench"
N_URL="http://127.0.0.1:$N_PORT/l/bench1?utm_source=bench"
TICK=$(getconf CLK_TCK)
cpu_ticks() { # pid (and its children) -> utime+stime in clock ticks
  local s=0 p
  for p in "$1" $(pgrep -P "$1" || true); do s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat"))); done
  echo "$s"
}

run() { # pid url -> "rps p99_ms cpu_us_per_request requests"
  local out a b rps p99 n non3xx
  a=$(cpu_ticks "$1")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$2")
  b=$(cpu_ticks "$1")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  non3xx=$(awk '/Non-2xx or 3xx/ {print $5}' <<<"$out")
  [ -z "$non3xx" ] || echo "warning: $non3xx non-2xx/3xx responses from $2" >&2
  echo "$rps $p99 $(awk -v a="$a" -v b="$b" -v t="$TICK" -v n="$n" 'BEGIN {printf "%.2f", (b-a)/t*1e6/n}') $((n - ${non3xx:-0}))"
}

c_rps=(); c_p99=(); c_cpu=(); n_rps=(); n_p99=(); n_cpu=(); backlog=(); loads=()
for r in $(seq 1 "$ROUNDS"); do
  loads+=("$(cut -d' ' -f1 /proc/loadavg)")
  read -r a b c _ < <(run "$NPID" "$N_URL"); n_rps+=("$a"); n_p99+=("$b"); n_cpu+=("$c")
  read -r a b c n < <(run "$CPID" "$C_URL"); c_rps+=("$a"); c_p99+=("$b"); c_cpu+=("$c"); ACKED=$((ACKED + n))
  backlog+=("$(du -sm "$WORK/spool" | cut -f1)")
  echo "round $r (load ${loads[-1]}): nginx ${n_rps[-1]} req/s p99 ${n_p99[-1]} ms ${n_cpu[-1]} µs CPU/req; collector ${c_rps[-1]} req/s p99 ${c_p99[-1]} ms ${c_cpu[-1]} µs CPU/req, spool ${backlog[-1]} MB after" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
CR=$(median "${c_rps[@]}"); CP=$(median "${c_p99[@]}"); CC=$(median "${c_cpu[@]}")
NR_=$(median "${n_rps[@]}"); NP=$(median "${n_p99[@]}"); NC=$(median "${n_cpu[@]}")

# Latency at half nginx's median rate, open loop (h2load paces each connection), both servers.
HALF=$(awk -v n="$NR_" 'BEGIN {printf "%d", n/2}')
PER_CONN=$(( (HALF + CONNS - 1) / CONNS ))
half() { # url -> "achieved_rps p50_ms p99_ms max_ms 3xx"
  local log="$WORK/h2load.log" out
  rm -f "$log"
  out=$(h2load --h1 -c "$CONNS" -t "$THREADS" --rps="$PER_CONN" -D "$HALF_DURATION" --log-file="$log" "$1" 2>&1)
  local ok
  ok=$(awk '/status codes:/ {print $5}' <<<"$out")
  sort -n -k3 "$log" | awk -v d="$HALF_DURATION" -v ok="$ok" '{a[NR]=$3} END {printf "%.0f %.2f %.2f %.2f %d\n", NR/d, a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, a[NR]/1000, ok}'
}
read -r NH_RPS NH_P50 NH_P99 NH_MAX _ < <(half "$N_URL")
read -r CH_RPS CH_P50 CH_P99 CH_MAX CH_OK < <(half "$C_URL")
ACKED=$((ACKED + CH_OK))
RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/$CPID/status)
echo "half rate ($HALF/s): nginx $NH_RPS/s p99 $NH_P99 ms; collector $CH_RPS/s p99 $CH_P99 ms (max $CH_MAX ms); peak RSS $((RSS_KB / 1024)) MiB" >&2

# Everything acknowledged must be in the lake: stop with SIGTERM (flush) and count rows.
kill -TERM $CPID; wait $CPID || true
HITS=$(python3 -c "import duckdb,sys; print(duckdb.sql(\"select count(*) from read_parquet('$WORK/lake/hits/*/*/*.parquet')\").fetchall()[0][0])" 2>/dev/null || echo "n/a (pip install duckdb)")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

RATIO=$(awk -v c="$CR" -v n="$NR_" 'BEGIN {printf "%.2f", c/n}')
TREND=$(awk -v f="${c_rps[0]}" -v l="${c_rps[-1]}" 'BEGIN {printf "%+.0f%%", (l/f-1)*100}')
join() { local IFS=,; echo "$*" | sed 's/,/, /g'; }
mkdir -p bench/out
cat > bench/out/collector.md <<MD
| what | clicks/s (median of $ROUNDS) | p99 latency (ms) | CPU per request (µs) |
|---|---|---|---|
| collector \`GET /l/{code}\` (spooled, fsync ≤ 10 ms, uploaded) | $CR | $CP | $CC |
| nginx fixed 302 | $NR_ | $NP | $NC |
| **ratio collector / nginx** | **$RATIO** | | |

| at half nginx's rate ($HALF/s asked, open loop) | achieved/s | p50 (ms) | p99 (ms) | max (ms) |
|---|---|---|---|---|
| collector | $CH_RPS | $CH_P50 | **$CH_P99** | $CH_MAX |
| nginx | $NH_RPS | $NH_P50 | $NH_P99 | $NH_MAX |

Rounds (collector clicks/s): $(join "${c_rps[@]}") (last vs first: $TREND); nginx: $(join "${n_rps[@]}").
Spool after each round (MB; the sink keeps up when it does not grow): $(join "${backlog[@]}").
Collector peak RSS $((RSS_KB / 1024)) MiB. Clicks acknowledged $ACKED; clicks in the lake after SIGTERM: $HITS.
wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS alternating rounds; h2load --h1 -c$CONNS --rps=$PER_CONN per connection for ${HALF_DURATION}s.
Load average before $LOAD_BEFORE, at each round $(join "${loads[@]}"), after $LOAD_AFTER.
Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load tools and servers share the cores.
MD
cat bench/out/collector.md
