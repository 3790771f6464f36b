#!/usr/bin/env bash
# Records the workflow histories the replay suite (tests/tests/replay.rs) replays: runs the
# #[ignore]d scenarios of tests/tests/record_histories.rs end to end against a Temporal dev
# server (started by the test harness, like the end-to-end tests) and writes each scenario's
# histories into tests/histories/{WorkflowType}-{scenario}.json.
#
#   scripts/record-histories.sh                    # every scenario; existing files are kept
#   scripts/record-histories.sh payment_            # scenarios whose test name matches
#   scripts/record-histories.sh --tag v2            # write {name}.v2.json beside the old ones
#   scripts/record-histories.sh --overwrite NAME    # replace existing files
#
# Recorded histories are fixtures: keep the old ones when a workflow changes (that is what
# makes the replay suite catch a change that breaks running workflows).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh

filters=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) export PAYFLOW_HISTORIES_TAG="$2"; shift 2 ;;
    --overwrite) export PAYFLOW_HISTORIES_OVERWRITE=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) filters+=("$1"); shift ;;
  esac
done

# Plain payloads: the dev stack's codec key lives only as long as one test run, and recorded
# histories must replay anywhere (encrypted ones replay with their key; encryption.rs checks).
export PAYFLOW_DEV_CODEC=off
cargo test -p payflow-tests --test record_histories -- --ignored --nocapture --test-threads=3 "${filters[@]}"
ls -1 tests/histories tests/histories/probe
