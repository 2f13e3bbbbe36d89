#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed time budget and prints a
# summary (executions, exec/s, crash or not) per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      # default 60
#
# Environment:
#   FUZZ_TARGETS    space-separated targets to run (default: all in fuzz/fuzz_targets)
#   FUZZ_SANITIZER  address (default) | none   (none is ~2x faster; the code
#                   under test is safe Rust, ASan mostly guards unsafe in deps)
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-malloc_limit_mb=256"
#
# Works on a stable toolchain: cargo-fuzz needs `-Zsanitizer=...`, which
# stable rustc accepts with RUSTC_BOOTSTRAP=1 (set here unless the active
# rustc is already a nightly). Builds with debug assertions (`-a`), so integer
# overflow panics too.
#
# Exit status: 0 if no target crashed; 1 if any target crashed (the artifact
# path is printed); 2 on usage or build errors.
set -euo pipefail

SECS="${1:-60}"
if ! [[ "$SECS" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [SECONDS_PER_TARGET]   (positive integer, default 60)" >&2
  exit 2
fi

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if ! rustc --version | grep -q -- '-nightly'; then
  export RUSTC_BOOTSTRAP=1
fi

SANITIZER="${FUZZ_SANITIZER:-address}"
read -r -a EXTRA_ARGS <<<"${FUZZ_ARGS:-}"
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
  read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
  TARGETS=()
  for f in fuzz/fuzz_targets/*.rs; do
    TARGETS+=("$(basename "$f" .rs)")
  done
fi

LOG_DIR="fuzz/artifacts/logs"
mkdir -p "$LOG_DIR"

echo "==> $(rustc --version)${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}, $(cargo fuzz --version)"
echo "==> building ${TARGETS[*]} (sanitizer: $SANITIZER)"
for t in "${TARGETS[@]}"; do
  if ! cargo fuzz build -a --sanitizer "$SANITIZER" "$t"; then
    echo "error: building fuzz target $t failed" >&2
    exit 2
  fi
done

SUMMARY=()
crashed=0
for t in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus"
  args=(-max_total_time="$SECS" -print_final_stats=1)
  [[ -f "fuzz/dicts/$t.dict" ]] && args+=(-dict="fuzz/dicts/$t.dict")
  args+=("${EXTRA_ARGS[@]}")
  log="$LOG_DIR/$t.log"
  echo "==> fuzzing $t for ${SECS}s (corpus $corpus, log $log)"

  status=0
  cargo fuzz run -a --sanitizer "$SANITIZER" "$t" "$corpus" -- "${args[@]}" >"$log" 2>&1 || status=$?

  # Normal end: "Done 1234567 runs in 61 second(s)".
  done_line="$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)"
  runs="" secs_used="" eps=""
  if [[ -n "$done_line" ]]; then
    runs="$(awk '{print $2}' <<<"$done_line")"
    secs_used="$(awk '{print $5}' <<<"$done_line")"
  else
    # Crash or abort: fall back to the final stats, then the last status line.
    runs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
    [[ -z "$runs" ]] && runs="$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)"
  fi
  if [[ -n "$runs" && -n "$secs_used" && "$secs_used" -gt 0 ]]; then
    eps=$((runs / secs_used))
  else
    eps="$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
  fi
  corpus_n="$(find "$corpus" -type f | wc -l)"

  artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
  if [[ -n "$artifact" ]]; then
    crashed=1
    verdict="CRASH: $artifact"
    echo "---- $t: crash; last lines of $log ----"
    grep -n -E 'panicked at|ERROR: |SUMMARY: |Test unit written to|Base64:' "$log" | head -n 20 || true
    tail -n 30 "$log"
    echo "---- reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -a --sanitizer $SANITIZER $t $artifact"
    echo "---- minimize:  RUSTC_BOOTSTRAP=1 cargo fuzz tmin -a --sanitizer $SANITIZER $t $artifact"
  elif [[ "$status" -ne 0 || -z "$done_line" ]]; then
    echo "---- $t: libFuzzer exited with status $status and no crash artifact; last lines of $log ----" >&2
    tail -n 30 "$log" >&2
    exit 2
  else
    verdict="no crash"
  fi
  SUMMARY+=("$(printf '%-16s %6ss %12s runs %9s exec/s  corpus %5s  %s' \
    "$t" "${secs_used:-?}" "${runs:-?}" "${eps:-?}" "$corpus_n" "$verdict")")
done

echo
echo "==> fuzz summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), ${SECS}s per target, sanitizer $SANITIZER)"
printf '%s\n' "${SUMMARY[@]}"
exit "$crashed"
