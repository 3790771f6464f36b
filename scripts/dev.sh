#!/usr/bin/env bash
# Runs `payflow dev` from a fresh clone: installs the tools (Temporal CLI, protoc) into .tools,
# builds payflow, and starts the Temporal dev server, worker, ingress, sandbox channel and a
# demo merchant. Pass --demo to run one payment end to end and exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh
cargo build -p payflow --quiet
mkdir -p .data
exec ./target/debug/payflow dev "$@"
