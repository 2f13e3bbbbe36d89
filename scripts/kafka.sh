#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) for tests/CI.
#
# No Docker and no tarball: the broker's jars come from Maven Central through
# scripts/kafka/pom.xml (mvn dependency:copy-dependencies), and the broker runs as
#   java -cp '<home>/lib/*' kafka.Kafka <home>/server.properties
#
# Usage:
#   scripts/kafka.sh up            start (idempotent) and wait until every listener
#                                  accepts connections; a running broker started
#                                  with another configuration (e.g. by an older
#                                  version of this script) is restarted
#   scripts/kafka.sh down [--wipe] stop; --wipe also deletes the data dir
#                                  (the TLS/OAuth material in <home>/tls is kept)
#   scripts/kafka.sh status        exit 0 if running, 1 if not
#   scripts/kafka.sh topics ARGS   org.apache.kafka.tools.TopicCommand with
#                                  --bootstrap-server filled in, e.g.
#                                  scripts/kafka.sh topics --create --topic t --partitions 8
#   scripts/kafka.sh run-class CLASS ARGS   any main class on the Kafka classpath
#
# Listeners, all on 127.0.0.1 (PORT = TICKFAN_KAFKA_PORT, default 9092):
#   PORT     PLAINTEXT   (inter-broker listener; what TopicCommand and the
#                         readiness probe use)
#   PORT+1   CONTROLLER  (KRaft controller, PLAINTEXT)
#   PORT+2   SSL         TLS, server certificate only (ssl.client.auth=none)
#   PORT+3   MTLS        protocol SSL with ssl.client.auth=required
#   PORT+4   SASL_SSL    TLS (no client certificate) + SASL: SCRAM-SHA-256,
#                        SCRAM-SHA-512, PLAIN and OAUTHBEARER
# SASL users: tickfan / tickfan-secret (SCRAM: created when the storage is
# formatted, or added through the admin API on a data dir formatted before
# SCRAM; PLAIN: in the listener's JAAS config). OAUTHBEARER: the broker checks
# RS256 JWTs against <home>/tls/jwks.json (key id tickfan-test); required
# claims: iss=tickfan-test-idp, aud containing tickfan-kafka, sub, iat, exp
# (scope optional).
#
# Generated on the first `up` of a home (kept across restarts and `down --wipe`;
# delete <home>/tls to regenerate), in <home>/tls, with openssl:
#   ca.pem ca-key.pem                 test CA
#   broker.pem broker-key.pem         broker certificate (SAN DNS:localhost,
#   broker-keystore.pem               IP:127.0.0.1) + key; keystore = key + cert
#   client.pem client-key.pem         client certificate CN=tickfan-client (MTLS)
#   expired-client.pem expired-client-key.pem
#                                     client certificate from the test CA that
#                                     expired in 2020
#   other-ca.pem                      an unrelated CA (for "unknown CA" tests)
#   oauth-key.pem jwks.json           RS256 signing key (PKCS#8) for test JWTs
#                                     and the JWKS the broker validates with
# Private keys: unencrypted PKCS#8 PEM; ECDSA P-256 for the certificates,
# RSA 2048 for oauth-key.pem.
# Written on every `up`: <home>/secure.env, KEY=VALUE lines (absolute paths,
# no quoting) for tests: TICKFAN_TEST_{SSL,MTLS,SASL_SSL}_BROKERS,
# TICKFAN_TEST_CA, TICKFAN_TEST_OTHER_CA, TICKFAN_TEST_CLIENT_{CERT,KEY},
# TICKFAN_TEST_EXPIRED_{CERT,KEY}, TICKFAN_TEST_SASL_{USER,PASSWORD},
# TICKFAN_TEST_OAUTH_{KEY,KID,ISSUER,AUDIENCE}.
#
# Environment:
#   TICKFAN_KAFKA_HOME        state dir (jars, config, data, tls, pid, log);
#                             default <repo>/.cache/kafka
#   TICKFAN_KAFKA_PORT        PLAINTEXT port on 127.0.0.1 (default 9092); the
#                             other listeners use PORT+1..PORT+4 (see above)
#   TICKFAN_KAFKA_HEAP        broker heap (default 512m)
#   TICKFAN_KAFKA_UP_TIMEOUT  seconds `up` waits for the broker (default 90)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"
POM_DIR="$SCRIPT_DIR/kafka"
POM="$POM_DIR/pom.xml"

KAFKA_HOME="${TICKFAN_KAFKA_HOME:-$REPO_ROOT/.cache/kafka}"
PORT="${TICKFAN_KAFKA_PORT:-9092}"
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65531)); then
  echo "kafka.sh: TICKFAN_KAFKA_PORT must be a port number <= 65531 (PORT..PORT+4 are used), got '$PORT'" >&2
  exit 2
fi
CONTROLLER_PORT=$((PORT + 1))
SSL_PORT=$((PORT + 2))
MTLS_PORT=$((PORT + 3))
SASL_SSL_PORT=$((PORT + 4))
ALL_PORTS=("$PORT" "$CONTROLLER_PORT" "$SSL_PORT" "$MTLS_PORT" "$SASL_SSL_PORT")
HOST=127.0.0.1
BOOTSTRAP="$HOST:$PORT"
HEAP="${TICKFAN_KAFKA_HEAP:-512m}"
UP_TIMEOUT="${TICKFAN_KAFKA_UP_TIMEOUT:-90}"

log() { echo "kafka.sh: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# Absolute path of KAFKA_HOME even if given relative (we cd before starting java).
mkdir -p "$KAFKA_HOME"
KAFKA_HOME="$(cd "$KAFKA_HOME" && pwd -P)"
LIB_DIR="$KAFKA_HOME/lib"
LIB_STAMP="$LIB_DIR/.pom.sha256"
DATA_DIR="$KAFKA_HOME/data"
CONFIG="$KAFKA_HOME/server.properties"
CLIENT_CONFIG="$KAFKA_HOME/client.properties"
PID_FILE="$KAFKA_HOME/kafka.pid"
LOG_FILE="$KAFKA_HOME/kafka.log"
TLS_DIR="$KAFKA_HOME/tls"
TLS_STAMP="$TLS_DIR/.complete"
SECURE_ENV="$KAFKA_HOME/secure.env"
# Holds the cluster id of the data dir whose SCRAM users exist (see format_storage).
SCRAM_STAMP="$KAFKA_HOME/.scram-users"
JWKS_URL="file://$TLS_DIR/jwks.json"

SASL_USER=tickfan
SASL_PASSWORD=tickfan-secret
OAUTH_KID=tickfan-test
OAUTH_ISSUER=tickfan-test-idp
OAUTH_AUDIENCE=tickfan-kafka

# Serialise concurrent invocations on the same home (e.g. two `up`s at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$KAFKA_HOME/.lock"
  flock 9
fi

# ---------------------------------------------------------------- jars

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

ensure_jars() {
  local want
  want="$(pom_hash)"
  if [[ -d "$LIB_DIR" && -f "$LIB_STAMP" && "$(cat "$LIB_STAMP")" == "$want" ]] &&
    compgen -G "$LIB_DIR/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed once to fetch the Kafka jars)"
  log "fetching Kafka jars from Maven Central into $LIB_DIR"
  local tmp="$KAFKA_HOME/lib.tmp.$$"
  rm -rf "$tmp"
  local mvn_log="$KAFKA_HOME/mvn.log"
  if ! (cd "$POM_DIR" && mvn -B --no-transfer-progress -Dstyle.color=never -f "$POM" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp") \
    >"$mvn_log" 2>&1; then
    tail -n 40 "$mvn_log" >&2 || true
    rm -rf "$tmp"
    die "mvn dependency:copy-dependencies failed (full output: $mvn_log)"
  fi
  echo "$want" >"$tmp/.pom.sha256"
  rm -rf "$LIB_DIR"
  mv "$tmp" "$LIB_DIR"
}

# Short-lived JVM for the CLI tools: fast start, small heap, quiet logs.
tool_cmd() {
  TOOL_CMD=(java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
    -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$POM_DIR/log4j2-tools.properties"
    -cp "$LIB_DIR/*" "$@")
}

run_class() {
  tool_cmd "$@"
  "${TOOL_CMD[@]}" 9>&-
}

# ---------------------------------------------------------------- TLS / OAuth material

# hex (as openssl prints it) on stdin -> unpadded base64url (JWK "n"/"e").
hex_to_b64url() {
  local hex
  hex="$(tr -d ' \n:')"
  ((${#hex} % 2 == 0)) || hex="0$hex"
  # shellcheck disable=SC2001,SC2059 # the format is the data: \xHH escapes
  printf "$(sed 's/../\\x&/g' <<<"$hex")" | openssl base64 -A | tr '+/' '-_' | tr -d '='
}

# Runs in a fresh directory (cwd), under `set -e`; writes every file of $TLS_DIR.
gen_tls_files() {
  cat >openssl.cnf <<'EOF'
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ ca ]
default_ca = test_ca
[ test_ca ]
database = ca-db/index.txt
new_certs_dir = ca-db
serial = ca-db/serial
default_md = sha256
policy = any_dn
unique_subject = no
email_in_dn = no
copy_extensions = none
[ any_dn ]
commonName = supplied
EOF
  mkdir ca-db
  : >ca-db/index.txt
  openssl rand -hex 16 >ca-db/serial

  # Certificate keys are ECDSA P-256: generating six RSA keys takes seconds on
  # a busy 2-core machine, EC keys milliseconds (Kafka's PEM key store, JSSE
  # and librdkafka/OpenSSL all take them). The OAuth key is RSA (RS256).
  newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
  # self_signed_ca NAME CN
  self_signed_ca() {
    newkey "$1-key.pem"
    openssl req -config openssl.cnf -new -x509 -key "$1-key.pem" -sha256 -days 3650 \
      -subj "/CN=$2" -extensions v3_ca -out "$1.pem"
  }
  # leaf NAME CN EXTENSIONS [openssl ca validity args...]
  leaf() {
    local name="$1" cn="$2" ext="$3"
    shift 3
    newkey "$name-key.pem"
    openssl req -config openssl.cnf -new -key "$name-key.pem" -subj "/CN=$cn" -out "$name.csr"
    openssl ca -batch -config openssl.cnf -cert ca.pem -keyfile ca-key.pem -notext \
      -extensions "$ext" "$@" -in "$name.csr" -out "$name.pem"
  }

  self_signed_ca ca "tickfan test CA"
  self_signed_ca other-ca "tickfan unrelated test CA"
  rm -f other-ca-key.pem
  leaf broker localhost server -days 3650
  leaf client tickfan-client client -days 3650
  # openssl x509 -days can't go negative; openssl ca takes explicit dates.
  leaf expired-client tickfan-client client -startdate 20200101000000Z -enddate 20200102000000Z
  cat broker-key.pem broker.pem >broker-keystore.pem
  openssl verify -CAfile ca.pem broker.pem client.pem
  if openssl verify -CAfile ca.pem expired-client.pem >/dev/null 2>&1; then
    echo "expired-client.pem unexpectedly verifies" >&2
    return 1
  fi

  # OAuth: RS256 signing key and the JWKS the broker validates tokens with.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out oauth-key.pem
  local n e
  n="$(openssl pkey -in oauth-key.pem -pubout | openssl rsa -pubin -noout -modulus |
    sed 's/^Modulus=//' | hex_to_b64url)"
  e="$(openssl pkey -in oauth-key.pem -noout -text |
    sed -n 's/^publicExponent: \([0-9][0-9]*\).*/\1/p' | xargs printf '%X' | hex_to_b64url)"
  [[ -n "$n" && -n "$e" ]]
  cat >jwks.json <<EOF
{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"$OAUTH_KID","n":"$n","e":"$e"}]}
EOF

  rm -rf ca-db openssl.cnf ./*.csr
}

# Generates $TLS_DIR once (all files, atomically); later `up`s reuse it.
ensure_tls() {
  [[ -f "$TLS_STAMP" ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl not found (needed to generate the test certificates)"
  log "generating test CA, certificates and OAuth key in $TLS_DIR"
  local tmp="$KAFKA_HOME/tls.tmp.$$" gen_log="$KAFKA_HOME/tls-gen.log" rc=0
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # Not in an `if`/`||` (which would switch off `set -e` inside the subshell).
  set +e
  (
    set -e
    shopt -s inherit_errexit
    cd "$tmp"
    gen_tls_files
  ) >"$gen_log" 2>&1
  rc=$?
  set -e
  if ((rc != 0)); then
    tail -n 30 "$gen_log" >&2 || true
    rm -rf "$tmp"
    die "generating the TLS material failed (full output: $gen_log)"
  fi
  date -u +%Y-%m-%dT%H:%M:%SZ >"$tmp/.complete"
  rm -rf "$TLS_DIR"
  mv "$tmp" "$TLS_DIR"
}

write_secure_env() {
  local tmp="$SECURE_ENV.tmp.$$"
  cat >"$tmp" <<EOF
TICKFAN_TEST_SSL_BROKERS=$HOST:$SSL_PORT
TICKFAN_TEST_MTLS_BROKERS=$HOST:$MTLS_PORT
TICKFAN_TEST_SASL_SSL_BROKERS=$HOST:$SASL_SSL_PORT
TICKFAN_TEST_CA=$TLS_DIR/ca.pem
TICKFAN_TEST_OTHER_CA=$TLS_DIR/other-ca.pem
TICKFAN_TEST_CLIENT_CERT=$TLS_DIR/client.pem
TICKFAN_TEST_CLIENT_KEY=$TLS_DIR/client-key.pem
TICKFAN_TEST_EXPIRED_CERT=$TLS_DIR/expired-client.pem
TICKFAN_TEST_EXPIRED_KEY=$TLS_DIR/expired-client-key.pem
TICKFAN_TEST_SASL_USER=$SASL_USER
TICKFAN_TEST_SASL_PASSWORD=$SASL_PASSWORD
TICKFAN_TEST_OAUTH_KEY=$TLS_DIR/oauth-key.pem
TICKFAN_TEST_OAUTH_KID=$OAUTH_KID
TICKFAN_TEST_OAUTH_ISSUER=$OAUTH_ISSUER
TICKFAN_TEST_OAUTH_AUDIENCE=$OAUTH_AUDIENCE
EOF
  mv -f "$tmp" "$SECURE_ENV"
}

# ---------------------------------------------------------------- config

# server.properties on stdout.
render_server_properties() {
  local l
  cat <<EOF
# Generated by scripts/kafka.sh on every 'up'; edits are overwritten.
# Single-node KRaft: this process is both broker and (only) controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT,SSL://$HOST:$SSL_PORT,MTLS://$HOST:$MTLS_PORT,SASL_SSL://$HOST:$SASL_SSL_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,SSL://$HOST:$SSL_PORT,MTLS://$HOST:$MTLS_PORT,SASL_SSL://$HOST:$SASL_SSL_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,MTLS:SSL,SASL_SSL:SASL_SSL

# TLS listeners: PEM key store (key + certificate) and PEM trust store (test CA).
EOF
  for l in ssl mtls sasl_ssl; do
    cat <<EOF
listener.name.$l.ssl.keystore.type=PEM
listener.name.$l.ssl.keystore.location=$TLS_DIR/broker-keystore.pem
listener.name.$l.ssl.truststore.type=PEM
listener.name.$l.ssl.truststore.location=$TLS_DIR/ca.pem
EOF
  done
  cat <<EOF
listener.name.ssl.ssl.client.auth=none
listener.name.mtls.ssl.client.auth=required
listener.name.sasl_ssl.ssl.client.auth=none

# SASL_SSL: SCRAM users live in the cluster metadata (added at format time),
# PLAIN users in the JAAS config, OAUTHBEARER tokens are RS256 JWTs checked
# against a local JWKS file (the JVM property
# org.apache.kafka.sasl.oauthbearer.allowed.urls must list its URL).
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler
listener.name.sasl_ssl.sasl.oauthbearer.jwks.endpoint.url=$JWKS_URL
listener.name.sasl_ssl.sasl.oauthbearer.expected.audience=$OAUTH_AUDIENCE
listener.name.sasl_ssl.sasl.oauthbearer.expected.issuer=$OAUTH_ISSUER
listener.name.sasl_ssl.sasl.oauthbearer.sub.claim.name=sub

log.dirs=$DATA_DIR
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true

# Internal topics: one replica, few partitions (creating the default 50
# __consumer_offsets partitions slows the first consumer-group join).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Low latency / quick tests.
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
socket.send.buffer.bytes=1048576
socket.receive.buffer.bytes=1048576
log.retention.hours=24
log.segment.bytes=268435456
log.retention.check.interval.ms=300000
EOF
}

write_config() {
  render_server_properties >"$CONFIG"
  cat >"$CLIENT_CONFIG" <<EOF
# Admin-client settings for the readiness probe and 'kafka.sh topics'.
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

random_cluster_id() {
  # 16 random bytes, URL-safe base64 without padding (Kafka's Uuid format);
  # avoid a leading '-' as Kafka's own Uuid.randomUuid() does.
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* && ${#id} -eq 22 ]] && break
  done
  echo "$id"
}

data_cluster_id() {
  sed -n 's/^cluster\.id=//p' "$DATA_DIR/meta.properties" 2>/dev/null
}

# Do the SCRAM users exist in this data dir? $SCRAM_STAMP names the cluster id
# they were created for, so a wiped/reformatted data dir doesn't inherit it.
scram_users_present() {
  local cid
  cid="$(data_cluster_id)"
  [[ -n "$cid" && -f "$SCRAM_STAMP" && "$(cat "$SCRAM_STAMP")" == "$cid" ]]
}

format_storage() {
  if [[ -f "$DATA_DIR/meta.properties" ]]; then
    # Formatted before SCRAM users were added at format time: they are
    # created through the admin API once the broker is up (ensure_scram_users).
    return 0
  fi
  mkdir -p "$DATA_DIR"
  local cid
  cid="$(random_cluster_id)"
  log "formatting storage in $DATA_DIR (cluster id $cid, SCRAM user $SASL_USER)"
  run_class kafka.tools.StorageTool format --config "$CONFIG" \
    --cluster-id "$cid" --ignore-formatted \
    --add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]" >&2 ||
    die "storage format failed"
  echo "$cid" >"$SCRAM_STAMP"
}

# For a data dir formatted by an older kafka.sh (no SCRAM users): upsert them
# over the PLAINTEXT listener of the running broker.
ensure_scram_users() {
  scram_users_present && return 0
  log "adding SCRAM user $SASL_USER (data dir formatted without it)"
  local m
  # One mechanism per request: Kafka rejects a request that alters the same
  # user twice ("A user credential cannot be altered twice in the same request").
  for m in SCRAM-SHA-256 SCRAM-SHA-512; do
    run_class org.apache.kafka.tools.ConfigCommand --bootstrap-server "$BOOTSTRAP" \
      --command-config "$CLIENT_CONFIG" --alter --entity-type users --entity-name "$SASL_USER" \
      --add-config "$m=[password=$SASL_PASSWORD]" >&2 || return 1
  done
  data_cluster_id >"$SCRAM_STAMP"
}

# ---------------------------------------------------------------- process

# Pid of the broker this script started for this home, or nothing.
broker_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must be our kafka.Kafka with our config.
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmd
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    [[ "$cmd" == *kafka.Kafka*"$CONFIG"* ]] || return 1
  fi
  echo "$pid"
}

port_open() {
  # bash's /dev/tcp: succeeds iff something accepts on 127.0.0.1:$1.
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

list_topics_cmd() {
  tool_cmd org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --command-config "$CLIENT_CONFIG" --list
}

all_ports_open() {
  local p
  for p in "${ALL_PORTS[@]}"; do
    port_open "$p" || return 1
  done
}

# Does the broker really answer? (every listener accepts connections, and a
# metadata round trip through the admin client on PLAINTEXT works)
answers() {
  all_ports_open || return 1
  list_topics_cmd
  if command -v timeout >/dev/null 2>&1; then
    timeout 30 "${TOOL_CMD[@]}" >/dev/null 2>&1 9>&-
  else
    "${TOOL_CMD[@]}" >/dev/null 2>&1 9>&-
  fi
}

print_log_tail() {
  if [[ -f "$LOG_FILE" ]]; then
    log "---- last 60 lines of $LOG_FILE ----"
    tail -n 60 "$LOG_FILE" >&2 || true
    log "---- end of $LOG_FILE ----"
  else
    log "(no $LOG_FILE)"
  fi
}

wait_ready() {
  local pid="$1" deadline=$((SECONDS + UP_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker process $pid exited during startup"
      return 1
    fi
    if answers; then
      return 0
    fi
    sleep 0.5
  done
  log "broker did not answer on $BOOTSTRAP (and ports ${ALL_PORTS[*]}) within ${UP_TIMEOUT}s"
  return 1
}

# Was the running broker started with the configuration this script writes now?
# (No after an upgrade of this script, e.g. from before the TLS/SASL listeners.)
config_is_current() {
  [[ -f "$CONFIG" && -f "$TLS_STAMP" ]] && cmp -s "$CONFIG" <(render_server_properties)
}

# After the broker answers: things that need a running broker, then secure.env.
finish_up() {
  ensure_scram_users || return 1
  write_secure_env
}

cmd_up() {
  local pid p
  if pid="$(broker_pid)"; then
    if config_is_current; then
      if answers; then
        finish_up || die "broker pid $pid is up but setting it up failed"
        log "already running (pid $pid) on $BOOTSTRAP"
        return 0
      fi
      log "broker pid $pid is running but not answering yet; waiting"
      if wait_ready "$pid"; then
        finish_up || die "broker pid $pid is up but setting it up failed"
        log "up (pid $pid) on $BOOTSTRAP"
        return 0
      fi
      print_log_tail
      exit 1
    fi
    log "broker pid $pid runs another configuration (e.g. from an older kafka.sh," \
      "without the TLS/SASL listeners); restarting it"
    stop_pid "$pid"
  fi
  rm -f "$PID_FILE"

  for p in "${ALL_PORTS[@]}"; do
    if port_open "$p"; then
      die "port $p on $HOST is already in use by another process (not a broker started" \
        "by this script for $KAFKA_HOME; it needs ports $PORT..$SASL_SSL_PORT);" \
        "set TICKFAN_KAFKA_PORT or stop it"
    fi
  done
  command -v java >/dev/null 2>&1 || die "java not found (Kafka 4 needs Java 17+)"

  local t0=$SECONDS
  ensure_jars
  ensure_tls
  write_config
  format_storage

  [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  mkdir -p "$KAFKA_HOME/logs"
  log "starting broker on $BOOTSTRAP (controller :$CONTROLLER_PORT, SSL :$SSL_PORT," \
    "MTLS :$MTLS_PORT, SASL_SSL :$SASL_SSL_PORT), log $LOG_FILE"
  (
    cd "$KAFKA_HOME"
    exec nohup java -Xms"$HEAP" -Xmx"$HEAP" \
      -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
      -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      -Dkafka.logs.dir="$KAFKA_HOME/logs" \
      -Dlog4j2.configurationFile="$POM_DIR/log4j2-broker.properties" \
      -Dorg.apache.kafka.sasl.oauthbearer.allowed.urls="$JWKS_URL" \
      -cp "$LIB_DIR/*" kafka.Kafka "$CONFIG"
  ) </dev/null >"$LOG_FILE" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"

  if wait_ready "$pid"; then
    if finish_up; then
      log "up (pid $pid) on $BOOTSTRAP in $((SECONDS - t0))s; secure listeners: $SECURE_ENV"
      return 0
    fi
    log "broker is up but setting it up failed"
  fi
  print_log_tail
  # Don't leave a half-started broker behind.
  stop_pid "$pid" || true
  rm -f "$PID_FILE"
  exit 1
}

stop_pid() {
  local pid="$1" deadline
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "broker $pid did not stop after TERM; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.1
    done
  fi
}

cmd_down() {
  local wipe=0 pid
  for a in "$@"; do
    case "$a" in
      --wipe) wipe=1 ;;
      *) die "down: unknown option $a" ;;
    esac
  done
  if pid="$(broker_pid)"; then
    log "stopping broker (pid $pid)"
    stop_pid "$pid"
    log "stopped"
  else
    log "not running"
  fi
  rm -f "$PID_FILE"
  if ((wipe)); then
    log "wiping $DATA_DIR"
    rm -rf "$DATA_DIR"
  fi
}

cmd_status() {
  local pid
  if pid="$(broker_pid)"; then
    if port_open "$PORT"; then
      echo "running (pid $pid) on $BOOTSTRAP (SSL :$SSL_PORT, MTLS :$MTLS_PORT," \
        "SASL_SSL :$SASL_SSL_PORT), home $KAFKA_HOME"
    else
      echo "running (pid $pid), not yet listening on $BOOTSTRAP, home $KAFKA_HOME"
    fi
    return 0
  fi
  echo "not running (home $KAFKA_HOME)"
  return 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    topics)
      ensure_jars
      [[ -f "$CLIENT_CONFIG" ]] || write_config
      exec 9>&- # don't hold the lock (and block `down`) while a tool runs
      run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
        --command-config "$CLIENT_CONFIG" "$@"
      ;;
    run-class)
      [[ $# -ge 1 ]] || die "run-class needs a class name"
      ensure_jars
      exec 9>&-
      run_class "$@"
      ;;
    -h | --help | help) usage ;;
    *)
      usage
      exit 2
      ;;
  esac
}

main "$@"
