# The root filesystem of pynet's managed plugin: the one description of it.
#
# Without an image registry, scripts/build-plugin.sh builds it: it makes BASE itself (debootstrap
# minbase of the suite BASE names, with DEBIAN_PACKAGES included) and replays the instructions
# below in a chroot. It understands exactly ARG, FROM, WORKDIR, COPY and RUN (shell form), and an
# ENTRYPOINT that must equal plugin/config.json's; it refuses anything else, so keep to those.
# With a registry, `docker build -t pynet-rootfs .` makes the same tree from debian:bookworm-slim;
# see the README's "Managed plugin" section for turning either into a plugin.
ARG BASE=debian:bookworm-slim
# libnftables1: the C library pynet drives through its own ctypes adapter (no Python binding
# from Debian, so the venv has no system site packages). wireguard-go and wireguard-tools (wg):
# encrypted overlays where the kernel has no WireGuard module, and every host's key pair.
ARG DEBIAN_PACKAGES="python3 python3-venv libnftables1 nftables iptables wireguard-go wireguard-tools"

FROM ${BASE}
ARG DEBIAN_PACKAGES
# A base made with these packages already has them: then apt is not asked at all.
RUN dpkg-query -W $DEBIAN_PACKAGES >/dev/null 2>&1 \
 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $DEBIAN_PACKAGES; } \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
RUN python3 -m venv /opt/pynet
COPY pyproject.toml README.md /src/
COPY pynet /src/pynet
COPY pynet_core /src/pynet_core
COPY driver /src/driver
COPY ipam_driver /src/ipam_driver
WORKDIR /src
# No --no-cache-dir: the build script gives pip a cache outside the rootfs; here it is removed.
RUN /opt/pynet/bin/pip install --disable-pip-version-check /src \
 && /opt/pynet/bin/python -c "import pyroute2, pynet.app; from driver.firewall.libnftables import load; load()" \
 && rm -rf /src /root/.cache
COPY plugin/entrypoint.sh /opt/pynet/bin/plugin-entrypoint
WORKDIR /
ENTRYPOINT ["/opt/pynet/bin/plugin-entrypoint"]
