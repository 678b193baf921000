#!/bin/sh
# The managed plugin's entrypoint (PID 1): `pynet serve` after one adjustment.
# Docker starts plugins from its default OCI spec, which mounts /sys read-only and makes
# /proc/sys read-only; pynet writes net.ipv4 sysctls there (ip_forward, route_localnet) and
# bridge ports' hairpin_mode under /sys. The plugin holds CAP_SYS_ADMIN, and these mounts
# belong to its own mount namespace, so it makes them writable here. exec: pynet is PID 1 and
# gets Docker's SIGTERM itself.
set -e
mount -o remount,bind,rw /proc/sys
mount -o remount,rw /sys
exec /opt/pynet/bin/pynet serve "$@"
