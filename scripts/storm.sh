#!/usr/bin/env bash
# Reconnect storm at scale: starts `tickfan demo` (embedded Kafka) with the
# given admission limits, then PROCESSES load processes of CLIENTS each, over
# distinct loopback source addresses, all connecting at once. Each prints
# admissions per second and a JSON summary: the admitted rate must stay at or
# below RATE + BURST in any second.
#
#   scripts/storm.sh                           # 2 x 5,000 clients, 1,000/s, burst 500
#   PROCESSES=3 CLIENTS=6000 RATE=2000 scripts/storm.sh
#
# One process holds at most ~19,000 sockets here (20,000 open files), and the
# edge holds one per client, so keep PROCESSES*CLIENTS under ~18,000 per edge.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PROCESSES="${PROCESSES:-2}"
CLIENTS="${CLIENTS:-5000}"
RATE="${RATE:-1000}"
BURST="${BURST:-500}"
PORT="${PORT:-18300}"
cargo build --release --bin tickfan --example storm
target/release/tickfan demo --listen "127.0.0.1:$PORT" --rate 100 \
  --connect-rate "$RATE" --connect-burst "$BURST" \
  --connect-rate-per-ip 100000 --connect-burst-per-ip 100000 \
  --max-connections 19000 >/tmp/tickfan-storm-edge.log 2>&1 &
edge=$!
trap 'kill $edge 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
pids=()
for p in $(seq 0 $((PROCESSES - 1))); do
  target/release/examples/storm --url "ws://127.0.0.1:$PORT/ws" --clients "$CLIENTS" \
    --first-address $((1 + p * 50)) --addresses 50 >"/tmp/tickfan-storm-$p.log" 2>&1 &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
for p in $(seq 0 $((PROCESSES - 1))); do tail -n 1 "/tmp/tickfan-storm-$p.log"; done
curl -fs "http://127.0.0.1:$PORT/metrics" | grep -E '^tickfan_(connections|admission_rejections_total)' || true
exit $rc
