#!/usr/bin/env bash
# Start the services the test suite needs (PostgreSQL on loopback, when it can be had),
# run the given command with their addresses in the environment, and stop them after.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ITERFLOW_TEST_POSTGRES_URL:-}" ] && [ -x .ci/postgres.sh ]; then
  if url=$(bash .ci/postgres.sh start); then
    export ITERFLOW_TEST_POSTGRES_URL="$url"
    trap 'bash .ci/postgres.sh stop >/dev/null 2>&1 || true' EXIT
  else
    echo "services: PostgreSQL could not be started; its tests will be skipped" >&2
  fi
fi
"$@"
