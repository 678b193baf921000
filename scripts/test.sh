#!/usr/bin/env bash
# The single test command: install the test dependencies, then run pytest.
#   scripts/test.sh                 # whole suite
#   scripts/test.sh -k bridge -x    # any pytest arguments pass through
# Debian 12 or 13 (Ubuntu 24.04 by the same package names, not proven here).
# Env: PYTHON (default python3; an externally managed one means the virtualenv
# scripts/test-python.sh names), PYNET_SKIP_INSTALL=1 to skip scripts/install-test-deps.sh.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export PYTHON

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh: must run as root: the tests start a private dockerd, create network" >&2
    echo "namespaces, bridges and iptables rules, and install packages. Try: sudo $0 $*" >&2
    exit 1
fi

if [[ "${PYNET_SKIP_INSTALL:-0}" != 1 ]]; then
    bash "$REPO_ROOT/scripts/install-test-deps.sh"
    # The engine matrix's newer dockerds (tests/engines), cached after the first run.
    bash "$REPO_ROOT/scripts/fetch-engine.sh"
fi

. "$REPO_ROOT/scripts/test-python.sh"  # after the install: it may have brought python3
cd "$REPO_ROOT"
rc=0
"$TEST_PYTHON" -m pytest "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    echo "scripts/test.sh: pytest collected no tests (exit code 5); treating that as a failure" >&2
    exit 1
fi
exit "$rc"
