# Sourced by scripts/install-test-deps.sh and scripts/test.sh: sets TEST_PYTHON, the
# interpreter the test suite is installed into and run with.
#
# PYTHON (default python3) itself, unless it is "externally managed" (PEP 668: Debian 12's and
# 13's and Ubuntu 24.04's own python3 refuse `pip install`). Then a virtualenv made from it,
# at PYNET_TEST_VENV (default /opt/pynet-test), with no system site packages: nothing of the
# distribution's Python is needed (libnftables is reached through ctypes, not a binding).
PYTHON="${PYTHON:-python3}"
TEST_VENV="${PYNET_TEST_VENV:-/opt/pynet-test}"
if "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)' 2>/dev/null; then
    TEST_PYTHON="$TEST_VENV/bin/python3"
else
    TEST_PYTHON="$PYTHON"
fi
