#!/usr/bin/env bash
# Instructions per click of the release collector under callgrind (valgrind), a measure that
# other work on the machine does not move: 2,000 warm-up clicks, counters zeroed, N clicks
# (h2load --h1 -c4), then 7 s so the 5 s sink flush of those clicks is counted too.
# Usage: bench/collector_instructions.sh [BIN] [N]   (BIN: default target/release/collector)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/collector}
N=${2:-20000}
PORT=${PORT:-18590}
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need valgrind valgrind
need h2load nghttp2-client
need curl curl
W=$(mktemp -d)
trap 'kill $VP 2>/dev/null || true; rm -rf "$W"' EXIT
$BIN --lake "$W/lake" offers add --offer bench --destination https://shop.example.com/landing --token bench-token-1 >/dev/null
$BIN --lake "$W/lake" links add --offer bench --member m1 --code bench1 >/dev/null
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/cg.%p" --dump-instr=no \
  "$BIN" --lake "$W/lake" serve --listen 127.0.0.1:$PORT --spool "$W/spool" --flush-interval 5s --ip-salt bench --http-threads 2 >"$W/log" 2>&1 &
VP=$!
for _ in $(seq 1 120); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.5; done
h2load --h1 -n 2000 -c 4 "http://127.0.0.1:$PORT/l/bench1" >/dev/null
sleep 6
callgrind_control -z "$VP" >/dev/null 2>&1
h2load --h1 -n "$N" -c 4 "http://127.0.0.1:$PORT/l/bench1" | grep -E "^requests:"
sleep 7
callgrind_control -d "$VP" >/dev/null 2>&1
sleep 2
IR=$(grep -h "^summary:" "$W"/cg.*.1 | awk '{print $2}')
echo "instructions: $IR for $N clicks: $((IR / N)) per click"
echo "lake bytes: $(du -sb "$W/lake/hits" 2>/dev/null | cut -f1 || echo 0) (before SIGTERM; the last segment is not uploaded yet)"
