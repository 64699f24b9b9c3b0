#!/usr/bin/env bash
# The README's first command: everything on this machine with `weft up`.
# Installs the Tansu broker first if it is missing (about 17 minutes, once),
# then builds and runs `weft up` (extra arguments are passed on, e.g.
# --demo-rate 0 or --data-dir /tmp/weft).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

missing=()
for pkg in cmake libclang-dev libcurl4-openssl-dev protobuf-compiler; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "weft needs: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
if ! command -v tansu >/dev/null 2>&1; then
  echo "installing the Tansu broker (cargo install tansu@0.6.0; once, about 17 minutes)..."
  cargo install tansu@0.6.0 --locked --features dynostore,libsql
fi
exec cargo run --quiet -- up "$@"
