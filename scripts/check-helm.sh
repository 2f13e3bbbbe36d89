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
chart_meta = load_values("Chart.yaml")
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

def kube_validate(label, objs):
    """kubernetes-validate --strict on every object but the CRDs; returns the CRD objects."""
    files, crds = [], []
    for i, (path, obj) in enumerate(objs):
        if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            crds.append(obj)
            continue
        f = os.path.join(tmp, f"{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}-{i:02d}-{obj['kind']}.yaml")
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
    return crds

for label, objs in rendered.items():
    crds = kube_validate(label, objs)
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
    if not v["image"]["digest"]:
        # The default image is the chart's appVersion, the binary's version
        # (tests/release.rs checks appVersion against Cargo.toml).
        tag = v["image"]["tag"] or chart_meta["appVersion"]
        check(ctr["image"] == f"{v['image']['repository']}:{tag}" and tag == chart_meta["appVersion"] == chart_meta["version"],
              f"{label}: image {ctr['image']}, the chart's version and appVersion")
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
    secret_envs = {"TICKFAN_KAFKA_SASL_PASSWORD", "TICKFAN_KAFKA_KEY_PASSWORD", "TICKFAN_KAFKA_OAUTH_CLIENT_SECRET", "TICKFAN_JWT_SECRET_VALUE",
                   "TICKFAN_SCHEMA_REGISTRY_PASSWORD"}
    check(cm.get("TICKFAN_KAFKA_SECURITY_PROTOCOL") == v["kafka"]["securityProtocol"]
          and not secret_envs & (set(cm) | set(env)) and "secretKeyRef" not in yaml.safe_dump(ctr),
          f"{label}: TICKFAN_KAFKA_SECURITY_PROTOCOL {v['kafka']['securityProtocol']}; no secret value in the ConfigMap or env")
    vols = pod.get("volumes", [])
    mounts = {m["name"]: m for m in ctr.get("volumeMounts", [])}
    check(set(mounts) == {vo["name"] for vo in vols} and all(m.get("readOnly") is True for m in mounts.values())
          and all(set(vo) == {"name", "secret"} or set(vo) == {"name", "projected"} for vo in vols)
          and all((vo.get("secret") or vo.get("projected"))["defaultMode"] == 0o440 for vo in vols),
          f"{label}: volumes ({', '.join(mounts) or 'none'}) are Secrets mounted read-only, mode 0440")
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

def secret_files(pod, ctr, name):
    """Files of volume `name` as {file: (Secret, key)}, and its mountPath (None, None: no such volume)."""
    vo = next((x for x in pod.get("volumes", []) if x["name"] == name), None)
    if vo is None:
        return None, None
    if "secret" in vo:
        srcs = [{"name": vo["secret"]["secretName"], "items": vo["secret"]["items"]}]
    else:
        srcs = [x["secret"] for x in vo["projected"]["sources"]]
    files = {i["path"]: (src["name"], i["key"]) for src in srcs for i in src["items"]}
    return files, next(m["mountPath"] for m in ctr["volumeMounts"] if m["name"] == name)

def kafka_env(cm):
    return {k: v for k, v in cm.items() if k.startswith("TICKFAN_KAFKA")}

def registry_env(cm):
    return {k: v for k, v in cm.items() if k.startswith("TICKFAN_SCHEMA") or k == "TICKFAN_MAPPING"}

if "default" in rendered:
    pod = by_kind(rendered["default"], "Deployment")[0]["spec"]["template"]["spec"]
    cm = by_kind(rendered["default"], "ConfigMap")[0]["data"]
    check(kafka_env(cm) == {"TICKFAN_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"} and not pod.get("volumes"),
          "default: Kafka PLAINTEXT, no Kafka settings or files beyond it")
    check(not registry_env(cm), "default: no Schema Registry, no mappings")
if "production" in rendered:
    pod = by_kind(rendered["production"], "Deployment")[0]["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    cm = by_kind(rendered["production"], "ConfigMap")[0]["data"]
    files, mount = secret_files(pod, ctr, "kafka-tls")
    vo = next((x for x in pod["volumes"] if x["name"] == "kafka-tls"), {})
    check("projected" in vo and mount == "/etc/tickfan/kafka-tls"
          and files == {"ca.crt": ("ticks-kafka-cluster-ca-cert", "ca.crt"), "tls.crt": ("tickfan-edge", "user.crt"), "tls.key": ("tickfan-edge", "user.key")}
          and kafka_env(cm) == {"TICKFAN_KAFKA_SECURITY_PROTOCOL": "SSL", "TICKFAN_KAFKA_CA": "/etc/tickfan/kafka-tls/ca.crt",
                                "TICKFAN_KAFKA_CERT": "/etc/tickfan/kafka-tls/tls.crt", "TICKFAN_KAFKA_KEY": "/etc/tickfan/kafka-tls/tls.key",
                                "TICKFAN_KAFKA": "client.rack=eu-west-1a"},
          "production: Strimzi mutual TLS, cluster CA and KafkaUser cert/key from their two Secrets projected into /etc/tickfan/kafka-tls")

def variant(label, vals):
    """Render, validate and run the common checks; (objs, whole render text, pod, container, ConfigMap data) or None."""
    try:
        manifests = render(vals)
    except helm.HelmError as e:
        check(False, f"{label} render: {e}")
        return None
    objs = objects(manifests)
    kube_validate(label, objs)
    dep, pod, ctr, cm, _ = semantics(label, objs, vals)
    return objs, "\n".join(t for _, t in sorted(manifests.items())), pod, ctr, cm

print("== secured Kafka")
# MSK: SASL_SSL SCRAM-SHA-512, public CA (system CAs), password from an existing Secret.
r = variant("variant MSK SCRAM", {"kafka": {
    "brokers": "b-1.ticks.abc123.c2.kafka.eu-west-1.amazonaws.com:9096,b-2.ticks.abc123.c2.kafka.eu-west-1.amazonaws.com:9096",
    "securityProtocol": "SASL_SSL", "tls": {"caKey": ""},
    "sasl": {"mechanism": "SCRAM-SHA-512", "username": "tickfan-edge", "existingSecret": "msk-scram-tickfan", "passwordKey": "scram-pw"}}})
if r:
    objs, text, pod, ctr, cm = r
    files, mount = secret_files(pod, ctr, "kafka-sasl")
    check(kafka_env(cm) == {"TICKFAN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TICKFAN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                            "TICKFAN_KAFKA_SASL_USERNAME": "tickfan-edge", "TICKFAN_KAFKA_SASL_PASSWORD_FILE": "/etc/tickfan/kafka-sasl/password"}
          and files == {"password": ("msk-scram-tickfan", "scram-pw")} and mount == "/etc/tickfan/kafka-sasl"
          and [vo["name"] for vo in pod["volumes"]] == ["kafka-sasl"],
          "variant MSK SCRAM: SASL settings in the ConfigMap, the password only as a file from the Secret; system CAs (no TICKFAN_KAFKA_CA)")
    # The whole render names the Secret and its key, and has no place a password could be in:
    # no password variable (only *_FILE), no secretKeyRef, no chart Secret. The must-fail cases
    # below show that no value (kafka.sasl.password, kafka.options, config) can carry one either.
    check("msk-scram-tickfan" in text and "scram-pw" in text and not re.search(r"TICKFAN_KAFKA_SASL_PASSWORD(?!_FILE)", text)
          and "secretKeyRef" not in text and not by_kind(objs, "Secret"),
          "variant MSK SCRAM: the render names the Secret and key, never a password variable, secretKeyRef or chart Secret")
# Confluent Cloud: SASL_SSL PLAIN with an API key; tls left at its defaults (no Secret: system CAs).
r = variant("variant Confluent Cloud PLAIN", {"kafka": {
    "brokers": "pkc-41wq6.eu-west-2.aws.confluent.cloud:9092", "securityProtocol": "SASL_SSL",
    "sasl": {"mechanism": "PLAIN", "username": "ABCDEFGH12345678", "existingSecret": "confluent-api-key"}}})
if r:
    objs, text, pod, ctr, cm = r
    files, _ = secret_files(pod, ctr, "kafka-sasl")
    check(files == {"password": ("confluent-api-key", "password")} and "TICKFAN_KAFKA_CA" not in cm
          and cm["TICKFAN_KAFKA_SASL_MECHANISM"] == "PLAIN" and [vo["name"] for vo in pod["volumes"]] == ["kafka-sasl"],
          "variant Confluent Cloud PLAIN: password file from key `password`, system CAs")
# Mutual TLS, everything in one Secret (cert-manager style), encrypted key.
r = variant("variant mTLS", {"kafka": {"securityProtocol": "SSL", "tls": {
    "existingSecret": "kafka-client-tls", "certKey": "tls.crt", "keyKey": "tls.key", "keyPasswordKey": "key-passphrase"}}})
if r:
    objs, text, pod, ctr, cm = r
    files, mount = secret_files(pod, ctr, "kafka-tls")
    check("secret" in pod["volumes"][0] and mount == "/etc/tickfan/kafka-tls"
          and files == {"ca.crt": ("kafka-client-tls", "ca.crt"), "tls.crt": ("kafka-client-tls", "tls.crt"),
                        "tls.key": ("kafka-client-tls", "tls.key"), "key-password": ("kafka-client-tls", "key-passphrase")}
          and kafka_env(cm) == {"TICKFAN_KAFKA_SECURITY_PROTOCOL": "SSL", "TICKFAN_KAFKA_CA": "/etc/tickfan/kafka-tls/ca.crt",
                                "TICKFAN_KAFKA_CERT": "/etc/tickfan/kafka-tls/tls.crt", "TICKFAN_KAFKA_KEY": "/etc/tickfan/kafka-tls/tls.key",
                                "TICKFAN_KAFKA_KEY_PASSWORD_FILE": "/etc/tickfan/kafka-tls/key-password"},
          "variant mTLS: CA, client cert, key and key passphrase from one Secret as files; paths in the ConfigMap")
# OAUTHBEARER (OIDC client credentials) over SASL_SSL with a private CA, plus other librdkafka options.
r = variant("variant OAUTHBEARER", {"kafka": {"securityProtocol": "SASL_SSL",
    "sasl": {"mechanism": "OAUTHBEARER"}, "tls": {"caSecret": "corp-root-ca", "caKey": "root.pem"},
    "oauth": {"tokenEndpoint": "https://id.example.com/realms/kafka/protocol/openid-connect/token", "clientId": "tickfan-edge",
              "existingSecret": "kafka-oidc-client", "scope": "kafka"},
    "options": {"fetch.wait.max.ms": 50, "client.rack": "eu-west-1a", "socket.keepalive.enable": True, "fetch.max.bytes": 52428800}}})
if r:
    objs, text, pod, ctr, cm = r
    oauth_files, oauth_mount = secret_files(pod, ctr, "kafka-oauth")
    ca_files, _ = secret_files(pod, ctr, "kafka-tls")
    check(oauth_files == {"client-secret": ("kafka-oidc-client", "client-secret")} and oauth_mount == "/etc/tickfan/kafka-oauth"
          and ca_files == {"ca.crt": ("corp-root-ca", "root.pem")}
          and kafka_env(cm) == {"TICKFAN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TICKFAN_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
                                "TICKFAN_KAFKA_OAUTH_TOKEN_ENDPOINT": "https://id.example.com/realms/kafka/protocol/openid-connect/token",
                                "TICKFAN_KAFKA_OAUTH_CLIENT_ID": "tickfan-edge", "TICKFAN_KAFKA_OAUTH_SCOPE": "kafka",
                                "TICKFAN_KAFKA_OAUTH_CLIENT_SECRET_FILE": "/etc/tickfan/kafka-oauth/client-secret",
                                "TICKFAN_KAFKA_CA": "/etc/tickfan/kafka-tls/ca.crt",
                                "TICKFAN_KAFKA": "client.rack=eu-west-1a,fetch.max.bytes=52428800,fetch.wait.max.ms=50,socket.keepalive.enable=true"},
          "variant OAUTHBEARER: OIDC settings in the ConfigMap, client secret as a file, CA from tls.caSecret alone, options as TICKFAN_KAFKA")
    check(not re.search(r"TICKFAN_KAFKA_OAUTH_CLIENT_SECRET(?!_FILE)", text) and "secretKeyRef" not in text,
          "variant OAUTHBEARER: no client secret variable, only its file")

print("== Schema Registry and mappings")
QUOTES = "quotes:format=avro,symbol=instrument.ticker,price=px,size=qty,ts=event_time:millis,forward=venue_code|flags"
TRADES = "trades:format=json,symbol=key,price=p,seq=offset"
SR = {"kafka": {"topic": "ticks,quotes,trades"},
      "schemaRegistry": {"url": "https://registry.example.com:8081", "username": "tickfan-edge", "existingSecret": "registry-auth",
                         "passwordKey": "registry-pw", "caSecret": "registry-ca", "caKey": "root.pem", "timeout": "10s"},
      "mappings": [QUOTES, TRADES]}
try:
    rep = helm.lint(chart_dir, SR, strict=True, kube_version="v" + kube_version)
    check(not [m for m in rep["messages"] if m["severity"] >= 2] and not rep["errors"], "lint Schema Registry values: no warnings or errors")
except helm.HelmError as e:
    check(False, f"lint Schema Registry values: {e}")
r = variant("variant Schema Registry", SR)
if r:
    objs, text, pod, ctr, cm = r
    check(registry_env(cm) == {"TICKFAN_SCHEMA_REGISTRY": "https://registry.example.com:8081", "TICKFAN_SCHEMA_REGISTRY_USER": "tickfan-edge",
                               "TICKFAN_SCHEMA_REGISTRY_PASSWORD_FILE": "/etc/tickfan/schema-registry/password",
                               "TICKFAN_SCHEMA_REGISTRY_CA_FILE": "/etc/tickfan/schema-registry-ca/ca.crt",
                               "TICKFAN_SCHEMA_REGISTRY_TIMEOUT": "10s", "TICKFAN_MAPPING": QUOTES + ";" + TRADES}
          and cm["TICKFAN_TOPIC"] == "ticks,quotes,trades" and kafka_env(cm) == {"TICKFAN_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
          "variant Schema Registry: URL, user, timeout, password and CA file paths, mappings joined with ';' in the ConfigMap")
    cm_obj = next(o for o in by_kind(objs, "ConfigMap") if "TICKFAN_SCHEMA_REGISTRY" in o["data"])
    check([e["configMapRef"]["name"] for e in ctr["envFrom"]] == [cm_obj["metadata"]["name"]]
          and "checksum/config" in by_kind(objs, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"],
          "variant Schema Registry: the settings are in the ConfigMap the container takes its env from, the one checksum/config covers")
    pw_files, pw_mount = secret_files(pod, ctr, "schema-registry")
    ca_files, ca_mount = secret_files(pod, ctr, "schema-registry-ca")
    vols = {vo["name"]: vo for vo in pod["volumes"]}
    mounts = {m["name"]: m for m in ctr["volumeMounts"]}
    check(pw_files == {"password": ("registry-auth", "registry-pw")} and pw_mount == "/etc/tickfan/schema-registry"
          and ca_files == {"ca.crt": ("registry-ca", "root.pem")} and ca_mount == "/etc/tickfan/schema-registry-ca"
          and list(vols) == ["schema-registry", "schema-registry-ca"] and list(mounts) == list(vols)
          and all(set(vo) == {"name", "secret"} and vo["secret"]["defaultMode"] == 0o440 for vo in vols.values())
          and all(m.get("readOnly") is True for m in mounts.values()),
          "variant Schema Registry: password (key registry-pw) at /etc/tickfan/schema-registry/password, CA (key root.pem) at "
          "/etc/tickfan/schema-registry-ca/ca.crt, Secret volumes mode 0440 mounted read-only")
    check("registry-auth" in text and not re.search(r"TICKFAN_SCHEMA_REGISTRY_PASSWORD(?!_FILE)", text)
          and "secretKeyRef" not in text and not by_kind(objs, "Secret"),
          "variant Schema Registry: the render names the Secret, never a password variable, secretKeyRef or chart Secret")
# Together with Kafka's files (mutual TLS + SCRAM): both sets of volumes, no clash.
r = variant("variant Schema Registry + Kafka SASL_SSL", deep_merge(SR, {"kafka": {"securityProtocol": "SASL_SSL",
    "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "existingSecret": "kafka-scram"}, "tls": {"caSecret": "kafka-ca"}}}))
if r:
    objs, text, pod, ctr, cm = r
    check([vo["name"] for vo in pod["volumes"]] == ["kafka-tls", "kafka-sasl", "schema-registry", "schema-registry-ca"]
          and cm["TICKFAN_KAFKA_CA"] == "/etc/tickfan/kafka-tls/ca.crt" and cm["TICKFAN_SCHEMA_REGISTRY_CA_FILE"] == "/etc/tickfan/schema-registry-ca/ca.crt"
          and cm["TICKFAN_KAFKA_SASL_PASSWORD_FILE"] == "/etc/tickfan/kafka-sasl/password"
          and cm["TICKFAN_SCHEMA_REGISTRY_PASSWORD_FILE"] == "/etc/tickfan/schema-registry/password",
          "variant Schema Registry + Kafka SASL_SSL: Kafka and registry files side by side, each with its own path")
# Plain http (Apicurio ccompat), no auth, no CA, default timeout: only the URL and the mapping.
r = variant("variant Apicurio", {"schemaRegistry": {"url": "http://apicurio:8080/apis/ccompat/v7"},
                                 "mappings": ["ticks:format=avro,symbol=sym,price=px"]})
if r:
    objs, text, pod, ctr, cm = r
    check(registry_env(cm) == {"TICKFAN_SCHEMA_REGISTRY": "http://apicurio:8080/apis/ccompat/v7",
                               "TICKFAN_MAPPING": "ticks:format=avro,symbol=sym,price=px"} and not pod.get("volumes"),
          "variant Apicurio: http URL and one mapping only; no user, timeout, password or CA, no volumes")
# Pods roll: the settings in the ConfigMap change checksum/config; the Secrets' names and keys change the
# pod template's volumes themselves.
def pod_template(vals):
    return by_kind(objects(render(vals)), "Deployment")[0]["spec"]["template"]
try:
    base = pod_template(SR)
    in_cm = {what: pod_template(deep_merge(SR, over))["metadata"]["annotations"]["checksum/config"] != base["metadata"]["annotations"]["checksum/config"]
             for what, over in [
                 ("url", {"schemaRegistry": {"url": "https://registry-2.example.com:8081"}}),
                 ("username", {"schemaRegistry": {"username": "other"}}),
                 ("timeout", {"schemaRegistry": {"timeout": "30s"}}),
                 ("caSecret removed", {"schemaRegistry": {"caSecret": ""}}),
                 ("mappings", {"mappings": [QUOTES, TRADES.replace("seq=offset", "seq=trade_seq")]})]}
    in_spec = {what: pod_template(deep_merge(SR, over))["spec"] != base["spec"] for what, over in [
                 ("existingSecret", {"schemaRegistry": {"existingSecret": "registry-auth-2"}}),
                 ("passwordKey", {"schemaRegistry": {"passwordKey": "pw2"}}),
                 ("caSecret", {"schemaRegistry": {"caSecret": "registry-ca-2"}}),
                 ("caKey", {"schemaRegistry": {"caKey": "ca.pem"}})]}
    same = pod_template(copy.deepcopy(SR)) == base
    unchanged = [k for k, c in {**in_cm, **in_spec}.items() if not c]
    check(not unchanged and same,
          "Schema Registry: pods roll on every change: url, username, timeout, CA on/off and mappings change checksum/config; "
          "the Secrets' names and keys change the pod's volumes; an identical render changes nothing"
          + (f" (no roll on: {unchanged})" if unchanged else "") + ("" if same else " (identical values gave another pod template)"))
except helm.HelmError as e:
    check(False, f"Schema Registry roll renders: {e}")
# format=avro with the registry URL in configFile rather than in values: accepted.
try:
    objs = objects(render({"configFile": 'schema-registry = "http://apicurio:8080/apis/ccompat/v7"\n',
                           "mappings": ["ticks:format=avro,symbol=sym,price=px"]}))
    cm = by_kind(objs, "ConfigMap")[0]["data"]
    check(cm["TICKFAN_MAPPING"] == "ticks:format=avro,symbol=sym,price=px" and "TICKFAN_SCHEMA_REGISTRY" not in cm,
          "variant: a format=avro mapping with the registry URL from configFile renders")
except helm.HelmError as e:
    check(False, f"variant format=avro with configFile registry: {e}")

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
          and cm["TICKFAN_PACING_PATIENCE"] == "1s" and cm["TICKFAN_MAX_SUBSCRIPTIONS"] == "1000000",
          "variant: limits reach the ConfigMap as TICKFAN_* (set ones and defaults; 1000000, not 1e+06)")
except helm.HelmError as e:
    check(False, f"variant limits render: {e}")

try:
    cm = by_kind(objects(render({"kafka": {"options": {"debug": "broker,fetch", "client.rack": "eu-west-1a"}}})),
                 "ConfigMap")[0]["data"]
    check(cm.get("TICKFAN_KAFKA") == "client.rack=eu-west-1a,debug=broker,fetch",
          "variant: a kafka.options value with commas reaches TICKFAN_KAFKA whole (the edge splits only before key=)")
except helm.HelmError as e:
    check(False, f"variant kafka.options with commas render: {e}")

try:
    cm = by_kind(objects(render({})), "ConfigMap")[0]["data"]
    check(cm.get("TICKFAN_RESUME_MEMORY") == "67108864" and cm.get("TICKFAN_RESUME_WINDOW") == "5m"
          and cm.get("TICKFAN_RESUME_MAX_TICKS") == "5000" and cm.get("TICKFAN_DIRECTORY_INTERVAL") == "60s"
          and cm.get("TICKFAN_DIRECTORY_SAMPLE") == "2000" and cm.get("TICKFAN_DIRECTORY_MAX") == "100000",
          "default: resume and directory values are the binary's defaults")
    cm = by_kind(objects(render({"resume": {"memoryBytes": 0, "window": "90s"}, "directory": {"sample": 0}})),
                 "ConfigMap")[0]["data"]
    check(cm.get("TICKFAN_RESUME_MEMORY") == "0" and cm.get("TICKFAN_RESUME_WINDOW") == "90s"
          and cm.get("TICKFAN_DIRECTORY_SAMPLE") == "0" and cm.get("TICKFAN_RESUME_MAX_TICKS") == "5000",
          "variant: resume.* and directory.* reach the ConfigMap (0 kept, not dropped)")
except helm.HelmError as e:
    check(False, f"variant resume/directory render: {e}")

try:
    cm = by_kind(objects(render({})), "ConfigMap")[0]["data"]
    check("TICKFAN_PERMESSAGE_DEFLATE" not in cm and "TICKFAN_DEFLATE_MIN_BYTES" not in cm,
          "default: permessage-deflate left to the binary (off)")
    cm = by_kind(objects(render({"permessageDeflate": {"enabled": True}})), "ConfigMap")[0]["data"]
    check(cm.get("TICKFAN_PERMESSAGE_DEFLATE") == "true" and cm.get("TICKFAN_DEFLATE_MIN_BYTES") == "256",
          "variant: permessageDeflate.enabled renders TICKFAN_PERMESSAGE_DEFLATE and the 256-byte threshold")
    cm = by_kind(objects(render({"permessageDeflate": {"enabled": True, "minBytes": 1024}})), "ConfigMap")[0]["data"]
    check(cm.get("TICKFAN_DEFLATE_MIN_BYTES") == "1024", "variant: permessageDeflate.minBytes reaches the ConfigMap")
except helm.HelmError as e:
    check(False, f"variant permessageDeflate render: {e}")

try:
    objs = objects(render({"configFile": 'release-linger = "60s"\nmax-connections = 20000\n'}))
    cms = {o["metadata"]["name"]: o["data"] for o in by_kind(objs, "ConfigMap")}
    dep = by_kind(objs, "Deployment")[0]
    pod = dep["spec"]["template"]
    c0 = pod["spec"]["containers"][0]
    vols = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    check(cms["tf-tickfan"]["TICKFAN_CONFIG"] == "/etc/tickfan/config/tickfan.toml"
          and cms["tf-tickfan-settings"]["tickfan.toml"].startswith('release-linger = "60s"\nmax-connections = 20000')
          and vols["settings"]["configMap"]["name"] == "tf-tickfan-settings"
          and any(m["name"] == "settings" and m["mountPath"] == "/etc/tickfan/config" and m.get("readOnly")
                  for m in c0.get("volumeMounts", []))
          and "checksum/settings" in pod["metadata"]["annotations"],
          "variant: configFile is its own ConfigMap, mounted read-only, named by TICKFAN_CONFIG, rolled on change")
    objs = objects(render({}))
    check(not any(o["metadata"]["name"].endswith("-settings") for o in by_kind(objs, "ConfigMap"))
          and "TICKFAN_CONFIG" not in by_kind(objs, "ConfigMap")[0]["data"],
          "default: no settings file, no TICKFAN_CONFIG")
except helm.HelmError as e:
    check(False, f"variant configFile render: {e}")

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
    "config sets the resume memory (use resume.memoryBytes)": ({"config": {"TICKFAN_RESUME_MEMORY": "0"}}, "config.TICKFAN_RESUME_MEMORY is managed"),
    "config sets the directory sample (use directory.sample)": ({"config": {"TICKFAN_DIRECTORY_SAMPLE": "0"}}, "config.TICKFAN_DIRECTORY_SAMPLE is managed"),
    "resume.window not a duration": ({"resume": {"window": "five minutes"}}, "window"),
    "configFile sets what a value passes (resume.memoryBytes)": ({"configFile": "resume-memory = 0\n"},
        "configFile sets resume-memory, but the chart passes TICKFAN_RESUME_MEMORY"),
    "configFile sets a limit": ({"configFile": "release-linger = \"60s\"\n  write-timeout = \"30s\"\n"},
        "configFile sets write-timeout, but the chart passes TICKFAN_WRITE_TIMEOUT"),
    "configFile sets what config passes": ({"config": {"TICKFAN_MAX_CONNECTIONS": "5000"}, "configFile": "max-connections = 9000\n"},
        "configFile sets max-connections, but the chart passes TICKFAN_MAX_CONNECTIONS"),
    "config enables permessage-deflate (use permessageDeflate)": ({"config": {"TICKFAN_PERMESSAGE_DEFLATE": "true"}}, "config.TICKFAN_PERMESSAGE_DEFLATE is managed"),
    "permessageDeflate with an unknown key": ({"permessageDeflate": {"enable": True}}, "enable"),
    "config sets TICKFAN_CONFIG (use configFile)": ({"config": {"TICKFAN_CONFIG": "/x.toml"}}, "config.TICKFAN_CONFIG is managed"),
    "configFile not a string (schema)": ({"configFile": {"release-linger": "60s"}}, "/configFile"),
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
    # Kafka security
    "kafka.securityProtocol bogus (schema)": ({"kafka": {"securityProtocol": "TLS"}}, "/kafka/securityProtocol"),
    "kafka.sasl.mechanism GSSAPI (schema)": ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "GSSAPI"}}}, "/kafka/sasl/mechanism"),
    "SASL_SSL without sasl.mechanism": ({"kafka": {"securityProtocol": "SASL_SSL"}}, "kafka.securityProtocol is SASL_SSL: set kafka.sasl.mechanism"),
    "SASL_PLAINTEXT without sasl.mechanism": ({"kafka": {"securityProtocol": "SASL_PLAINTEXT"}}, "kafka.securityProtocol is SASL_PLAINTEXT: set kafka.sasl.mechanism"),
    "sasl.mechanism with PLAINTEXT": ({"kafka": {"sasl": {"mechanism": "PLAIN", "username": "u", "existingSecret": "s"}}},
                                      "kafka.sasl.mechanism is PLAIN but kafka.securityProtocol is PLAINTEXT"),
    "sasl.mechanism with SSL": ({"kafka": {"securityProtocol": "SSL", "sasl": {"mechanism": "SCRAM-SHA-256", "username": "u", "existingSecret": "s"}}},
                                "kafka.sasl.mechanism is SCRAM-SHA-256 but kafka.securityProtocol is SSL"),
    "SCRAM without sasl.username": ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512", "existingSecret": "s"}}},
                                    "kafka.sasl.mechanism SCRAM-SHA-512 needs kafka.sasl.username"),
    "PLAIN without sasl.existingSecret": ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN", "username": "u"}}},
                                          "kafka.sasl.mechanism PLAIN needs kafka.sasl.existingSecret"),
    "sasl.username without a PLAIN/SCRAM mechanism": ({"kafka": {"sasl": {"username": "u"}}}, "kafka.sasl.username and kafka.sasl.existingSecret are for"),
    "OAUTHBEARER without oauth.tokenEndpoint": ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "OAUTHBEARER"},
                                                           "oauth": {"clientId": "c", "existingSecret": "s"}}},
                                                "kafka.sasl.mechanism OAUTHBEARER needs kafka.oauth.tokenEndpoint"),
    "OAUTHBEARER without oauth.clientId": ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "OAUTHBEARER"},
                                                      "oauth": {"tokenEndpoint": "https://id/token", "existingSecret": "s"}}},
                                           "kafka.sasl.mechanism OAUTHBEARER needs kafka.oauth.clientId"),
    "OAUTHBEARER without oauth.existingSecret": ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "OAUTHBEARER"},
                                                            "oauth": {"tokenEndpoint": "https://id/token", "clientId": "c"}}},
                                                 "kafka.sasl.mechanism OAUTHBEARER needs kafka.oauth.existingSecret"),
    "OAUTHBEARER with sasl.username": ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "OAUTHBEARER", "username": "u"},
                                                  "oauth": {"tokenEndpoint": "https://id/token", "clientId": "c", "existingSecret": "s"}}},
                                       "kafka.sasl.username and kafka.sasl.existingSecret are for kafka.sasl.mechanism PLAIN or SCRAM-SHA-256/512 (it is OAUTHBEARER)"),
    "oauth.* with SCRAM": ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "existingSecret": "s"},
                                      "oauth": {"clientId": "c"}}}, "kafka.oauth.* is for kafka.sasl.mechanism OAUTHBEARER (it is SCRAM-SHA-512)"),
    "oauth.tokenEndpoint not a URL (schema)": ({"kafka": {"oauth": {"tokenEndpoint": "id.example.com/token"}}}, "/kafka/oauth/tokenEndpoint"),
    "tls.certKey without tls.keyKey": ({"kafka": {"securityProtocol": "SSL", "tls": {"existingSecret": "t", "certKey": "tls.crt"}}},
                                       "kafka.tls.certKey is set without kafka.tls.keyKey"),
    "tls.keyKey without tls.certKey": ({"kafka": {"securityProtocol": "SSL", "tls": {"existingSecret": "t", "keyKey": "tls.key"}}},
                                       "kafka.tls.keyKey is set without kafka.tls.certKey"),
    "tls.keyPasswordKey without a client key": ({"kafka": {"securityProtocol": "SSL", "tls": {"existingSecret": "t", "keyPasswordKey": "pw"}}},
                                                "kafka.tls.keyPasswordKey is the passphrase of the client key"),
    "tls.certKey/keyKey without tls.existingSecret": ({"kafka": {"securityProtocol": "SSL", "tls": {"certKey": "tls.crt", "keyKey": "tls.key"}}},
                                                      "kafka.tls.certKey/keyKey name keys of kafka.tls.existingSecret"),
    "tls.caKey (non-default) without a Secret": ({"kafka": {"securityProtocol": "SSL", "tls": {"caKey": "root.pem"}}},
                                                 "kafka.tls.caKey (root.pem) names a key of kafka.tls.caSecret or kafka.tls.existingSecret"),
    "tls.caSecret with an empty caKey": ({"kafka": {"securityProtocol": "SSL", "tls": {"caSecret": "ca", "caKey": ""}}},
                                         "kafka.tls.caSecret is set but kafka.tls.caKey is empty"),
    "tls.existingSecret with PLAINTEXT": ({"kafka": {"tls": {"existingSecret": "t"}}},
                                          "kafka.tls.existingSecret/caSecret are set but kafka.securityProtocol is PLAINTEXT"),
    "tls.caSecret with SASL_PLAINTEXT": ({"kafka": {"securityProtocol": "SASL_PLAINTEXT", "tls": {"caSecret": "ca"},
                                                    "sasl": {"mechanism": "PLAIN", "username": "u", "existingSecret": "s"}}},
                                         "kafka.tls.existingSecret/caSecret are set but kafka.securityProtocol is SASL_PLAINTEXT"),
    "tls.existingSecret not a Secret name (schema)": ({"kafka": {"tls": {"existingSecret": "Kafka_TLS"}}}, "/kafka/tls/existingSecret"),
    "kafka.sasl.password: no value takes a password (schema)": ({"kafka": {"sasl": {"password": "hunter2"}}}, "'password' not allowed"),
    "kafka.options value with a comma and key= (schema)": ({"kafka": {"options": {"client.id": "edge,rack=a"}}}, "/kafka/options/client.id"),
    "kafka.options key not a librdkafka name (schema)": ({"kafka": {"options": {"Fetch.Wait.Max.Ms": "50"}}}, "invalid propertyName 'Fetch.Wait.Max.Ms'"),
    "config.TICKFAN_KAFKA (use kafka.options)": ({"config": {"TICKFAN_KAFKA": "client.rack=a"}}, "config.TICKFAN_KAFKA is managed by the chart's kafka.* values"),
    "config.TICKFAN_KAFKA_SASL_PASSWORD": ({"config": {"TICKFAN_KAFKA_SASL_PASSWORD": "hunter2"}}, "config.TICKFAN_KAFKA_SASL_PASSWORD is managed by the chart's kafka.* values"),
    "config.TICKFAN_KAFKA_OAUTH_CLIENT_SECRET": ({"config": {"TICKFAN_KAFKA_OAUTH_CLIENT_SECRET": "x"}}, "config.TICKFAN_KAFKA_OAUTH_CLIENT_SECRET is managed"),
    "config.TICKFAN_KAFKA_SECURITY_PROTOCOL": ({"config": {"TICKFAN_KAFKA_SECURITY_PROTOCOL": "SSL"}}, "config.TICKFAN_KAFKA_SECURITY_PROTOCOL is managed"),
    # Schema Registry and mappings
    "schemaRegistry.username without existingSecret": ({"schemaRegistry": {"url": "https://r:8081", "username": "u"}},
                                                       "schemaRegistry.username is set without schemaRegistry.existingSecret"),
    "schemaRegistry.existingSecret without username": ({"schemaRegistry": {"url": "https://r:8081", "existingSecret": "s"}},
                                                       "schemaRegistry.existingSecret is set without schemaRegistry.username"),
    "schemaRegistry.url without a scheme": ({"schemaRegistry": {"url": "registry:8081"}},
                                            "schemaRegistry.url (registry:8081) must be an http:// or https:// URL"),
    "schemaRegistry.url ftp://": ({"schemaRegistry": {"url": "ftp://registry/"}}, "schemaRegistry.url (ftp://registry/) must be an http:// or https:// URL"),
    "schemaRegistry.url HTTPS:// (the binary is case-sensitive)": ({"schemaRegistry": {"url": "HTTPS://registry:8081"}},
                                                                   "must be an http:// or https:// URL"),
    "mapping without ':'": ({"mappings": ["quotes format=json,symbol=key,price=p"]},
                            'mappings: "quotes format=json,symbol=key,price=p" is not TOPIC:key=value,... (no \':\')'),
    "second mapping without ':'": ({"mappings": ["ticks:format=json,symbol=key,price=p", "ticks"]}, 'mappings: "ticks" is not TOPIC:key=value'),
    "mapping with ';'": ({"mappings": ["ticks:format=json,symbol=key,price=p;ticks:format=tickfan"]}, "contains ';', which separates mappings"),
    "mapping of a topic not in kafka.topic": ({"mappings": ["quotes:format=json,symbol=key,price=p"]},
                                              'maps topic "quotes", which is not one of kafka.topic (ticks)'),
    "topic mapped twice": ({"mappings": ["ticks:format=json,symbol=key,price=p", " ticks :format=tickfan"]}, 'mappings: topic "ticks" is mapped twice'),
    "format=avro mapping without a registry": ({"mappings": ["ticks:symbol=sym,format = avro,price=px"]},
                                               "is format=avro, which needs a Schema Registry: set schemaRegistry.url"),
    "registry settings without url": ({"schemaRegistry": {"caSecret": "ca", "timeout": "3s"}},
                                      "schemaRegistry.caSecret, schemaRegistry.timeout set but schemaRegistry.url is empty"),
    "schemaRegistry user and Secret without url": ({"schemaRegistry": {"username": "u", "existingSecret": "s"}},
                                                   "schemaRegistry.username, schemaRegistry.existingSecret set but schemaRegistry.url is empty"),
    "schemaRegistry.caSecret with an http:// url": ({"schemaRegistry": {"url": "http://r:8081", "caSecret": "ca"}},
                                                    "schemaRegistry.caSecret is set but schemaRegistry.url (http://r:8081) is http://"),
    "schemaRegistry.caSecret with an empty caKey": ({"schemaRegistry": {"url": "https://r:8081", "caSecret": "ca", "caKey": ""}},
                                                    "schemaRegistry.caSecret is set but schemaRegistry.caKey is empty"),
    "mappings and configFile [mapping.X]": ({"mappings": ["ticks:format=json,symbol=key,price=p"],
                                             "configFile": 'release-linger = "60s"\n\n[mapping.ticks]\nformat = "json"\n'},
                                            "mappings and configFile both give mappings"),
    "mappings and configFile mapping = [...]": ({"mappings": ["ticks:format=json,symbol=key,price=p"],
                                                 "configFile": 'mapping = ["ticks:format=tickfan"]\n'}, "mappings and configFile both give mappings"),
    "config.TICKFAN_SCHEMA_REGISTRY_PASSWORD": ({"config": {"TICKFAN_SCHEMA_REGISTRY_PASSWORD": "hunter2"}},
                                                "config.TICKFAN_SCHEMA_REGISTRY_PASSWORD is managed by the chart's schemaRegistry.* and mappings values"),
    "config.TICKFAN_SCHEMA_REGISTRY (use schemaRegistry.url)": ({"config": {"TICKFAN_SCHEMA_REGISTRY": "http://r"}},
                                                                "config.TICKFAN_SCHEMA_REGISTRY is managed"),
    "config.TICKFAN_MAPPING (use mappings)": ({"config": {"TICKFAN_MAPPING": "ticks:format=tickfan"}}, "config.TICKFAN_MAPPING is managed"),
    "schemaRegistry.password: no value takes a password (schema)": ({"schemaRegistry": {"password": "hunter2"}}, "'password' not allowed"),
    "schemaRegistry.existingSecret not a Secret name (schema)": ({"schemaRegistry": {"url": "https://r", "username": "u", "existingSecret": "Reg_Auth"}},
                                                                 "/schemaRegistry/existingSecret"),
    "schemaRegistry.timeout without a unit (schema)": ({"schemaRegistry": {"url": "https://r", "timeout": "10"}}, "/schemaRegistry/timeout"),
    "mappings not a list (schema)": ({"mappings": "ticks:format=json"}, "/mappings"),
}
# kafka.options: every secret key, and every key the chart sets.
for key in ["sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret", "ssl.keystore.password", "ssl.key.pem",
            "ssl.certificate.pem", "sasl.oauthbearer.config", "sasl.jaas.config"]:
    bad[f"kafka.options.{key} (secret)"] = ({"kafka": {"options": {key: "x"}}}, f"kafka.options.{key} is a secret")
for key in ["security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "ssl.ca.location", "ssl.certificate.location",
            "ssl.key.location", "bootstrap.servers", "sasl.oauthbearer.token.endpoint.url", "sasl.oauthbearer.scope"]:
    bad[f"kafka.options.{key} (set by the chart)"] = ({"kafka": {"options": {key: "x"}}}, f"kafka.options.{key} is set by the chart")
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

print("== the chart's defaults are the edge's documented defaults")
# docs/configuration.md's `tickfan edge` table (whose defaults a unit test of
# the binary checks against clap): every TICKFAN_* the chart renders by
# default with the same single value, except where the chart chooses its own
# on purpose (listed).
conf = open(os.path.join(chart_dir, "..", "..", "docs", "configuration.md")).read()
edge_doc = conf[conf.index("## `tickfan edge`"):]
edge_doc = edge_doc[:edge_doc.index("\n## ", 1)]
documented = {}
for row in edge_doc.splitlines():
    m = re.match(r"\| `--[\w-]+` \| `(TICKFAN_[A-Z0-9_]+)` \| `([^`]*)` \|", row)
    if m:
        documented[m.group(1)] = m.group(2)
# The chart's own: a Service name, not the binary's localhost.
chart_choices = {"TICKFAN_BROKERS"}
cm = by_kind(objects(render({})), "ConfigMap")[0]["data"]
compared = [k for k in cm if k in documented and k not in chart_choices]
differ = [f"{k}={cm[k]} (documented {documented[k]})" for k in compared if cm[k] != documented[k]]
check(len(compared) >= 20 and not differ,
      f"{len(compared)} rendered defaults equal the documented ones" + (f"; differ: {', '.join(differ)}" if differ else ""))

print("== the packaged chart carries the project's license")
repo_license = open(os.path.join(chart_dir, "..", "..", "LICENSE")).read()
chart_license = os.path.join(chart_dir, "LICENSE")
check(os.path.exists(chart_license) and open(chart_license).read() == repo_license,
      "helm/tickfan/LICENSE is the repository's LICENSE (helm package ships the chart directory)")

print()
print(f"check-helm: {checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
PY
