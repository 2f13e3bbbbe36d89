#!/usr/bin/env bash
# Installs a pinned cargo subcommand from crates.io, only when it is missing or
# another version, and prints its version.
#
#   scripts/cargo-tool.sh cargo-deny        (.ci/run, scripts/audit.sh)
#   scripts/cargo-tool.sh cargo-cyclonedx   (scripts/sbom.sh)
#
# The pins live here, so CI and the scripts install the same versions. A
# first install compiles the tool (cargo install --locked: the tool's own
# lock file), a few minutes on two cores; later runs only check the version.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

tool="${1:?usage: scripts/cargo-tool.sh cargo-deny|cargo-cyclonedx}"
case "$tool" in
  cargo-deny) version=0.20.2 ;;
  cargo-cyclonedx) version=0.5.9 ;;
  *) echo "cargo-tool: no pinned version for $tool" >&2; exit 2 ;;
esac

# As a cargo subcommand: `cargo deny --version` prints "cargo-deny 0.20.2",
# `cargo cyclonedx --version` "cargo-cyclonedx-cyclonedx 0.5.9" (the binary
# run alone, `cargo-cyclonedx --version`, refuses the flag).
installed() { cargo "${tool#cargo-}" --version 2>/dev/null | grep -qwF -- "$version"; }

if ! installed; then
  echo "cargo-tool: installing $tool $version from crates.io (cargo install --locked)"
  start=$SECONDS
  # A CARGO_TARGET_DIR of the caller's would mix the tool's build into it.
  env -u CARGO_TARGET_DIR cargo install --locked --quiet "$tool" --version "$version"
  echo "cargo-tool: $tool $version installed in $((SECONDS - start))s"
  installed || { echo "cargo-tool: $tool --version does not say $version after the install" >&2; exit 1; }
fi
cargo "${tool#cargo-}" --version
