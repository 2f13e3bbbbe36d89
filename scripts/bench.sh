#!/usr/bin/env bash
# Runs one loadgen scenario against a real edge on real Kafka, all on this
# machine, and leaves the JSON summary and the latency plot in bench-results/.
#
#   scripts/bench.sh SCENARIO CLIENTS SYMBOLS RATE [extra loadgen flags...]
#   scripts/bench.sh broadcast 100 50 5000
#   scripts/bench.sh wall 1000 500 10000 --per-client 10
#   scripts/bench.sh slow 1000 500 10000 --per-client 10 --slow-fraction 0.1
#   scripts/bench.sh one-each 2000 2000 2000
#
# Starts Kafka (scripts/kafka.sh), a fresh topic, `tickfan produce`, one
# `tickfan edge` and `tickfan loadgen --edge-pid` (edge CPU per delivered tick
# and RSS per connection come from /proc). Release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCENARIO="$1" CLIENTS="$2" SYMBOLS="$3" RATE="$4"
shift 4
PARTITIONS="${PARTITIONS:-8}"
PORT="${PORT:-18500}"
OUT="bench-results"
mkdir -p "$OUT"
cargo build --release --bin tickfan
scripts/kafka.sh up >/dev/null
topic="bench-$SCENARIO-$(date +%s)"
scripts/kafka.sh topics --create --topic "$topic" --partitions "$PARTITIONS" >/dev/null
bin=target/release/tickfan
$bin edge --listen "127.0.0.1:$PORT" --brokers 127.0.0.1:9092 --topic "$topic" \
  --max-connections 19000 --connect-rate 100000 --connect-burst 100000 \
  --connect-rate-per-ip 100000 --connect-burst-per-ip 100000 >"$OUT/edge.log" 2>&1 &
edge=$!
$bin produce --brokers 127.0.0.1:9092 --topic "$topic" --symbols "$SYMBOLS" --rate "$RATE" --zipf 0 >"$OUT/produce.log" 2>&1 &
producer=$!
trap 'kill $producer $edge 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
name="$SCENARIO-$CLIENTS"
$bin loadgen --url "ws://127.0.0.1:$PORT/ws" --scenario "$SCENARIO" --clients "$CLIENTS" \
  --symbols "$SYMBOLS" --edge-pid "$edge" --json "$OUT/$name.json" --plot "$OUT/$name.svg" "$@"
