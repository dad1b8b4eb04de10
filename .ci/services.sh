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
# The dashboard's browser tests drive Debian's Chromium through Playwright (never a
# downloaded browser). Install it when absent; under CI=true a browser that cannot be
# had fails the run here, and the tests fail too rather than skip.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "services: Chromium is not installed; installing the Debian package" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq chromium; } >&2 || true
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then
      echo "services: Chromium is missing and CI=true: the browser tests cannot run" >&2
      exit 1
    fi
    echo "services: Chromium could not be installed; the browser tests will be skipped" >&2
  fi
fi
export ITERFLOW_TEST_CHROMIUM="${ITERFLOW_TEST_CHROMIUM:-$(command -v chromium || true)}"
"$@"
