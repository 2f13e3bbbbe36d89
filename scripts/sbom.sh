#!/usr/bin/env bash
# A software bill of materials (CycloneDX 1.5 JSON) of the tickfan binary as
# the Dockerfile builds it (default features, this machine's target):
#
#   scripts/sbom.sh            -> target/sbom/tickfan.cdx.json
#
# Installs cargo-cyclonedx (pinned in scripts/cargo-tool.sh) if it is missing.
# Needs the crates of Cargo.lock (any cargo build fetches them), no build.
#
# It lists Rust crates. The C libraries compiled from source into the binary
# appear only as the -sys crates that bundle them: rdkafka-sys (librdkafka,
# and through its features openssl-sys/openssl-src for OpenSSL, libz-sys for
# zlib, zstd-sys for zstd, curl-sys for libcurl) and tikv-jemalloc-sys
# (jemalloc). The script gives those crates the licenses of their C code
# (deny.toml's clarifications), checks they are there and prints them with
# the versions of the C sources they carry (after the + of the crate
# version). The README's "Supply chain" section says so.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
OUT="${TICKFAN_SBOM_DIR:-$ROOT/target/sbom}"

scripts/cargo-tool.sh cargo-cyclonedx

mkdir -p "$OUT"
# cargo-cyclonedx writes beside Cargo.toml (tickfan.sbom.cdx.json here); the
# file is then moved into $OUT. Dev-dependencies are left out; build
# dependencies are listed with scope "excluded" (openssl-src among them,
# though the OpenSSL it compiles is linked in).
rm -f tickfan.sbom.cdx.json
cargo cyclonedx --format json --spec-version 1.5 \
  --target "$(rustc -vV | sed -n 's/^host: //p')" --override-filename tickfan.sbom.cdx
mv -f tickfan.sbom.cdx.json "$OUT/tickfan.cdx.json"

# The -sys crates declare the license of their Rust code only; deny.toml's
# clarifications (kept current by scripts/check-deps.sh in CI) add the
# licenses of the C code they compile in. The SBOM gets those, marked with a
# property saying where they come from.
python3 - "$OUT/tickfan.cdx.json" <<'PY'
import json, sys, tomllib
path = sys.argv[1]
bom = json.load(open(path))
comps = {c["name"]: c for c in bom.get("components", [])}
for c in tomllib.load(open("deny.toml", "rb"))["licenses"].get("clarify", []):
    comp = comps.get(c["crate"].split("@")[0])
    if comp is not None:
        comp["licenses"] = [{"expression": c["expression"]}]
        comp.setdefault("properties", []).append(
            {"name": "tickfan:licenses", "value": "deny.toml clarification: the crate's own and those of the C sources it compiles"})
json.dump(bom, open(path, "w"), indent=2)
need = ["rdkafka-sys", "openssl-src", "libz-sys", "zstd-sys", "curl-sys", "tikv-jemalloc-sys"]
missing = [n for n in need if n not in comps]
if missing:
    sys.exit(f"sbom: {path} lacks {', '.join(missing)}")
print(f"sbom: {path}: {len(bom['components'])} components (CycloneDX {bom['specVersion']})")
print("sbom: C libraries compiled from source, through these crates:")
for n in need:
    lic = " OR ".join(l.get("expression", "?") for l in comps[n].get("licenses", []))
    print(f"  {n} {comps[n].get('version', '?')}: {lic}")
PY
