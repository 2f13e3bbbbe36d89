#!/usr/bin/env bash
# Centrifugo v6.9.1, the benchmarks' second baseline (BENCHMARKS.md), with its
# built-in Kafka consumer in publication data mode: each record's value is
# published as is into the channels its `centrifugo-channels` header names
# (`tickfan produce --format centrifugo` writes the tick as JSON with the
# symbol as its channel). No Docker: built from source with the Go toolchain,
# from the Go module proxy.
#
# Usage:
#   scripts/centrifugo.sh up       build (once) and start on 127.0.0.1:PORT,
#                                  consuming TOPIC from BROKERS; waits until
#                                  /health answers (idempotent: a running one
#                                  is restarted with the current settings)
#   scripts/centrifugo.sh down     stop
#   scripts/centrifugo.sh pid      print the server's pid (for loadgen --edge-pid)
#
# Clients connect to ws://127.0.0.1:PORT/connection/websocket without a token
# (`client.insecure`: the benchmark measures delivery, not auth) and subscribe
# to a channel per symbol:
#   tickfan loadgen --protocol centrifugo \
#     --url ws://127.0.0.1:8000/connection/websocket --edge-pid "$(scripts/centrifugo.sh pid)" ...
#
# Environment:
#   TICKFAN_CENTRIFUGO_HOME     state dir (binary, config, log, pid);
#                               default <repo>/.cache/centrifugo
#   TICKFAN_CENTRIFUGO_PORT     HTTP/WebSocket port (default 8000)
#   TICKFAN_CENTRIFUGO_BROKERS  Kafka bootstrap (default 127.0.0.1:9092)
#   TICKFAN_CENTRIFUGO_TOPIC    topic (default ticks-centrifugo)
set -euo pipefail

VERSION=v6.9.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
HOME_DIR="${TICKFAN_CENTRIFUGO_HOME:-$ROOT/.cache/centrifugo}"
PORT="${TICKFAN_CENTRIFUGO_PORT:-8000}"
BROKERS="${TICKFAN_CENTRIFUGO_BROKERS:-127.0.0.1:9092}"
TOPIC="${TICKFAN_CENTRIFUGO_TOPIC:-ticks-centrifugo}"
BIN="$HOME_DIR/bin/centrifugo"
PIDFILE="$HOME_DIR/centrifugo.pid"
LOG="$HOME_DIR/centrifugo.log"

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

build() {
  # `go install` builds report v0.0.0 (the release sets the version at link
  # time): a marker file says which version the binary is.
  if [[ -x "$BIN" && "$(cat "$BIN.version" 2>/dev/null)" == "$VERSION" ]]; then
    return
  fi
  command -v go >/dev/null || { echo "centrifugo.sh: needs the Go toolchain (go)" >&2; exit 1; }
  echo "centrifugo.sh: building centrifugo $VERSION (go install; a few minutes the first time)"
  mkdir -p "$HOME_DIR/bin"
  GOBIN="$HOME_DIR/bin" go install "github.com/centrifugal/centrifugo/v6@$VERSION"
  echo "$VERSION" >"$BIN.version"
}

down() {
  if running; then
    local pid
    pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

up() {
  build
  down
  mkdir -p "$HOME_DIR"
  local brokers_json
  brokers_json="$(printf '%s' "$BROKERS" | awk -F, '{for (i = 1; i <= NF; i++) printf "%s\"%s\"", (i > 1 ? "," : ""), $i}')"
  cat >"$HOME_DIR/config.json" <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $PORT },
  "client": { "insecure": true },
  "health": { "enabled": true },
  "prometheus": { "enabled": true },
  "log": { "level": "warn" },
  "consumers": [
    {
      "name": "tickfan_bench",
      "enabled": true,
      "type": "kafka",
      "kafka": {
        "brokers": [$brokers_json],
        "topics": ["$TOPIC"],
        "consumer_group": "centrifugo-bench",
        "publication_data_mode": { "enabled": true, "channels_header": "centrifugo-channels" }
      }
    }
  ]
}
EOF
  (cd "$HOME_DIR" && exec "$BIN" --config "$HOME_DIR/config.json" >"$LOG" 2>&1) &
  echo $! >"$PIDFILE"
  for _ in $(seq 300); do
    if ! running; then
      echo "centrifugo.sh: centrifugo exited; see $LOG" >&2
      tail -20 "$LOG" >&2
      exit 1
    fi
    if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
      echo "centrifugo.sh: up (pid $(cat "$PIDFILE")) on ws://127.0.0.1:$PORT/connection/websocket, consuming $TOPIC from $BROKERS; log $LOG"
      return
    fi
    sleep 0.1
  done
  echo "centrifugo.sh: no /health after 30 s; see $LOG" >&2
  exit 1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  pid) running && cat "$PIDFILE" ;;
  *) sed -n '2,30p' "$0" >&2; exit 2 ;;
esac
