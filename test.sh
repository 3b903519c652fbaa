#!/usr/bin/env bash
# Runs Hamster's whole test suite: the Rust tests, then the end-to-end suite against the built
# binary with real S3 clients.
#
#   ./test.sh        everything
#   ./test.sh rust   only the cargo tests
#   ./test.sh e2e    only the end-to-end suite (builds the binary first)
#
# Extra arguments after `e2e` go to pytest, e.g. `./test.sh e2e -k crash -x`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT="$PWD"
MODE="${1:-all}"
if [ $# -gt 0 ]; then shift; fi

case "$MODE" in
  all | rust | e2e) ;;
  *)
    echo "usage: $0 [all|rust|e2e] [pytest args...]" >&2
    exit 2
    ;;
esac

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$ROOT/.venv-e2e"
export PIP_DISABLE_PIP_VERSION_CHECK=1

run_rust() {
  echo "==> cargo build --workspace --all-targets"
  cargo build --workspace --all-targets
  if cargo nextest --version >/dev/null 2>&1; then
    echo "==> cargo nextest run --workspace"
    cargo nextest run --workspace --no-fail-fast --no-tests=warn
    # nextest does not run doctests.
    echo "==> cargo test --workspace --doc"
    cargo test --workspace --doc
  else
    echo "==> cargo test --workspace (cargo-nextest not installed)"
    cargo test --workspace --no-fail-fast
  fi
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "==> creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  echo "==> pip install -r e2e/requirements.txt"
  "$VENV/bin/python" -m pip install -q -r "$ROOT/e2e/requirements.txt"
}

run_e2e() {
  if [ "$MODE" = e2e ]; then
    echo "==> cargo build --bin hamster"
    cargo build --bin hamster
  fi
  ensure_venv
  echo "==> pytest e2e"
  HAMSTER_BIN="${HAMSTER_BIN:-$TARGET_DIR/debug/hamster}" \
    "$VENV/bin/python" -m pytest -q "$ROOT/e2e" "$@"
}

case "$MODE" in
  all)
    run_rust
    run_e2e "$@"
    ;;
  rust) run_rust ;;
  e2e) run_e2e "$@" ;;
esac
