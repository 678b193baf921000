#!/usr/bin/env bash
# The single command that runs pynet on the embedded store, in the foreground:
#   sudo scripts/run.sh [pynet serve flags]
# Debian 12 or 13 (Ubuntu 24.04 by the same package names, not proven here). Installs what
# pynet needs at run time from the distribution (python3-venv, iptables, nftables and
# libnftables1, the C library pynet drives through ctypes; wireguard-go and wireguard-tools
# for encrypted overlays where the kernel has no WireGuard), puts pynet in a virtualenv at
# /opt/pynet (PYNET_VENV to change; no system site packages: nothing of the distribution's
# Python is used), then execs `pynet serve`, which checks the rest before it starts.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PYNET_VENV:-/opt/pynet}"
[[ $(id -u) -eq 0 ]] || { echo "scripts/run.sh: run as root (pynet makes bridges and firewall rules)" >&2; exit 1; }
missing=()
for pkg in python3-venv iptables nftables libnftables1 wireguard-go wireguard-tools; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
[[ -x "$VENV/bin/pip" ]] || /usr/bin/python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "$REPO_ROOT"
exec "$VENV/bin/pynet" serve "$@"
