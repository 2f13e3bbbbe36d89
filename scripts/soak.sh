#!/usr/bin/env bash
# Soak test: two edges, a producer and thousands of clients for 10+ minutes.
# Prints samples every 30 s and a JSON summary; exits non-zero if RSS grew more
# than 10% after warm-up, file descriptors grew, or any client lost a tick.
#
#   scripts/soak.sh                                  # embedded mock cluster
#   scripts/soak.sh --brokers 127.0.0.1:9092         # real Kafka (scripts/kafka.sh up)
#   scripts/soak.sh --minutes 30 --clients 5000      # see --help for all options
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bin tickfan --example soak
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/examples/soak" --tickfan "$target/release/tickfan" "$@"
