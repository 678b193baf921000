#!/usr/bin/env bash
# Install everything the test suite needs on Debian 12, as root, non-interactively.
# Idempotent: when all packages and apt files are already in place, apt is not touched
# (set PYNET_FORCE_APT=1 to run apt-get update/install anyway). Always (re)installs the
# Python package in editable mode with its test extras.
#
#   Debian: docker.io iptables busybox-static docker-compose iperf3 nftables python3-nftables curl systemd (systemd-analyze) debootstrap
#   Debian docker-registry: only its binary, unpacked to /usr/local/lib/pynet-test (installing
#     the package would start a registry service on :5000); tests/managed pushes a plugin to it
#   Debian bullseye (pinned so only `consul` comes from it): consul 1.8.7
#
# Env: PYTHON (default python3), PYNET_FORCE_APT=1.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
PACKAGES=(docker.io iptables busybox-static docker-compose iperf3 nftables python3-nftables curl debootstrap consul systemd)
BULLSEYE_SOURCE=/etc/apt/sources.list.d/pynet-bullseye.sources
BULLSEYE_PIN=/etc/apt/preferences.d/pynet-bullseye

log() { printf '[install-test-deps] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, dockerd, iptables, network namespaces)"
[[ -r /etc/os-release ]] && . /etc/os-release
[[ "${VERSION_CODENAME:-}" == bookworm ]] || log "warning: written for Debian 12 (bookworm), this is '${PRETTY_NAME:-unknown}'"

export DEBIAN_FRONTEND=noninteractive

# Print "URI KEYRING" of the main bookworm Debian archive, read from the existing apt config
# (deb822 *.sources first, then one-line sources.list), so no mirror host is hard-coded here.
bookworm_archive() {
    local f found=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -e "$f" && "$f" != "$BULLSEYE_SOURCE" ]] || continue
        awk '
            function flush() {
                if (uris != "" && suites ~ /(^| )bookworm( |$)/ && comps ~ /(^| )main( |$)/ && !done) {
                    split(uris, u, " "); print u[1], (key == "" ? "-" : key); done = 1
                }
                uris = suites = comps = key = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            tolower($1) == "uris:"       { $1 = ""; uris = substr($0, 2) }
            tolower($1) == "suites:"     { $1 = ""; suites = substr($0, 2) }
            tolower($1) == "components:" { $1 = ""; comps = substr($0, 2) }
            tolower($1) == "signed-by:"  { key = ($2 ~ /^\//) ? $2 : "" }  # not an inline key block
            END { flush() }
        ' "$f" >>"$tmp_found"
    done
    found="$(head -n1 "$tmp_found")"
    if [[ -n "$found" ]]; then printf '%s\n' "$found"; return 0; fi
    # One-line format: deb [signed-by=K] URI bookworm main ...
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '
        $1 == "deb" {
            key = "-"; i = 2
            if ($2 ~ /^\[/) {
                for (; i <= NF; i++) { if ($i ~ /signed-by=/) { key = $i; sub(/.*signed-by=/, "", key); sub(/\]$/, "", key) } if ($i ~ /\]$/) break }
                i++
            }
            if ($(i + 1) == "bookworm") { print $i, key; exit }
        }'
}

write_if_changed() {  # write_if_changed FILE CONTENT -> returns 0 if it changed the file
    local file="$1" content="$2"
    if [[ -f "$file" ]] && [[ "$(cat "$file")" == "$content" ]]; then return 1; fi
    printf '%s\n' "$content" >"$file"
    log "wrote $file"
}

changed=0
tmp_found="$(mktemp)"
trap 'rm -f "$tmp_found"' EXIT
read -r ARCHIVE_URI KEYRING < <(bookworm_archive) || die "no Debian bookworm 'main' source found in /etc/apt"
[[ "$KEYRING" != "-" ]] || KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r "$KEYRING" ]] || die "keyring $KEYRING (from the bookworm source) is missing"
log "Debian archive: $ARCHIVE_URI (keyring $KEYRING)"

# Consul is not in bookworm; bullseye has 1.8.7. The pin keeps every other package on bookworm.
# If the machine already has a bullseye source of its own, reuse it (a second one only makes
# apt warn "configured multiple times") and drop ours.
other_bullseye="$(grep -lsE '^[[:space:]]*(Suites:.*[[:space:]]bullseye([[:space:]]|$)|deb[[:space:]].*[[:space:]]bullseye[[:space:]])' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources | grep -vxF "$BULLSEYE_SOURCE" | head -n1 || true)"
if [[ -n "$other_bullseye" ]]; then
    log "using the existing bullseye source $other_bullseye"
    if [[ -e "$BULLSEYE_SOURCE" ]]; then rm -f "$BULLSEYE_SOURCE"; changed=1; log "removed redundant $BULLSEYE_SOURCE"; fi
else
    write_if_changed "$BULLSEYE_SOURCE" "# Added by pynet scripts/install-test-deps.sh: only for the consul package (see $BULLSEYE_PIN)
Types: deb
URIs: $ARCHIVE_URI
Suites: bullseye
Components: main
Signed-By: $KEYRING" && changed=1
fi
write_if_changed "$BULLSEYE_PIN" "# Added by pynet scripts/install-test-deps.sh: nothing from bullseye except consul.
Package: consul
Pin: release n=bullseye
Pin-Priority: 500

Package: *
Pin: release n=bullseye
Pin-Priority: -1" && changed=1

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [[ $changed -eq 1 || ${#missing[@]} -gt 0 || "${PYNET_FORCE_APT:-0}" == 1 ]]; then
    log "apt-get update; installing: ${PACKAGES[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PACKAGES[@]}"
else
    log "all Debian packages already installed"
fi
REGISTRY_BIN=/usr/local/lib/pynet-test/docker-registry
if [[ ! -x "$REGISTRY_BIN" ]]; then
    log "unpacking docker-registry's binary to $REGISTRY_BIN"
    regtmp="$(mktemp -d)"
    (cd "$regtmp" && apt-get download -q docker-registry >/dev/null 2>&1) \
        || { apt-get update -q && (cd "$regtmp" && apt-get download -q docker-registry); }
    dpkg-deb -x "$regtmp"/docker-registry_*.deb "$regtmp/x"
    install -D -m 0755 "$regtmp/x/usr/bin/docker-registry" "$REGISTRY_BIN"
    rm -rf "$regtmp"
fi
for bin in dockerd containerd runc iptables nft busybox docker-compose iperf3 consul curl systemd-analyze debootstrap "$REGISTRY_BIN"; do
    command -v "$bin" >/dev/null || die "$bin not on PATH after install"
done
[[ "$(dpkg-query -W -f='${Version}' consul)" == 1.8.* ]] || log "warning: consul is not 1.8.x"

# libnftables' Python binding (module nftables) is not on PyPI: the nftables project ships it
# with its sources and Debian packages it as python3-nftables, for Debian's python3. Make it
# importable from $PYTHON too, and nothing else of Debian's dist-packages.
bash "$REPO_ROOT/scripts/link-nftables-binding.sh" "$PYTHON"

# Python: the package in editable mode plus its test extras. pip takes ~10 s even when
# nothing changed, so skip it while pyproject.toml and the interpreter are unchanged.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
stamp="/var/tmp/pynet-test-deps.$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12)"
want="$(command -v "$PYTHON") $(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && (cd / && "$PYTHON" -c 'import importlib.metadata as m; m.version("pynet")
import docker, flask, pyroute2, pytest, pytest_timeout, hypothesis, nftables, prometheus_client' 2>/dev/null); then
    log "python package already installed (pyproject.toml unchanged)"
    exit 0
fi
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    [[ "$(command -v "$PYTHON")" == /usr/bin/* ]] || die "$PYTHON has no pip"
    log "installing python3-pip for the system python"
    apt-get install -y -q python3-pip
fi
pip_args=(install -q -e "${REPO_ROOT}[test]")
# Debian's own python3 is "externally managed" (PEP 668); a throwaway CI machine may override it.
if "$PYTHON" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    pip_args+=(--break-system-packages)
fi
log "$PYTHON -m pip ${pip_args[*]}"
(cd "$REPO_ROOT" && "$PYTHON" -m pip "${pip_args[@]}")
printf '%s\n' "$want" >"$stamp"
log "done"
