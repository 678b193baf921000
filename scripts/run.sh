#!/usr/bin/env bash
# The single command that runs pynet on the embedded store, in the foreground:
#   sudo scripts/run.sh [pynet serve flags]
# Installs what pynet needs at run time (Debian's python3-venv, iptables, nftables and
# python3-nftables, libnftables' Python binding), puts pynet in a virtualenv at /opt/pynet
# (PYNET_VENV to change) that sees that binding (and no other Debian Python package), then
# execs `pynet serve`.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PYNET_VENV:-/opt/pynet}"
[[ $(id -u) -eq 0 ]] || { echo "scripts/run.sh: run as root (pynet makes bridges and firewall rules)" >&2; exit 1; }
missing=()
for pkg in python3-venv iptables nftables python3-nftables; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
[[ -x "$VENV/bin/pip" ]] || /usr/bin/python3 -m venv "$VENV"
bash "$REPO_ROOT/scripts/link-nftables-binding.sh" "$VENV/bin/python3"
"$VENV/bin/pip" install -q "$REPO_ROOT"
exec "$VENV/bin/pynet" serve "$@"
