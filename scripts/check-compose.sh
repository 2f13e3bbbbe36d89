#!/usr/bin/env bash
# Static validation of the compose deployment (compose/) and the Dockerfile.
# No Docker engine needed. Installs what it needs, idempotently (Debian, root):
#   * Debian's docker-compose (1.29): `docker-compose config -q`
#   * check-jsonschema (PyPI, venv in .cache/venv-compose): the compose file
#     against the compose-spec JSON schema vendored in check-jsonschema
#   * promtool and haproxy, unpacked from Debian's prometheus and haproxy
#     packages into .cache/compose-tools (nothing is started or installed as a
#     service): `promtool check config`, `haproxy -c`
#   * mounted files exist, Grafana dashboard JSON parses and queries only known
#     tickfan metrics, collector pipelines are consistent, edge settings.
#   * hadolint on the Dockerfile only if a `hadolint` is already on PATH.
#
# Usage: scripts/check-compose.sh [COMPOSE_DIR]   (default: <repo>/compose;
#        the Dockerfile is looked up in COMPOSE_DIR/..)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
COMPOSE_DIR="$(cd "${1:-$ROOT/compose}" && pwd -P)"
COMPOSE_FILE="$COMPOSE_DIR/docker-compose.yml"
DOCKERFILE="$COMPOSE_DIR/../Dockerfile"
CACHE="$ROOT/.cache"
VENV="$CACHE/venv-compose"
TOOLS="$CACHE/compose-tools"
CHECK_JSONSCHEMA_VERSION=0.39.0

log() { echo "check-compose: $*" >&2; }
FAILED=()
PASSED=()
check() { # check NAME CMD...
  local name="$1"
  shift
  log "--- $name"
  if "$@"; then
    PASSED+=("$name")
  else
    log "FAIL: $name"
    FAILED+=("$name")
  fi
}

[[ -f "$COMPOSE_FILE" ]] || { log "no $COMPOSE_FILE"; exit 1; }

# ---- tools -----------------------------------------------------------------
APT_UPDATED=0
apt_install() { # apt_install PKG... (only the missing ones)
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  if ((EUID != 0)); then
    log "missing Debian packages ${missing[*]} (run as root to install them)"
    return 1
  fi
  if ((APT_UPDATED == 0)); then
    apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
command -v python3 >/dev/null 2>&1 || apt_install python3

if ! "$VENV/bin/check-jsonschema" --version 2>/dev/null | grep -q "$CHECK_JSONSCHEMA_VERSION"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && rm -rf "$VENV" && python3 -m venv "$VENV"; }
  log "installing check-jsonschema==$CHECK_JSONSCHEMA_VERSION into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
fi
PY="$VENV/bin/python" # has ruamel.yaml (a check-jsonschema dependency)

# promtool and haproxy: binaries out of Debian's packages, never started.
if [[ ! -x "$TOOLS/usr/bin/promtool" || ! -x "$TOOLS/usr/sbin/haproxy" ]]; then
  ((APT_UPDATED == 1)) || { apt-get update -qq && APT_UPDATED=1; }
  rm -rf "$TOOLS" && mkdir -p "$TOOLS/debs"
  log "unpacking promtool and haproxy from Debian's packages into $TOOLS"
  (cd "$TOOLS/debs" && chmod 0777 . && apt-get download -qq prometheus haproxy 2>/dev/null)
  for deb in "$TOOLS"/debs/*.deb; do dpkg-deb -x "$deb" "$TOOLS"; done
  rm -rf "$TOOLS/debs"
fi
# haproxy's shared libraries (plain libraries, no services)
apt_install liblua5.3-0 libopentracing-c-wrapper0

# ---- checks ----------------------------------------------------------------
check "docker-compose config -q (Debian docker-compose $(docker-compose version --short 2>/dev/null))" \
  docker-compose -f "$COMPOSE_FILE" config -q

if docker compose version >/dev/null 2>&1; then
  check "docker compose config -q (Compose v2 plugin)" docker compose -f "$COMPOSE_FILE" config -q
fi

check "compose-spec JSON schema (check-jsonschema --builtin-schema vendor.compose-spec)" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$COMPOSE_FILE"

check "promtool check config prometheus/prometheus.yml ($("$TOOLS/usr/bin/promtool" --version 2>&1 | head -1))" \
  "$TOOLS/usr/bin/promtool" check config "$COMPOSE_DIR/prometheus/prometheus.yml"

check "haproxy -c haproxy/haproxy.cfg ($("$TOOLS/usr/sbin/haproxy" -v 2>/dev/null | head -1 | cut -d' ' -f1-3))" \
  "$TOOLS/usr/sbin/haproxy" -c -q -f "$COMPOSE_DIR/haproxy/haproxy.cfg"

check "mounts, dashboard metrics, provisioning, collector, edge settings, image pins" \
  "$PY" - "$COMPOSE_DIR" "$DOCKERFILE" <<'PYEOF'
import json, os, re, sys
from ruamel.yaml import YAML

compose_dir, dockerfile = sys.argv[1], sys.argv[2]
yaml = YAML(typ="safe")
errors = []
def err(msg): errors.append(msg)
def ok(msg): print("  ok:", msg)
def load(rel):
    with open(os.path.join(compose_dir, rel)) as f:
        return yaml.load(f)

compose = load("docker-compose.yml")
services = compose.get("services") or {}

# 1. Every bind-mounted file/dir and build context exists.
mounts = {}  # container path -> host path
for name, svc in services.items():
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            src, _, rest = v.partition(":")
            dst = rest.split(":")[0]
            if not src.startswith((".", "/", "~")):
                continue  # named volume
        elif v.get("type") == "bind":
            src, dst = v["source"], v["target"]
        else:
            continue
        path = os.path.normpath(os.path.join(compose_dir, os.path.expanduser(src)))
        mounts[dst] = path
        if os.path.exists(path):
            ok(f"{name}: mount {src} exists")
        else:
            err(f"{name}: mounted {src} does not exist ({path})")
    b = svc.get("build")
    if b:
        ctx = os.path.normpath(os.path.join(compose_dir, b if isinstance(b, str) else b.get("context", ".")))
        df = os.path.join(ctx, "Dockerfile" if isinstance(b, str) else b.get("dockerfile", "Dockerfile"))
        if os.path.isfile(df):
            ok(f"{name}: build {os.path.relpath(df, compose_dir)} exists")
        else:
            err(f"{name}: build Dockerfile {df} does not exist")
    img = svc.get("image", "")
    if not svc.get("build"):
        if ":" not in img or img.endswith(":latest"):
            err(f"{name}: image {img!r} is not pinned to a version tag")
        else:
            ok(f"{name}: image {img} pinned")

# 2. Grafana: datasource, dashboard provider path, dashboard JSON and metrics.
KNOWN = {
    "connections", "subscriptions", "ticks_consumed_total", "deliveries_total",
    "frames_total", "gaps_total", "drops_total", "decode_errors_total",
    "assigned_partitions", "outbox_queued_ticks", "seq_anomalies_total",
    "admission_rejections_total", "auth_failures_total", "protocol_errors_total",
    # added alongside the compose stack (histogram; gauge)
    "e2e_latency_seconds", "ingest_lag_records",
}
REQUIRED = {
    "connections", "deliveries_total", "frames_total", "drops_total", "gaps_total",
    "admission_rejections_total", "decode_errors_total", "assigned_partitions",
    "outbox_queued_ticks", "e2e_latency_seconds", "ingest_lag_records",
}
ds_uids = set()
import glob
for f in glob.glob(os.path.join(compose_dir, "grafana/provisioning/datasources/*.y*ml")):
    for ds in (yaml.load(open(f)) or {}).get("datasources") or []:
        ds_uids.add(ds.get("uid"))
if not ds_uids:
    err("no provisioned Grafana datasource")
provider_paths = []
for f in glob.glob(os.path.join(compose_dir, "grafana/provisioning/dashboards/*.y*ml")):
    for p in (yaml.load(open(f)) or {}).get("providers") or []:
        provider_paths.append(p["options"]["path"])
for p in provider_paths:
    host = mounts.get(p)
    if not host:
        err(f"dashboard provider path {p} is not a mount of the compose file")
        continue
    ok(f"dashboard provider path {p} <- {os.path.relpath(host, compose_dir)}")
dash_path = os.path.join(compose_dir, "grafana/dashboards/tickfan.json")
try:
    dash = json.load(open(dash_path))
except Exception as e:
    err(f"{dash_path}: {e}")
    dash = {"panels": []}
seen = set()
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels") or [])
n = 0
for p in panels(dash.get("panels", [])):
    for t in p.get("targets") or []:
        n += 1
        ds = (t.get("datasource") or p.get("datasource") or {}).get("uid")
        if ds not in ds_uids:
            err(f"panel {p.get('title')!r}: datasource uid {ds!r} is not provisioned {sorted(ds_uids)}")
        for m in re.findall(r"\btickfan_[a-z0-9_]+", t.get("expr", "")):
            base = m[len("tickfan_"):]
            base = re.sub(r"_(bucket|sum|count)$", "", base) if base.startswith("e2e_latency_seconds") else base
            if base not in KNOWN:
                err(f"panel {p.get('title')!r}: unknown metric {m}")
            seen.add(base)
missing = REQUIRED - seen
if missing:
    err(f"dashboard lacks panels for: {sorted(missing)}")
ok(f"dashboard: {n} queries, metrics {sorted(seen)}")

# 3. OpenTelemetry Collector: OTLP 4317/4318, pipelines reference defined parts.
col = load("otel/collector.yaml")
protos = (((col.get("receivers") or {}).get("otlp") or {}).get("protocols")) or {}
if not str((protos.get("grpc") or {}).get("endpoint", "")).endswith(":4317"):
    err("collector: otlp grpc receiver not on :4317")
if not str((protos.get("http") or {}).get("endpoint", "")).endswith(":4318"):
    err("collector: otlp http receiver not on :4318")
for pname, pipe in ((col.get("service") or {}).get("pipelines") or {}).items():
    for kind in ("receivers", "processors", "exporters"):
        for c in pipe.get(kind) or []:
            if c not in (col.get(kind) or {}):
                err(f"collector: pipeline {pname} uses undefined {kind[:-1]} {c}")
for e in (col.get("exporters") or {}):
    if e.split("/")[0] != "debug":
        err(f"collector: exporter {e} (only debug: nothing external)")
ok("collector: otlp 4317/4318, pipelines consistent, debug exporter only")

# 4. Edges: trusted proxies, /readyz healthcheck, stop grace above the drain.
def seconds(s):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(s))
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0) if m else 0
edges = [n for n, s in services.items() if (s.get("command") or [""])[0] == "edge"]
if len(edges) < 2:
    err(f"expected at least two edge services, found {edges}")
for name in edges:
    s = services[name]
    cmd = s["command"]
    if "--trusted-proxies" not in cmd:
        err(f"{name}: no --trusted-proxies")
    if "/readyz" not in " ".join((s.get("healthcheck") or {}).get("test") or []):
        err(f"{name}: healthcheck does not probe /readyz")
    if seconds(s.get("stop_grace_period", "10s")) <= 20:
        err(f"{name}: stop_grace_period must exceed --shutdown-grace (20s)")
ok(f"edges {edges}: --trusted-proxies, /readyz healthcheck, stop_grace_period > 20s")

# 5. HAProxy essentials.
cfg = open(os.path.join(compose_dir, "haproxy/haproxy.cfg")).read()
for needle in ("timeout tunnel", "option forwardfor", "/readyz", "balance leastconn", "bind :8080"):
    if needle not in cfg:
        err(f"haproxy.cfg: missing {needle!r}")
ok("haproxy.cfg: forwardfor, tunnel timeout, /readyz checks, leastconn, :8080")

# 6. Dockerfile basics (hadolint, if present, runs separately).
try:
    d = open(dockerfile).read()
    froms = re.findall(r"^FROM\s+(\S+)", d, re.M)
    for f in froms:
        if ":" not in f or f.endswith(":latest"):
            err(f"Dockerfile: FROM {f} not pinned")
    users = re.findall(r"^USER\s+(\S+)", d, re.M)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        err("Dockerfile: final USER is not non-root")
    for needle in ('ENTRYPOINT ["/usr/local/bin/tickfan"]', "EXPOSE 8080", "--locked"):
        if needle not in d:
            err(f"Dockerfile: missing {needle!r}")
    ok(f"Dockerfile: FROM {froms}, USER {users[-1] if users else None}")
except OSError as e:
    err(f"Dockerfile: {e}")

for e in errors:
    print("  ERROR:", e)
sys.exit(1 if errors else 0)
PYEOF

if command -v hadolint >/dev/null 2>&1; then
  check "hadolint Dockerfile" hadolint "$DOCKERFILE"
else
  log "--- hadolint: not on PATH, skipped (no registry package ships it)"
fi

echo
for p in "${PASSED[@]}"; do echo "PASS  $p"; done
for f in "${FAILED[@]}"; do echo "FAIL  $f"; done
if ((${#FAILED[@]})); then
  echo "check-compose: ${#FAILED[@]} check(s) failed"
  exit 1
fi
echo "check-compose: all ${#PASSED[@]} checks passed"
