#!/usr/bin/env bash
# The whole test suite from a fresh clone: tools, formatting, lints, unit tests, store tests
# on SQLite and PostgreSQL, and end-to-end tests against a real Temporal dev server.
# PostgreSQL: DATABASE_URL when set, else the local server at 127.0.0.1:5432 (trust auth).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
if [ "${CI:-}" = "true" ]; then
  # CI must exercise PostgreSQL and the browser check of the UI, not skip them.
  export PAYFLOW_REQUIRE_POSTGRES=1
  export PAYFLOW_REQUIRE_BROWSER=1
fi

# Headless Chromium for the UI check (tests/tests/browser.rs), from Debian's packages when
# missing; elsewhere that test is skipped when it cannot be installed.
if ! bash scripts/install-browser.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "== CI needs Chromium for the browser check of the Temporal UI" >&2
    exit 1
  fi
  echo "== no Chromium: the browser check of the Temporal UI will be skipped" >&2
fi

# Start the machine's local PostgreSQL if it is installed but down.
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && command -v pg_ctlcluster >/dev/null 2>&1 \
   && [ -d /etc/postgresql ]; then
  echo "== starting local PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  echo "== docker compose config"
  docker compose -f docker-compose.yml config -q
fi
echo "== cargo test"
cargo test --workspace
