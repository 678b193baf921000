#!/usr/bin/env bash
# Fetch newer Docker Engines for the test suite's engine matrix into a cache directory
# (default /var/cache/pynet-engines, PYNET_ENGINE_CACHE to change): Debian 13's docker.io
# 26.1 and Debian unstable's 28.5, debootstrapped from the host's Debian archive (read from
# /etc/apt). Idempotent: an engine already in the cache is not fetched again.
#
#   scripts/fetch-engine.sh            # every engine (26.1 28.5)
#   scripts/fetch-engine.sh 28.5       # one
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ $# -gt 0 ]] || set -- 26.1 28.5
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m tests.harness.engines fetch "$@"
