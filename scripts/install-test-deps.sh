#!/usr/bin/env bash
# Install everything the test suite needs, as root, non-interactively, on Debian 12 (bookworm)
# or Debian 13 (trixie); Ubuntu 24.04 (noble) by the same package names, not proven here.
# Idempotent: when all packages and apt files are already in place, apt is not touched
# (set PYNET_FORCE_APT=1 to run apt-get update/install anyway). Always (re)installs the
# Python package in editable mode with its test extras.
#
#   scripts/install-test-deps.sh [--simulate-apt]
#
#   Distribution: docker.io iptables busybox-static docker-compose iperf3 nftables libnftables1
#     curl systemd (systemd-analyze) debootstrap python3-venv pipx wireguard-go wireguard-tools
#     (wireguard-go 0.0.20220316 on bookworm, 0.0.20231211 on trixie; `wg`). The names are the same on all
#     three; what they bring differs: docker.io 20.10 / 26.1, docker-compose the Python v1
#     CLI on bookworm and Compose v2 (also `docker compose`) on trixie.
#   docker-registry: only its binary, unpacked to /usr/local/lib/pynet-test (installing the
#     package would start a registry service on :5000); tests/managed pushes a plugin to it.
#   Consul is in none of them: Debian bullseye's consul 1.8.7, from a bullseye source on the
#     same Debian archive as the machine's own source (whatever its suite), pinned so that
#     nothing else comes from bullseye. PyPI has no Consul and HashiCorp's own apt repository
#     is not one this project may assume. On Ubuntu, name a Debian archive in
#     PYNET_DEBIAN_ARCHIVE (and install debian-archive-keyring).
#   Python: see scripts/test-python.sh. An externally managed python3 (PEP 668: Debian 12
#     and 13) gets a virtualenv at /opt/pynet-test rather than --break-system-packages.
#
# --simulate-apt: configure the sources, then `apt-get install --simulate` the package list
# and skip the docker-registry unpack and the binary checks; only python3-venv is really
# installed, and the Python part runs for real.
# (tests/distro runs it so in a Debian 13 tree.)
#
# Env: PYTHON (default python3), PYNET_TEST_VENV, PYNET_FORCE_APT=1, PYNET_DEBIAN_ARCHIVE.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIMULATE=0
case "${1:-}" in
    --simulate-apt) SIMULATE=1 ;;
    "") ;;
    *) echo "usage: $0 [--simulate-apt]" >&2; exit 2 ;;
esac
PACKAGES=(docker.io iptables busybox-static docker-compose iperf3 nftables libnftables1 curl debootstrap consul systemd python3-venv pipx wireguard-go wireguard-tools)
BULLSEYE_SOURCE=/etc/apt/sources.list.d/pynet-bullseye.sources
BULLSEYE_PIN=/etc/apt/preferences.d/pynet-bullseye

log() { printf '[install-test-deps] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, dockerd, iptables, network namespaces)"
[[ -r /etc/os-release ]] && . /etc/os-release
SUITE="${VERSION_CODENAME:-}"
case "${ID:-}:$SUITE" in
    debian:bookworm|debian:trixie) ;;
    ubuntu:noble) log "Ubuntu 24.04: same package names as Debian, not proven by this project's CI" ;;
    *) log "warning: written for Debian 12/13, this is '${PRETTY_NAME:-unknown}'" ;;
esac
[[ -n "$SUITE" ]] || die "/etc/os-release names no VERSION_CODENAME: cannot tell which apt source is the distribution's"

export DEBIAN_FRONTEND=noninteractive

# Print "URI KEYRING" of the machine's own archive for suite $SUITE, component main, read from
# the existing apt config (deb822 *.sources first, then one-line sources.list), so no mirror
# host is hard-coded here.
distribution_archive() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -e "$f" && "$f" != "$BULLSEYE_SOURCE" ]] || continue
        awk -v suite="$SUITE" '
            function flush() {
                if (uris != "" && (" " suites " ") ~ (" " suite " ") && comps ~ /(^| )main( |$)/ && !done) {
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
    if [[ -s "$tmp_found" ]]; then head -n1 "$tmp_found"; return 0; fi
    # One-line format: deb [signed-by=K] URI SUITE main ...
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite="$SUITE" '
        $1 == "deb" {
            key = "-"; i = 2
            if ($2 ~ /^\[/) {
                for (; i <= NF; i++) { if ($i ~ /signed-by=/) { key = $i; sub(/.*signed-by=/, "", key); sub(/\]$/, "", key) } if ($i ~ /\]$/) break }
                i++
            }
            if ($(i + 1) == suite) { print $i, key; exit }
        }' | grep . || return 1
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
if [[ -n "${PYNET_DEBIAN_ARCHIVE:-}" ]]; then
    ARCHIVE_URI="$PYNET_DEBIAN_ARCHIVE" KEYRING=-
elif [[ "${ID:-}" == debian ]]; then
    read -r ARCHIVE_URI KEYRING < <(distribution_archive) \
        || die "no Debian '$SUITE' 'main' source found in /etc/apt (or name the archive in PYNET_DEBIAN_ARCHIVE)"
else
    die "Consul comes from Debian bullseye's archive: name it in PYNET_DEBIAN_ARCHIVE (e.g. your Debian mirror's /debian) and install debian-archive-keyring"
fi
[[ "$KEYRING" != "-" ]] || KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r "$KEYRING" ]] || die "keyring $KEYRING is missing (apt-get install debian-archive-keyring)"
log "Debian archive for bullseye's consul: $ARCHIVE_URI (keyring $KEYRING)"

# Consul is not in bookworm or trixie; bullseye has 1.8.7. The pin keeps every other package
# on the machine's own suite.
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
    if [[ $SIMULATE == 1 ]]; then
        apt-get install --simulate -q --no-install-recommends "${PACKAGES[@]}"
    else
        apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PACKAGES[@]}"
    fi
else
    log "all Debian packages already installed"
fi
if [[ $SIMULATE == 1 ]]; then
    log "--simulate-apt: the packages above resolve; installing only python3-venv for the Python part"
    apt-get install -y -q --no-install-recommends python3-venv
else
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
    for bin in dockerd containerd runc iptables nft busybox docker-compose iperf3 consul curl systemd-analyze debootstrap pipx wireguard-go wg "$REGISTRY_BIN"; do
        command -v "$bin" >/dev/null || die "$bin not on PATH after install"
    done
    [[ "$(dpkg-query -W -f='${Version}' consul)" == 1.8.* ]] || log "warning: consul is not 1.8.x"
fi

# Python: the package in editable mode plus its test extras, into TEST_PYTHON (see
# scripts/test-python.sh). pip takes ~10 s even when nothing changed, so skip it while
# pyproject.toml and the interpreter are unchanged.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
. "$REPO_ROOT/scripts/test-python.sh"  # only now: on a bare system python3 came with the packages
if [[ "$TEST_PYTHON" != "$PYTHON" && ! -x "$TEST_PYTHON" ]]; then
    log "$PYTHON is externally managed (PEP 668): making a virtualenv at $TEST_VENV"
    "$PYTHON" -m venv "$TEST_VENV"
fi
stamp="/var/tmp/pynet-test-deps.$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12)"
want="$(command -v "$TEST_PYTHON") $(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && (cd / && "$TEST_PYTHON" -c 'import importlib.metadata as m; m.version("pynet")
import docker, flask, pyroute2, pytest, pytest_timeout, hypothesis, prometheus_client' 2>/dev/null); then
    log "python package already installed (pyproject.toml unchanged)"
    exit 0
fi
if ! "$TEST_PYTHON" -m pip --version >/dev/null 2>&1; then
    [[ "$(command -v "$TEST_PYTHON")" == /usr/bin/* ]] || die "$TEST_PYTHON has no pip"
    log "installing python3-pip for the system python"
    apt-get install -y -q python3-pip
fi
log "$TEST_PYTHON -m pip install -q -e ${REPO_ROOT}[test]"
(cd "$REPO_ROOT" && "$TEST_PYTHON" -m pip install -q -e "${REPO_ROOT}[test]")
printf '%s\n' "$want" >"$stamp"
log "done"
