#!/usr/bin/env bash
# Build pynet's managed (v2) Docker plugin with no image registry:
#
#   sudo scripts/build-plugin.sh [-o DIR] [--cache-dir DIR] [--no-cache] [--no-create] [NAME]
#
# NAME defaults to pynet:latest (the driver name in `docker network create -d pynet:latest`),
# DIR to build/plugin. DIR gets config.json (plugin/config.json) and rootfs/, which
# `docker plugin create NAME DIR` installs on any node. If a dockerd answers (the one
# DOCKER_HOST names, else the default socket), NAME is also created there, replacing a
# disabled plugin of that name (an enabled one is refused: disable it first).
#
# How: the Dockerfile is the one description of the rootfs. Its base is the build ARG BASE
# (debian:bookworm-slim for `docker build` with a registry); here that base is made locally by
# `debootstrap --variant=minbase` with the Dockerfile's DEBIAN_PACKAGES included, and the
# Dockerfile's instructions are replayed in a chroot of it by scripts/build_plugin.py, which
# knows ARG, FROM ${BASE}, WORKDIR, COPY, RUN and an ENTRYPOINT equal to config.json's and
# refuses every other instruction. No dockerd is needed to build. pip in the chroot uses the
# host's pip settings (PIP_* and `pip config`; local indexes and files are bind-mounted).
#
# Cache (PYNET_BUILD_CACHE or --cache-dir, default /var/cache/pynet-build): the debootstrap tree
# as a tar keyed by suite, packages, archive URI and architecture (base/), and pip's cache
# (pip/). --no-cache builds both afresh. Delete the directory to reclaim the space.
#
# Needs root, debootstrap (installed here from Debian when missing), python3, and the Debian
# archive of the host's apt sources (PYNET_DEBIAN_MIRROR overrides it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $(id -u) -ne 0 ]]; then
    echo "build-plugin.sh: run as root (debootstrap, chroot and mounts): sudo $0 $*" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    echo "[build-plugin] installing debootstrap" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
fi
exec python3 "$HERE/build_plugin.py" "$@"
