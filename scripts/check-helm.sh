#!/usr/bin/env bash
# Lint, render and validate the Helm chart helm/tickfan without a helm binary.
#
#   scripts/check-helm.sh [CHART_DIR]      (default: helm/tickfan)
#
# Installs what it needs, idempotently, into .cache/venv-helm:
#   helm-python-sdk   Helm v4 Go SDK (libhelm_c) bound with ctypes: lint, render,
#                     values.schema.json validation; no helm binary.
#   kubernetes-validate  JSON-schema validation of the rendered objects (--strict).
# Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$(cd "${1:-$ROOT/helm/tickfan}" && pwd)"
VENV="$ROOT/.cache/venv-helm"
KUBE_VERSION="${KUBE_VERSION:-1.31.0}"
REQS="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.2"

ensure_python() {
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
     && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    return
  fi
  echo "check-helm: installing python3 and python3-venv (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-venv >/dev/null
}

ensure_venv() {
  local stamp="$VENV/.check-helm-reqs"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$REQS" ]]; then
    return
  fi
  ensure_python
  echo "check-helm: setting up $VENV ($REQS)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check $REQS
  echo "$REQS" > "$stamp"
}

ensure_venv
echo "check-helm: chart $CHART, Kubernetes $KUBE_VERSION"
exec "$VENV/bin/python" - "$CHART" "$KUBE_VERSION" "$VENV/bin/kubernetes-validate" <<'PY'
import atexit, copy, os, re, shutil, subprocess, sys, tempfile
import yaml
import helm_python as helm

chart_dir, kube_version, kv_bin = sys.argv[1], sys.argv[2], sys.argv[3]
failures = []
checks = 0

def check(cond, what):
    global checks
    checks += 1
    if cond:
        print(f"  ok   {what}")
    else:
        print(f"  FAIL {what}")
        failures.append(what)

def load_values(name):
    return yaml.safe_load(open(os.path.join(chart_dir, name))) or {}

print(f"helm SDK {helm.helm_sdk_version()} (libhelm_c {helm.helm_c_version()}), no helm binary")
default_values = load_values("values.yaml")
prod_values = load_values("ci/production-values.yaml")

def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out

def render(values):
    with helm.Chart.load(chart_dir) as c:
        return c.render(values, name="tf", namespace="md", is_install=True)

def objects(manifests):
    objs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objs.append((path, doc))
    return objs

def by_kind(objs, kind):
    return [o for _, o in objs if o.get("kind") == kind]

# ---------------------------------------------------------------- lint
print("== helm lint (strict, kube v%s)" % kube_version)
for label, vals in [("default values", {}), ("ci/production-values.yaml", prod_values)]:
    try:
        rep = helm.lint(chart_dir, vals, strict=True, kube_version="v" + kube_version)
    except helm.HelmError as e:
        check(False, f"lint {label}: {e}")
        continue
    real = [m for m in rep["messages"] if m["severity"] >= 2]
    for m in rep["messages"]:
        print(f"       [{ {0:'UNKNOWN',1:'INFO',2:'WARNING',3:'ERROR'}[m['severity']] }] {m['path']}: {m['error']}")
    check(not real and not rep["errors"], f"lint {label}: no warnings or errors")

# ---------------------------------------------------------------- render + validate
print("== render and validate")
rendered = {}
for label, vals in [("default", {}), ("production", prod_values)]:
    try:
        rendered[label] = objects(render(vals))
        check(True, f"render {label} values ({len(rendered[label])} objects)")
    except helm.HelmError as e:
        check(False, f"render {label} values: {e}")

tmp = tempfile.mkdtemp(prefix="check-helm-")
atexit.register(shutil.rmtree, tmp, True)
for label, objs in rendered.items():
    files, crds = [], []
    for i, (path, obj) in enumerate(objs):
        if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            crds.append(obj)
            continue
        f = os.path.join(tmp, f"{label}-{i:02d}-{obj['kind']}.yaml")
        with open(f, "w") as fh:
            yaml.safe_dump(obj, fh)
        files.append(f)
    p = subprocess.run([kv_bin, "--strict", "-k", kube_version, *files], capture_output=True, text=True)
    out = (p.stdout + p.stderr).strip()
    bad = [l for l in out.splitlines() if not l.startswith("INFO")]
    for l in bad:
        print("       " + l)
    check(p.returncode == 0 and not bad,
          f"kubernetes-validate --strict -k {kube_version}: {label} ({', '.join(sorted(set(o['kind'] for _, o in objs if o not in crds)))})")
    for sm in crds:
        # CRDs are not in kubernetes-validate's schemas: check the ServiceMonitor by hand.
        print(f"       note: {sm['kind']} ({sm['apiVersion']}) is a CRD, not in kubernetes-validate's schemas: minimal structural check instead")
        svc = by_kind(objs, "Service")[0]
        spec = sm.get("spec", {})
        ok = (sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
              and set(sm["metadata"]) <= {"name", "namespace", "labels", "annotations"}
              and set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels", "sampleLimit"}
              and spec["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
              and spec["endpoints"] and all(e.get("port") in [p["name"] for p in svc["spec"]["ports"]] and e.get("path") == "/metrics"
                                            and set(e) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings", "metricRelabelings"}
                                            for e in spec["endpoints"]))
        check(ok, f"{label}: ServiceMonitor selects the Service and scrapes one of its ports at /metrics")

# ---------------------------------------------------------------- semantics
print("== chart semantics")
def semantics(label, objs, vals):
    v = deep_merge(default_values, vals)
    dep = by_kind(objs, "Deployment")[0]
    pod = dep["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    cm = by_kind(objs, "ConfigMap")[0]["data"]
    sc = ctr["securityContext"]
    check(ctr["args"] == ["edge"], f"{label}: args [edge]")
    check(ctr["ports"][0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"} and cm["TICKFAN_LISTEN"] == "0.0.0.0:8080",
          f"{label}: listens on 0.0.0.0:8080, port named http")
    check({"TICKFAN_BROKERS", "TICKFAN_TOPIC", "TICKFAN_DRAIN_WINDOW", "TICKFAN_SHUTDOWN_GRACE"} <= set(cm)
          and all(re.fullmatch(r"(TICKFAN|OTEL)_[A-Z0-9_]+", k) for k in cm), f"{label}: ConfigMap carries TICKFAN_* and OTEL_* only")
    env = {e["name"]: e for e in ctr.get("env", [])}
    if v["tracing"]["otlpEndpoint"]:
        check(cm.get("OTEL_EXPORTER_OTLP_ENDPOINT") == v["tracing"]["otlpEndpoint"] and cm.get("OTEL_SERVICE_NAME") == "tickfan-edge"
              and env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
              and "service.instance.id=$(POD_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
              and list(env).index("POD_NAME") < list(env).index("OTEL_RESOURCE_ATTRIBUTES"),
              f"{label}: trace export to tracing.otlpEndpoint, pod name as service.instance.id")
    else:
        check(not any(k.startswith("OTEL_") for k in cm) and not env, f"{label}: no trace export by default")
    check(sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 65532 and sc.get("readOnlyRootFilesystem") is True
          and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]
          and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{label}: hardened securityContext")
    check(ctr["readinessProbe"]["httpGet"]["path"] == "/readyz" and ctr["livenessProbe"]["httpGet"]["path"] == "/healthz",
          f"{label}: readiness /readyz, liveness /healthz")
    ops = "admin" if v["adminPort"] else "http"
    svc_ports = {p["name"]: p for p in by_kind(objs, "Service")[0]["spec"]["ports"]}
    sms = by_kind(objs, "ServiceMonitor")
    if v["adminPort"]:
        check(cm.get("TICKFAN_ADMIN_LISTEN") == f"0.0.0.0:{v['adminPort']}"
              and {"name": "admin", "containerPort": v["adminPort"], "protocol": "TCP"} in ctr["ports"]
              and svc_ports.get("admin", {}).get("targetPort") == "admin",
              f"{label}: admin listener on {v['adminPort']}, port named admin, in the Service")
    else:
        check("TICKFAN_ADMIN_LISTEN" not in cm and "admin" not in svc_ports, f"{label}: no admin listener")
    check(ctr["readinessProbe"]["httpGet"]["port"] == ops and ctr["livenessProbe"]["httpGet"]["port"] == ops
          and all(e["port"] == ops for sm in sms for e in sm["spec"]["endpoints"]),
          f"{label}: probes and ServiceMonitor on port {ops}")
    check(all(p["backend"]["service"]["port"]["name"] == "http"
              for i in by_kind(objs, "Ingress") for r in i["spec"]["rules"] for p in r["http"]["paths"]),
          f"{label}: the Ingress routes to http only")
    lv = ctr["livenessProbe"]
    check(lv["periodSeconds"] * lv["failureThreshold"] >= 20, f"{label}: liveness tolerates >= 20s of failures")
    pre = ctr["lifecycle"]["preStop"]
    pre_s = pre["sleep"]["seconds"] if "sleep" in pre else int(pre["exec"]["command"][1])
    grace = int(cm["TICKFAN_SHUTDOWN_GRACE"].rstrip("s")); drain = int(cm["TICKFAN_DRAIN_WINDOW"].rstrip("s"))
    tgp = pod["terminationGracePeriodSeconds"]
    check(grace > drain and tgp >= pre_s + grace + 5, f"{label}: terminationGracePeriodSeconds {tgp} >= preStop {pre_s} + shutdownGrace {grace} + 5 (drain {drain})")
    ru = dep["spec"]["strategy"]["rollingUpdate"]
    check(dep["spec"]["strategy"]["type"] == "RollingUpdate" and ru["maxUnavailable"] == 0 and ru["maxSurge"] in (1, "25%"),
          f"{label}: RollingUpdate maxUnavailable 0")
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    check("checksum/config" in ann, f"{label}: checksum/config annotation")
    check(pod["automountServiceAccountToken"] is False, f"{label}: no service account token")
    for o in [o for _, o in objs]:
        lab = o["metadata"].get("labels", {})
        if not all(k in lab for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "helm.sh/chart", "app.kubernetes.io/managed-by")):
            check(False, f"{label}: standard labels on {o['kind']}")
    svc = by_kind(objs, "Service")[0]
    check(svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 80 and svc["spec"]["ports"][0]["targetPort"] == "http",
          f"{label}: Service ClusterIP 80 -> http")
    check(len(by_kind(objs, "PodDisruptionBudget")) == 1, f"{label}: PodDisruptionBudget")
    hpas = by_kind(objs, "HorizontalPodAutoscaler")
    if v["autoscaling"]["enabled"]:
        h = hpas[0]["spec"]
        check("replicas" not in dep["spec"] and h["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300,
              f"{label}: HPA owns replicas, scale-down stabilization {h['behavior']['scaleDown']['stabilizationWindowSeconds']}s")
    else:
        check(not hpas and dep["spec"]["replicas"] == v["replicas"], f"{label}: no HPA, replicas {v['replicas']}")
    ing = by_kind(objs, "Ingress")
    check(bool(ing) == v["ingress"]["enabled"], f"{label}: Ingress iff ingress.enabled")
    check(bool(by_kind(objs, "ServiceMonitor")) == v["serviceMonitor"]["enabled"], f"{label}: ServiceMonitor iff serviceMonitor.enabled")
    return dep, pod, ctr, cm, ing

semantics("default", rendered.get("default", []), {}) if "default" in rendered else None
if "production" in rendered:
    dep, pod, ctr, cm, ing = semantics("production", rendered["production"], prod_values)
    check(ing[0]["spec"].get("tls") and ing[0]["metadata"]["annotations"].get("nginx.ingress.kubernetes.io/proxy-read-timeout") == "3600",
          "production: Ingress with TLS and WebSocket timeouts")
    check(cm.get("TICKFAN_JWT_JWKS") == "/etc/tickfan/jwt/jwks.json" and pod["volumes"][0]["secret"]["secretName"] == "tickfan-jwt"
          and not by_kind(rendered["production"], "Secret") and "TICKFAN_TRUSTED_PROXIES" in cm,
          "production: JWKS mounted from existingSecret, no chart Secret, trusted proxies set")

# extra variants
try:
    objs = objects(render({"jwt": {"secret": "x" * 40, "issuer": "me"}, "lifecycle": {"preStop": {"mode": "exec", "seconds": 3}},
                           "terminationGracePeriodSeconds": None, "config": {"TICKFAN_MAX_CONNECTIONS": 5000}}))
    pod = by_kind(objs, "Deployment")[0]["spec"]["template"]["spec"]
    cm = by_kind(objs, "ConfigMap")[0]["data"]
    sec = by_kind(objs, "Secret")
    check(cm["TICKFAN_JWT_SECRET"] == "@/etc/tickfan/jwt/jwt-secret" and sec and "jwt-secret" in sec[0]["data"]
          and "x" * 40 not in yaml.safe_dump(cm) and cm["TICKFAN_MAX_CONNECTIONS"] == "5000"
          and pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "3"]
          and pod["terminationGracePeriodSeconds"] == 3 + 20 + 15,
          "variant: chart Secret as @file, exec preStop, computed grace period 38s")
except helm.HelmError as e:
    check(False, f"variant render: {e}")
try:
    no_admin = {"adminPort": 0, "serviceMonitor": {"enabled": True}, "probes": {"startup": {"enabled": True}}}
    objs = objects(render(no_admin))
    semantics("variant adminPort 0", objs, no_admin)
    ctr = by_kind(objs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    check(ctr["startupProbe"]["httpGet"]["port"] == "http" and [p["name"] for p in ctr["ports"]] == ["http"],
          "variant: adminPort 0 puts probes and metrics on http")
except helm.HelmError as e:
    check(False, f"variant adminPort 0 render: {e}")

try:
    objs = objects(render({"limits": {"writeTimeout": "30s", "maxConnectionsPerIp": 5000}}))
    cm = by_kind(objs, "ConfigMap")[0]["data"]
    check(cm["TICKFAN_WRITE_TIMEOUT"] == "30s" and cm["TICKFAN_MAX_CONNECTIONS_PER_IP"] == "5000"
          and cm["TICKFAN_MAX_UNKNOWN_SYMBOLS"] == "50" and cm["TICKFAN_FD_RESERVE"] == "64"
          and cm["TICKFAN_PACING_PATIENCE"] == "1s",
          "variant: limits reach the ConfigMap as TICKFAN_* (set ones and defaults)")
except helm.HelmError as e:
    check(False, f"variant limits render: {e}")

# ---------------------------------------------------------------- must-fail
print("== bad values must be rejected")
# each case: (values, text the error must contain, so it fails for the right reason)
bad = {
    'replicas: "three" (schema)': ({"replicas": "three"}, "/replicas': got string, want integer"),
    "unknown top-level key (schema)": ({"replica": 3}, "'replica' not allowed"),
    "terminationGracePeriodSeconds 8 < drain window 10 (template fail)": ({"terminationGracePeriodSeconds": 8}, "terminationGracePeriodSeconds (8) must be at least"),
    "terminationGracePeriodSeconds 24 < preStop 5 + grace 20 + 5": ({"terminationGracePeriodSeconds": 24}, "terminationGracePeriodSeconds (24) must be at least"),
    "shutdownGrace <= drainWindow": ({"drain": {"drainWindowSeconds": 20, "shutdownGraceSeconds": 20}}, "must exceed drain.drainWindowSeconds"),
    "config key not TICKFAN_* (schema)": ({"config": {"FOO": "1"}}, "does not match pattern"),
    "config overrides a managed key": ({"config": {"TICKFAN_LISTEN": "0.0.0.0:9"}}, "config.TICKFAN_LISTEN is managed"),
    "config overrides a limit": ({"config": {"TICKFAN_WRITE_TIMEOUT": "5s"}}, "config.TICKFAN_WRITE_TIMEOUT is managed"),
    "limits.writeTimeout without a unit (schema)": ({"limits": {"writeTimeout": "20"}}, "does not match pattern"),
    "jwt.secret shorter than 32 bytes": ({"jwt": {"secret": "short"}}, "/jwt/secret"),
    "jwt.publicKey with jwt.jwks": ({"jwt": {"publicKey": "-----BEGIN PUBLIC KEY-----\nx\n", "jwks": "{}"}}, "mutually exclusive"),
    "existingSecret without keys": ({"jwt": {"existingSecret": "s"}}, "name at least one key"),
    "tracing.otlpEndpoint https (schema)": ({"tracing": {"otlpEndpoint": "https://c:4318"}}, "/tracing/otlpEndpoint"),
    "tracing.rootSample above 1 (schema)": ({"tracing": {"rootSample": 2}}, "/tracing/rootSample"),
    "config overrides the trace root sample": ({"config": {"TICKFAN_TRACE_ROOT_SAMPLE": "1"}}, "config.TICKFAN_TRACE_ROOT_SAMPLE is managed"),
    "adminPort equal to containerPort": ({"adminPort": 8080}, "adminPort (8080) must differ from containerPort"),
    "adminPort privileged (schema)": ({"adminPort": 80}, "/adminPort"),
    "config sets the admin listener": ({"config": {"TICKFAN_ADMIN_LISTEN": "0.0.0.0:9"}}, "config.TICKFAN_ADMIN_LISTEN is managed"),
    "preStop mode bogus (schema)": ({"lifecycle": {"preStop": {"mode": "bogus"}}}, "/lifecycle/preStop/mode"),
}
for what, (vals, expect) in bad.items():
    try:
        render(vals)
        check(False, f"rejected: {what} (it rendered)")
    except helm.HelmError as e:
        msg = " ".join(str(e).split())
        check(expect in msg, f"rejected: {what}" + ("" if expect in msg else f" -- but for another reason: {msg[:200]}"))

# ---------------------------------------------------------------- docs
print("== README values table covers values.yaml")
readme = open(os.path.join(chart_dir, "README.md")).read()
def leaves(d, prefix=""):
    for k, val in d.items():
        key = f"{prefix}{k}"
        if isinstance(val, dict) and val and key not in ("podSecurityContext", "securityContext", "resources"):
            yield from leaves(val, key + ".")
        else:
            yield key
missing = [k for k in leaves(default_values) if f"| `{k}` |" not in readme]
check(not missing, "every value in README.md" + (f" (missing: {', '.join(missing)})" if missing else ""))

print()
print(f"check-helm: {checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
PY
