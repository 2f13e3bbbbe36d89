#!/usr/bin/env bash
# The dependency checks CI runs (.ci/run), with cargo-deny and deny.toml:
#
#   scripts/check-deps.sh
#
# 1. licenses: every crate the binary links (default features, Linux targets,
#    no dev-dependencies) under licenses of deny.toml's allow-list, the C
#    code of the -sys crates included through its clarifications;
#    bans: no second version of the heavy crates deny.toml names (other
#    duplicates are printed as warnings); sources: crates.io only.
# 2. The clarifications still apply. cargo-deny uses a clarification only
#    while the license file it pins is unchanged, and otherwise falls back,
#    silently, to the crate's own license field (librdkafka's BSD-2-Clause
#    would then disappear behind rdkafka-sys's MIT). This step fails when a
#    clarified crate no longer carries its clarified licenses.
#
# Needs no network once the crates of Cargo.lock are downloaded (any cargo
# build or `cargo fetch` does that); else cargo fetches the missing ones from
# crates.io. The advisory check is scripts/audit.sh (it needs GitHub).
# Installs cargo-deny (pinned in scripts/cargo-tool.sh) if it is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

scripts/cargo-tool.sh cargo-deny

echo "check-deps: cargo deny check licenses bans sources"
# --hide-inclusion-graph: a duplicate is one line each; `cargo deny check
# bans` shows which dependencies pull its versions in.
cargo deny --locked check --hide-inclusion-graph licenses bans sources

echo "check-deps: deny.toml's clarifications apply"
# Each accepted crate is a diagnostic (at -L debug) whose first label is the
# expression used: a clarification's own text only while it applies.
cargo deny -L debug --locked --format json check licenses 2>&1 \
  | python3 -c '
import glob, json, os, sys, tomllib

def xxh32(b, seed=0):
    """cargo-deny hashes a license file with XXH32, seed 0 (see hash_of)."""
    P1, P2, P3, P4, P5, M = 2654435761, 2246822519, 3266489917, 668265263, 374761393, 0xFFFFFFFF
    rotl = lambda x, r: ((x << r) | (x >> (32 - r))) & M
    n, i = len(b), 0
    if n >= 16:
        v = [(seed + P1 + P2) & M, (seed + P2) & M, seed, (seed - P1) & M]
        while i + 16 <= n:
            for k in range(4):
                lane = int.from_bytes(b[i + 4 * k:i + 4 * k + 4], "little")
                v[k] = (rotl((v[k] + lane * P2) & M, 13) * P1) & M
            i += 16
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M
    else:
        h = (seed + P5) & M
    h = (h + n) & M
    while i + 4 <= n:
        h = (rotl((h + int.from_bytes(b[i:i + 4], "little") * P3) & M, 17) * P4) & M
        i += 4
    while i < n:
        h = (rotl((h + b[i] * P5) & M, 11) * P1) & M
        i += 1
    h ^= h >> 15; h = (h * P2) & M; h ^= h >> 13; h = (h * P3) & M; h ^= h >> 16
    return h

def hash_of(name, version, path):
    """The hash deny.toml would need for a crate source file: lines without
    their CR/LF, each ending in LF (cargo-deny licenses/gather.rs)."""
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    for f in glob.glob(os.path.join(home, "registry/src/*", f"{name}-{version}", path)):
        lines = open(f, "rb").read().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        return "0x%08x" % xxh32(b"".join(l.rstrip(b"\r\n") + b"\n" for l in lines))
    return "?"

used = {}
for line in sys.stdin:
    try:
        d = json.loads(line)
    except ValueError:
        continue
    f = d.get("fields", {})
    if d.get("type") == "diagnostic" and f.get("graphs") and f.get("labels"):
        k = f["graphs"][0]["Krate"]
        used.setdefault(k["name"], []).append((k["version"], f["labels"][0]["span"]))
cfg = tomllib.load(open("deny.toml", "rb"))
failed = 0
for c in cfg["licenses"].get("clarify", []):
    name, expr = c["crate"].split("@")[0], c["expression"]
    if name not in used:
        print(f"  FAIL {name}: clarified in deny.toml but not in the graph (remove the clarification)")
        failed += 1
    for version, span in used.get(name, []):
        if span == expr:
            print(f"  ok   {name} {version}: {expr}")
        else:
            paths = [lf["path"] for lf in c["license-files"]]
            now = ", ".join(p + " now " + hash_of(name, version, p) for p in paths)
            print(f"  FAIL {name} {version}: checked as {span!r}, not {expr!r}: a license file pinned in deny.toml"
                  f" changed ({now}); review the licenses of the bundled sources, then update the clarification")
            failed += 1
sys.exit(1 if failed else 0)
'
echo "check-deps: ok"
