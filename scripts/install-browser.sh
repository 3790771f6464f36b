#!/usr/bin/env bash
# Installs headless Chromium from Debian's packages (`chromium`) for the browser check of the
# Temporal UI (tests/tests/browser.rs, which drives it with --headless --dump-dom).
# Idempotent: when `chromium` is on PATH it returns at once and touches nothing.
# `apt-get update` runs only when apt does not know the package yet or installing from the
# current lists fails (stale lists). Quiet: apt's output goes to .tools/install-browser.log,
# whose end is shown on failure. Exits non-zero when Chromium is not there afterwards (no apt,
# not root, offline).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$root/.tools"
log="$root/.tools/install-browser.log"
: >"$log"

if ! command -v apt-get >/dev/null 2>&1; then
  echo "payflow browser: chromium is missing and there is no apt-get to install it (Debian's chromium package)." >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "payflow browser: installing chromium needs root: apt-get install -y chromium" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
install() {
  "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium >>"$log" 2>&1
}
known() {
  # A candidate version means the package lists already name it.
  apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'
}

echo "payflow browser: installing chromium from Debian's packages" >&2
start=$SECONDS
if ! { known && install; }; then
  "${sudo[@]}" apt-get update -q >>"$log" 2>&1 || true
  if ! install; then
    echo "payflow browser: apt-get install chromium failed; the end of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "payflow browser: installed, but chromium is not on PATH (see $log)" >&2
  exit 1
fi
echo "payflow browser: $(chromium --version 2>/dev/null | head -n1) installed in $((SECONDS - start)) s" >&2
