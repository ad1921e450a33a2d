# One-line recipes over the same commands CI and the README use.

# Run every test (CI additionally starts an S3-speaking server: see .ci/run)
test:
    cargo test --workspace

# What CI runs on a clean clone
ci:
    bash .ci/run

# Build, fill the local lake, run a collector with live traffic, attribute, print the leaderboard
demo *ARGS:
    cargo run --release --bin demo -- {{ARGS}}

# Traffic: `just gen http --customers 500` (through a running collector) or `just gen lake --hits 1000000` (straight to the lake)
gen MODE *ARGS:
    if [ "{{MODE}}" = "lake" ]; then cargo run --release --bin pipeline -- gen {{ARGS}}; else cargo run --release --bin gen -- {{MODE}} {{ARGS}}; fi

# Run the collector on the local default lake (data/lake) and spool (data/spool)
serve *ARGS:
    cargo run --release --bin collector -- serve {{ARGS}}

# Clicks/s and p99 latency of the collector against nginx answering a fixed 302 (writes bench/out/collector.md)
bench-collector:
    bash bench/collector.sh

# Pipeline wall time and peak RSS against DuckDB running queries/attribution.sql (10M and 50M hits; BENCH_SIZES, BENCH_RUNS override)
bench-pipeline:
    bash bench/pipeline.sh

# Small hit files against compacted ones: list, run and memory before and after `pipeline compact`, local and moto S3 (writes BENCH.md, "Compaction")
bench-compact:
    bash bench/compact.sh

# Lint
lint:
    cargo clippy --workspace --all-targets -- -D warnings
