#!/usr/bin/env bash
# Baseline for tickfan benchmarks: the classic Redis pub/sub WebSocket fan-out.
#
# Usage:
#   benches/baseline-redis/run.sh          start everything, print the URLs, wait;
#                                          Ctrl-C / SIGTERM stops everything
#   benches/baseline-redis/run.sh stop     stop what a previous run started
#                                          (servers, publisher, private redis)
#
# Environment (defaults in brackets):
#   INSTANCES   number of server.js instances [1], on ports BASE_PORT, BASE_PORT+1, ...
#   BASE_PORT   first WebSocket port [18400]; clients connect to ws://HOST:PORT/ws
#   HOST        listen address of the servers [127.0.0.1]
#   REDIS_PORT  port of the private redis-server [6390] (no persistence)
#   RATE        ticks/s published in total [1000]
#   SYMBOLS     symbol count (SYM00000..) or a comma list [100]
#   SIZE        pad each tick to about this many bytes [unset: ~120 bytes]
#   DURATION    publisher stops after this many seconds, and then so does
#               everything else [unset: run until stopped]
#   PUBLISH     0 = start no publisher (a load generator publishes itself) [1]
#   STATE_DIR   pid files and logs [${TMPDIR:-/tmp}/tickfan-baseline-redis]
#   QUIET       1 = do not echo the logs to this terminal [0]
#
# Example:  RATE=2000 SYMBOLS=100 INSTANCES=2 benches/baseline-redis/run.sh
#
# Installs redis-server with apt-get if it is missing, and runs `npm ci` if
# node_modules is missing. Everything listens on loopback only.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
INSTANCES="${INSTANCES:-1}"
BASE_PORT="${BASE_PORT:-18400}"
HOST="${HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6390}"
RATE="${RATE:-1000}"
SYMBOLS="${SYMBOLS:-100}"
SIZE="${SIZE:-}"
DURATION="${DURATION:-}"
PUBLISH="${PUBLISH:-1}"
QUIET="${QUIET:-0}"
STATE_DIR="${STATE_DIR:-${TMPDIR:-/tmp}/tickfan-baseline-redis}"

log() { printf '%s [run.sh] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# pid_alive PID PATTERN: the process exists and its command line contains PATTERN
# (so a recycled pid of some unrelated process is never signalled).
pid_alive() {
  local pid="$1" pat="$2"
  local cmd
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$pat"* ]]
}

# stop_pid PID PATTERN: SIGTERM, wait up to 5 s, then SIGKILL.
stop_pid() {
  local pid="$1" pat="$2" i
  pid_alive "$pid" "$pat" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" "$pat" || return 0
    sleep 0.1
  done
  log "pid $pid ($pat) did not stop on SIGTERM; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# stop_pidfile FILE PATTERN: stop_pid on the pid in FILE, then remove FILE.
stop_pidfile() {
  local file="$1" pat="$2"
  [[ -f "$file" ]] || return 0
  stop_pid "$(cat "$file" 2>/dev/null || true)" "$pat"
  rm -f "$file"
}

stop_all() {
  local f
  stop_pidfile "$STATE_DIR/publisher.pid" "publisher.js"
  for f in "$STATE_DIR"/server-*.pid; do
    if [[ -e "$f" ]]; then stop_pidfile "$f" "server.js"; fi
  done
  if [[ -f "$STATE_DIR/redis.pid" ]]; then
    local rpid
    rpid="$(cat "$STATE_DIR/redis.pid" 2>/dev/null || true)"
    # SIGTERM makes redis-server shut down cleanly (nothing to save here).
    stop_pid "$rpid" "redis-server"
    rm -f "$STATE_DIR/redis.pid"
  fi
  stop_pidfile "$STATE_DIR/tail.pid" "tail"
}

if [[ "${1:-}" == "stop" ]]; then
  # A run.sh still waiting in the foreground cleans up after itself on SIGTERM.
  if [[ -f "$STATE_DIR/run.pid" ]]; then
    stop_pidfile "$STATE_DIR/run.pid" "run.sh"
  fi
  stop_all
  log "stopped"
  exit 0
elif [[ $# -gt 0 ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi

mkdir -p "$STATE_DIR"
if [[ -f "$STATE_DIR/run.pid" ]] && pid_alive "$(cat "$STATE_DIR/run.pid")" "run.sh"; then
  log "already running (pid $(cat "$STATE_DIR/run.pid")); use: $0 stop"
  exit 1
fi
stop_all # leftovers of a run that was killed -9
echo $$ >"$STATE_DIR/run.pid"

cleaned=0
cleanup() {
  [[ $cleaned == 1 ]] && return
  cleaned=1
  trap - INT TERM HUP EXIT
  log "stopping"
  stop_all
  rm -f "$STATE_DIR/run.pid"
  log "stopped"
}
trap cleanup EXIT
trap 'log "SIGINT"; exit 130' INT
trap 'log "SIGTERM"; exit 143' TERM
trap 'log "SIGHUP"; exit 129' HUP

# ---- redis-server ----
if ! command -v redis-server >/dev/null 2>&1; then
  log "installing redis-server (apt-get)"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  # Keep the package's own service (port 6379) from being started on install.
  policy_added=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
  if [[ $policy_added == 1 ]]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi

if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "something already answers on redis port $REDIS_PORT; stop it or set REDIS_PORT"
  exit 1
fi
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize yes --pidfile "$STATE_DIR/redis.pid" --logfile "$STATE_DIR/redis.log" \
  --dir "$STATE_DIR"
for ((i = 0; i < 100; i++)); do
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null || { log "redis-server did not start; see $STATE_DIR/redis.log"; exit 1; }
log "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT (pid $(cat "$STATE_DIR/redis.pid"), no persistence)"

# ---- node dependencies ----
if [[ ! -d "$HERE/node_modules" ]]; then
  log "npm ci"
  (cd "$HERE" && npm ci --no-audit --no-fund)
fi

# ---- servers ----
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
rm -f "$STATE_DIR"/server-*.log "$STATE_DIR/publisher.log"
urls=()
for ((i = 0; i < INSTANCES; i++)); do
  port=$((BASE_PORT + i))
  PORT="$port" HOST="$HOST" node "$HERE/server.js" >"$STATE_DIR/server-$i.log" 2>&1 &
  echo $! >"$STATE_DIR/server-$i.pid"
  urls+=("ws://$HOST:$port/ws")
done
for ((i = 0; i < INSTANCES; i++)); do
  port=$((BASE_PORT + i))
  for ((t = 0; t < 100; t++)); do
    # Ready once listening and subscribed to the channel.
    grep -q 'subscribed to redis channel' "$STATE_DIR/server-$i.log" 2>/dev/null &&
      { ! command -v curl >/dev/null 2>&1 || curl -fsS "http://$HOST:$port/healthz" >/dev/null 2>&1; } && break
    kill -0 "$(cat "$STATE_DIR/server-$i.pid")" 2>/dev/null || { cat "$STATE_DIR/server-$i.log" >&2; log "server $i died"; exit 1; }
    sleep 0.1
  done
done
log "redis subscribers on channel ticks: $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" pubsub numsub ticks | tail -n 1)"

# ---- publisher ----
pub_args=(--rate "$RATE" --symbols "$SYMBOLS" --redis "$REDIS_URL")
[[ -n "$SIZE" ]] && pub_args+=(--size "$SIZE")
[[ -n "$DURATION" ]] && pub_args+=(--duration "$DURATION")
if [[ "$PUBLISH" != 0 ]]; then
  node "$HERE/publisher.js" "${pub_args[@]}" >"$STATE_DIR/publisher.log" 2>&1 &
  echo $! >"$STATE_DIR/publisher.pid"
fi

if [[ "$QUIET" != 1 ]]; then
  logs=("$STATE_DIR"/server-*.log)
  [[ "$PUBLISH" != 0 ]] && logs+=("$STATE_DIR/publisher.log")
  tail -n +1 -F "${logs[@]}" 2>/dev/null &
  echo $! >"$STATE_DIR/tail.pid"
fi

log "WebSocket endpoints (send {\"op\":\"subscribe\",\"symbols\":[...]}):"
for u in "${urls[@]}"; do
  h="${u/#ws:/http:}"
  log "  $u   (health: ${h%/ws}/healthz)"
done
[[ "$PUBLISH" != 0 ]] && log "publisher: ${pub_args[*]}"
log "logs and pid files: $STATE_DIR; stop with Ctrl-C or: $0 stop"

# Wait until a server or the publisher exits (publisher with DURATION), or a signal.
watch=()
for f in "$STATE_DIR"/server-*.pid "$STATE_DIR/publisher.pid"; do
  if [[ -f "$f" ]]; then watch+=("$(cat "$f")"); fi
done
set +e
wait -n "${watch[@]}"
rc=$?
set -e
if [[ -f "$STATE_DIR/publisher.pid" ]] && ! pid_alive "$(cat "$STATE_DIR/publisher.pid")" "publisher.js"; then
  log "publisher exited (rc $rc)"
  sleep 1 # let the last server stats through
else
  log "a server exited (rc $rc)"
fi
