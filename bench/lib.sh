# Shared by the benchmark scripts (sourced, not run).

# measure NAME LOG COMMAND… : runs COMMAND under /usr/bin/time -v (stdout to LOG.out,
# stderr and the timings to LOG) and appends "NAME wall_s rss_kib" to $times.
measure() {
  local name=$1 log=$2; shift 2
  /usr/bin/time -v "$@" >"$log.out" 2>"$log"
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  echo "$name $wall $rss" | tee -a "$times"
}
