#!/usr/bin/env bash
# Known vulnerabilities, unsound and unmaintained crates among the crates the
# tickfan binary links: cargo-deny's advisory check against the RustSec
# advisory database, with deny.toml (the graph, the advisories ignored and
# why).
#
#   scripts/audit.sh              clones or updates the database from GitHub
#                                 (github.com/rustsec/advisory-db) into
#                                 $CARGO_HOME/advisory-dbs, then checks
#   scripts/audit.sh --db DIR     offline, against DIR: a clone of that
#                                 repository made on a machine that reaches
#                                 GitHub (git clone --depth 1 ...), copied here
#
# Exits 0 when no advisory applies, non-zero otherwise (each one printed with
# its ID, the affected crate and the path to it from tickfan). CI does not
# run it: its machine reaches crates.io but not GitHub (README, "Supply
# chain"). Installs cargo-deny (pinned in scripts/cargo-tool.sh) if missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

db=""
case "${1:-}" in
  "") ;;
  --db) db="${2:?usage: scripts/audit.sh [--db DIR]}" ;;
  *) echo "usage: scripts/audit.sh [--db DIR]" >&2; exit 2 ;;
esac

scripts/cargo-tool.sh cargo-deny

if [[ -z "$db" ]]; then
  if ! cargo deny --locked check advisories; then
    echo "audit: failed (an advisory above, or the database could not be fetched from GitHub: then use --db DIR)" >&2
    exit 1
  fi
  exit 0
fi

db="$(cd "$db" && pwd -P)"
if [[ ! -d "$db/crates" ]]; then
  echo "audit: $db is not a clone of the RustSec advisory database (no crates/ directory)" >&2
  exit 2
fi
if git -C "$db" rev-parse HEAD >/dev/null 2>&1; then
  echo "audit: database $db at $(git -C "$db" log -1 --format='%h, %cs')"
fi
# cargo-deny looks for the default database under db-path in a directory
# named after its URL; a temporary db-path links that name to DIR.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/dbs"
ln -s "$db" "$tmp/dbs/advisory-db-3157b0e258782691"
sed "s|^\[advisories\]\$|[advisories]\ndb-path = \"$tmp/dbs\"|" deny.toml > "$tmp/deny.toml"
cargo deny --locked --offline --config "$tmp/deny.toml" check advisories
