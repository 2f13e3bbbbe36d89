#!/usr/bin/env bash
# Reconnect storm at scale: starts `tickfan demo` (embedded Kafka) with the
# given admission limits, then `tickfan loadgen --scenario storm`: CLIENTS
# clients in PROCESSES worker processes over 100 loopback source addresses
# connect and subscribe (at the admission rate themselves), warm up, then all
# close at the same moment and reconnect at once, retrying with exponential
# backoff and full jitter and waiting at least Retry-After. Loadgen prints the
# clients back, admissions and rejections each second and a JSON summary (also
# in $OUT/storm.json). Fails unless every client came back and no second
# admitted more than RATE + BURST.
#
#   scripts/storm.sh                           # 10,000 clients in 2 processes, 1,000/s, burst 500
#   PROCESSES=3 CLIENTS=18000 RATE=2000 scripts/storm.sh
#
# One process holds at most ~19,000 sockets here (20,000 open files): keep
# CLIENTS / PROCESSES under that, and CLIENTS under the edge's 19,000
# connections (the edge is one process too).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PROCESSES="${PROCESSES:-2}"
CLIENTS="${CLIENTS:-10000}"
RATE="${RATE:-1000}"
BURST="${BURST:-500}"
PORT="${PORT:-18300}"
OUT="${OUT:-/tmp/tickfan-storm}"
bin="${CARGO_TARGET_DIR:-target}/release/tickfan"
cargo build --release --bin tickfan
mkdir -p "$OUT"
"$bin" demo --listen "127.0.0.1:$PORT" --rate 100 \
  --connect-rate "$RATE" --connect-burst "$BURST" \
  --connect-rate-per-ip 100000 --connect-burst-per-ip 100000 --max-connections-per-ip 100000 \
  --max-connections 19000 >"$OUT/edge.log" 2>&1 &
edge=$!
trap 'kill $edge 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
"$bin" loadgen --url "ws://127.0.0.1:$PORT/ws" --scenario storm \
  --clients "$CLIENTS" --processes "$PROCESSES" --source-addresses 100 \
  --symbols 50 --per-client 10 --warmup 2s --duration 5s \
  --edge-pid "$edge" --json "$OUT/storm.json"
# (loadgen has closed its clients by now: connections are in storm.json.)
echo "edge admission rejections during the storm:"
curl -fs "http://127.0.0.1:$PORT/metrics" | grep -E '^tickfan_admission_rejections_total' || true
echo "the limit implies at least $(( (CLIENTS - BURST) / RATE )) s for everyone to get back in"
max=$(sed -n 's/.*"max_admitted_per_second": \([0-9]*\).*/\1/p' "$OUT/storm.json")
if grep -q '"all_back_seconds": null' "$OUT/storm.json"; then
  echo "storm: not every client came back" >&2
  exit 1
fi
if [ "$max" -gt $((RATE + BURST)) ]; then
  echo "storm: $max admitted in one second, over $RATE + $BURST" >&2
  exit 1
fi
