#!/usr/bin/env bash
# Browser tests: the demo page and /client.js in Debian's chromium, headless,
# driven by playwright-core (tests/browser, node's built-in test runner)
# against `tickfan demo`.
#
#   scripts/browser-test.sh [node --test options]
#
# Installs what is missing, idempotently: chromium and chromium-driver (apt,
# needs root), Node.js >= 20 with npm (apt; the distribution's package must be
# new enough), tests/browser/node_modules (`npm ci`, the committed lock file).
# Builds the binary (`cargo build --locked --bin tickfan`, into
# $CARGO_TARGET_DIR or target/) unless TICKFAN_BIN names one. Screenshots and
# process logs go to target/browser/ (TICKFAN_BROWSER_OUT).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
CHROMIUM="${TICKFAN_CHROMIUM:-/usr/bin/chromium}"
OUT="${TICKFAN_BROWSER_OUT:-$ROOT/target/browser}"

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "browser-test: need root to apt-get install $*" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

if [[ ! -x "$CHROMIUM" ]]; then
  echo "browser-test: installing chromium and chromium-driver (apt)"
  apt_install chromium chromium-driver
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "browser-test: installing nodejs and npm (apt)"
  apt_install nodejs npm
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "browser-test: node $(node --version) is too old; playwright-core needs Node.js >= 20" >&2
  exit 1
fi
echo "browser-test: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"), node $(node --version), npm $(npm --version)"

(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

if [[ -z "${TICKFAN_BIN:-}" ]]; then
  cargo build --locked --bin tickfan
  TARGET_DIR="${CARGO_TARGET_DIR:-target}"
  [[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
  export TICKFAN_BIN="$TARGET_DIR/debug/tickfan"
fi
export TICKFAN_CHROMIUM="$CHROMIUM" TICKFAN_BROWSER_OUT="$OUT"
mkdir -p "$OUT"

rc=0
(cd tests/browser && node --test --test-concurrency=1 --test-timeout=300000 "$@") || rc=$?
echo "browser-test: screenshots and logs in $OUT:"
ls -1 "$OUT" | sed 's/^/  /'
exit "$rc"
