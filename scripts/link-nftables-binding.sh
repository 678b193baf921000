#!/usr/bin/env bash
# Make libnftables' official Python binding (Debian's python3-nftables, module `nftables`)
# importable from an interpreter that is not Debian's own python3 (pyenv's, a virtualenv's):
#   scripts/link-nftables-binding.sh PYTHON
# The binding is pure Python over ctypes and not on PyPI. Debian installs it into
# /usr/lib/python3/dist-packages, beside every other Debian Python package, so putting that
# whole directory on the path would let Debian's copies shadow the interpreter's own. Instead
# a directory holding only a link to the package goes on the path, through a .pth file.
set -euo pipefail
PYTHON="${1:?usage: $0 PYTHON}"
SOURCE=/usr/lib/python3/dist-packages/nftables
LINKS=/usr/local/lib/pynet-nftables
[[ -f "$SOURCE/nftables.py" ]] || { echo "$SOURCE is missing: apt-get install python3-nftables" >&2; exit 1; }
if (cd / && "$PYTHON" -c 'import nftables' 2>/dev/null); then
    exit 0  # Debian's python3, or already linked
fi
mkdir -p "$LINKS"
ln -sfn "$SOURCE" "$LINKS/nftables"
site="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
printf '%s\n' "$LINKS" >"$site/pynet-nftables.pth"
(cd / && "$PYTHON" -c 'import nftables') || { echo "nftables still not importable from $PYTHON" >&2; exit 1; }
echo "[link-nftables-binding] $PYTHON imports nftables from $SOURCE (via $site/pynet-nftables.pth)" >&2
