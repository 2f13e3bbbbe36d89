#!/usr/bin/env bash
# Runs one loadgen scenario against one edge, all on this machine, and leaves
# the JSON summary and the latency plot in bench-results/.
#
#   scripts/bench.sh SCENARIO CLIENTS SYMBOLS RATE [extra loadgen flags...]
#   scripts/bench.sh broadcast 100 50 5000
#   scripts/bench.sh wall 1000 500 10000 --per-client 10
#   scripts/bench.sh slow 1000 500 10000 --per-client 10 --slow-fraction 0.1
#   scripts/bench.sh one-each 15000 15000 15000
#   TAG=deflate EDGE_ARGS=--permessage-deflate scripts/bench.sh broadcast 100 50 5000 --deflate
#
# permessage-deflate (tickfan only): the edge (or demo) accepts it with
# EDGE_ARGS=--permessage-deflate (and --deflate-min-bytes N), the load
# generator offers it with the extra flag --deflate; the summary then has
# "deflate" (connections where it was negotiated, and a "warning" when some
# were not: an edge without the flag) beside bytes_per_delivery (decoded)
# and wire_bytes_per_delivery (read from the sockets). TAG keeps the results
# apart from an uncompressed run's.
#
# SYSTEM=tickfan (default), SYSTEM=baseline (benches/baseline-redis: Redis
# pub/sub + one Node.js `ws` server, started with setsid by its run.sh and
# stopped with `run.sh stop`; its publisher paces RATE over the same symbols),
# or SYSTEM=centrifugo (Centrifugo v6.9.1 with its Kafka consumer, built and
# run by scripts/centrifugo.sh on a fresh topic, fed by `tickfan produce
# --format centrifugo`, measured with `loadgen --protocol centrifugo`).
# Both systems get the same explicit symbol list, S00000..S<SYMBOLS-1> (short: one argument
# may not exceed 128 KiB).
#
# KAFKA=real (default): starts Kafka (scripts/kafka.sh), a fresh topic,
# `tickfan produce` and one `tickfan edge`. KAFKA=mock: one `tickfan demo`
# (librdkafka's in-process mock cluster) is broker, producer and edge in one
# process, so its CPU figures include the broker and the producer.
# Then `tickfan loadgen --edge-pid` (edge CPU per delivered tick and RSS per
# connection come from /proc).
#
# Environment: PARTITIONS (8), PORT (18500), BIN (a prebuilt tickfan; default:
# build the release binary), EDGE_ARGS and PRODUCE_ARGS (extra flags for the
# edge/demo and the producer, e.g. PRODUCE_ARGS="--tick-bytes 512"), PERF=1
# (record the edge with `perf record -g` into bench-results/NAME.perf.data;
# with PERF_FOR=S, only S seconds starting PERF_AFTER seconds in; PERF_G:
# the call-graph flags, e.g. "--call-graph dwarf"),
# TAG (appended to the result file names). Extra arguments after RATE go to
# `tickfan loadgen` as they are (e.g. --processes 2, --deflate).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCENARIO="$1" CLIENTS="$2" SYMBOLS="$3" RATE="$4"
shift 4
PARTITIONS="${PARTITIONS:-8}"
PORT="${PORT:-18500}"
KAFKA="${KAFKA:-real}"
SYSTEM="${SYSTEM:-tickfan}"
OUT="bench-results"
mkdir -p "$OUT"
syms=$(seq -f 'S%05g' 0 $((SYMBOLS - 1)) | paste -sd,)
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin tickfan
  BIN="${CARGO_TARGET_DIR:-target}/release/tickfan"
fi
# Admission wide open: the scenarios measure fan-out, not the front door
# (the storm scenario passes its own limits in EDGE_ARGS).
open=(--max-connections 19000 --connect-rate 100000 --connect-burst 100000
  --connect-rate-per-ip 100000 --connect-burst-per-ip 100000 --max-connections-per-ip 100000)
pids=()
# Wait for them to exit (an edge drains its clients first), so a next run
# can bind the same port.
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
if [ "$SYSTEM" = baseline ]; then
  KAFKA=redis
  base=benches/baseline-redis
  export STATE_DIR="${TMPDIR:-/tmp}/tickfan-bench-baseline"
  $base/run.sh stop >/dev/null 2>&1 || true
  trap '$base/run.sh stop >/dev/null 2>&1 || true' EXIT
  # Its own session: run.sh's signal handling never reaches this script or
  # the load generator.
  BASE_PORT="$PORT" RATE="$RATE" SYMBOLS="$syms" QUIET=1 setsid $base/run.sh >"$OUT/baseline.log" 2>&1 &
  for _ in $(seq 1 300); do
    [ -f "$STATE_DIR/publisher.pid" ] && curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  edge=$(cat "$STATE_DIR/server-0.pid")
elif [ "$SYSTEM" = centrifugo ]; then
  scripts/kafka.sh up >/dev/null
  topic="bench-centrifugo-$SCENARIO-$(date +%s)"
  scripts/kafka.sh topics --create --topic "$topic" --partitions "$PARTITIONS" >/dev/null
  trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true; scripts/centrifugo.sh down' EXIT
  TICKFAN_CENTRIFUGO_PORT="$PORT" TICKFAN_CENTRIFUGO_TOPIC="$topic" scripts/centrifugo.sh up >"$OUT/centrifugo.log"
  edge=$(scripts/centrifugo.sh pid)
  # shellcheck disable=SC2086
  "$BIN" produce --brokers 127.0.0.1:9092 --topic "$topic" --symbols "$syms" --format centrifugo \
    --rate "$RATE" --zipf 0 ${PRODUCE_ARGS:-} >"$OUT/produce.log" 2>&1 &
  pids+=($!)
elif [ "$KAFKA" = mock ]; then
  # shellcheck disable=SC2086
  "$BIN" demo --listen "127.0.0.1:$PORT" --symbols "$syms" --rate "$RATE" \
    --zipf 0 --partitions "$PARTITIONS" "${open[@]}" ${EDGE_ARGS:-} ${PRODUCE_ARGS:-} >"$OUT/edge.log" 2>&1 &
  edge=$!
  pids+=("$edge")
else
  scripts/kafka.sh up >/dev/null
  topic="bench-$SCENARIO-$(date +%s)"
  scripts/kafka.sh topics --create --topic "$topic" --partitions "$PARTITIONS" >/dev/null
  # shellcheck disable=SC2086
  "$BIN" edge --listen "127.0.0.1:$PORT" --brokers 127.0.0.1:9092 --topic "$topic" \
    "${open[@]}" ${EDGE_ARGS:-} >"$OUT/edge.log" 2>&1 &
  edge=$!
  pids+=("$edge")
  # shellcheck disable=SC2086
  "$BIN" produce --brokers 127.0.0.1:9092 --topic "$topic" --symbols "$syms" \
    --rate "$RATE" --zipf 0 ${PRODUCE_ARGS:-} >"$OUT/produce.log" 2>&1 &
  pids+=($!)
fi
for _ in $(seq 1 150); do
  [ "$SYSTEM" != tickfan ] && break
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
name="$SCENARIO-$CLIENTS-$KAFKA${TAG:+-$TAG}"
if [ "${PERF:-0}" = 1 ]; then
  # PERF_AFTER seconds after the load generator starts (past connecting and
  # warm-up), for PERF_FOR seconds: a profile of the measured window only.
  if [ -n "${PERF_FOR:-}" ]; then
    (sleep "${PERF_AFTER:-0}" && exec perf record ${PERF_G:--g} -F 499 -p "$edge" -o "$OUT/$name.perf.data" -- sleep "$PERF_FOR") >/dev/null 2>&1 &
  else
    perf record -g -F 499 -p "$edge" -o "$OUT/$name.perf.data" >/dev/null 2>&1 &
  fi
  pids+=($!)
fi
url="ws://127.0.0.1:$PORT/ws" protocol=tickfan
if [ "$SYSTEM" = centrifugo ]; then
  url="ws://127.0.0.1:$PORT/connection/websocket" protocol=centrifugo KAFKA=centrifugo
  name="$SCENARIO-$CLIENTS-$KAFKA${TAG:+-$TAG}"
fi
"$BIN" loadgen --url "$url" --protocol "$protocol" --scenario "$SCENARIO" --clients "$CLIENTS" \
  --symbols "$syms" --edge-pid "$edge" --json "$OUT/$name.json" --plot "$OUT/$name.svg" "$@"
# The server's own count of the connections it ended (tickfan: slow clients
# dropped after --write-timeout; Centrifugo: disconnected, e.g. code 3008
# "slow"), from its Prometheus endpoint, kept with the results.
if curl -fs "http://127.0.0.1:$PORT/metrics" >"$OUT/$name.metrics.txt" 2>/dev/null; then
  echo "bench.sh: server-side disconnects (from $OUT/$name.metrics.txt):"
  grep -E '^(tickfan_sessions_ended_total|centrifugo_[a-z_]*disconnect[a-z_]*)[{ ]' "$OUT/$name.metrics.txt" | grep -vE ' 0$' || echo "  none"
fi
if [ "${PERF:-0}" = 1 ]; then
  kill -INT "${pids[-1]}" && wait "${pids[-1]}" 2>/dev/null || true
fi
