"""What `pynet serve` needs, checked before gunicorn starts.

Without these checks a missing piece shows up late and badly: a worker that dies with a
traceback and "Worker failed to boot", or a plugin that starts and then fails every call.
Each check answers None or one line naming what is missing and how to get it; `pynet serve`
prints the first such line and exits with code 2.

Not checked on purpose: whether Consul answers. pynet starts while its store is down (calls
answer 503 until it is back, pynet/readiness.py), so an outage at boot must not stop it;
only a configuration that can never work (a TLS file that cannot be read) is refused.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
from dataclasses import dataclass
from typing import Callable

from driver.firewall import libnftables

from .settings import Settings

EXIT_CODE = 2


def nearest_existing(path: str) -> str:
    """PATH, or its nearest ancestor that exists (what would hold the directories made)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def writable_dir(path: str) -> str | None:
    """None if directory PATH exists and is writable, or could be created; else why not."""
    found = nearest_existing(path)
    if not os.path.isdir(found):
        return f"{found} is not a directory"
    if not os.access(found, os.W_OK | os.X_OK):
        return f"{found} is not writable"
    return None


def socket_answers(path: str) -> bool:
    """Whether something already serves on the Unix socket PATH (a second pynet would take
    the path from under it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(path)
        except OSError as exc:
            return exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK)
        return True


def libnftables_loads() -> str | None:
    """None if a libnftables context can be made, else why not (the firewall adapter's own
    probe)."""
    return libnftables.probe()


@dataclass(frozen=True)
class Probes:
    """How each fact is found out (unit tests hand in their own)."""
    euid: Callable[[], int] = os.geteuid
    libnftables: Callable[[], str | None] = libnftables_loads
    which: Callable[[str], str | None] = shutil.which
    writable_dir: Callable[[str], str | None] = writable_dir
    readable: Callable[[str], bool] = lambda path: os.path.isfile(path) and os.access(path, os.R_OK)
    socket_answers: Callable[[str], bool] = socket_answers


def check(settings: Settings, probes: Probes | None = None) -> str | None:
    """The first thing `pynet serve` lacks, as one line, or None when it can start."""
    probes = probes if probes is not None else Probes()
    for one in (_root, _libnftables, _iptables, _socket, _store):
        problem = one(settings, probes)
        if problem:
            return problem
    return None


def _root(settings: Settings, probes: Probes) -> str | None:
    if probes.euid() != 0:
        return ("pynet serve must run as root: it makes bridges, routes and firewall rules "
                "(run it with sudo, or as the systemd unit in packaging/pynet.service)")
    return None


def _libnftables(settings: Settings, probes: Probes) -> str | None:
    why = probes.libnftables()
    return f"libnftables is missing: {why}" if why else None


def _iptables(settings: Settings, probes: Probes) -> str | None:
    # The FORWARD shim (driver/firewall/forward_accept.py) lifts Docker's policy DROP for
    # pynet bridges with these two.
    for binary in ("iptables", "iptables-restore"):
        if not probes.which(binary):
            return (f"{binary} is not on PATH: pynet needs it to let bridge traffic through "
                    "Docker's FORWARD chain (apt-get install iptables)")
    return None


def _socket(settings: Settings, probes: Probes) -> str | None:
    folder = os.path.dirname(os.path.abspath(settings.socket))
    why = probes.writable_dir(folder)
    if why:
        return (f"cannot make the plugin socket {settings.socket}: {why} "
                "(choose another path with --socket or PYNET_SOCKET)")
    if probes.socket_answers(settings.socket):
        return (f"something already serves on {settings.socket} (another pynet?): stop it, "
                "or choose another path with --socket or PYNET_SOCKET")
    return None


def _store(settings: Settings, probes: Probes) -> str | None:
    if settings.store == "local":
        why = probes.writable_dir(settings.state_dir)
        if why:
            return (f"cannot keep the embedded store in {settings.state_dir}: {why} "
                    "(choose another directory with --state-dir or PYNET_STATE_DIR)")
        return None
    files = (("--consul-ca-cert", settings.consul_ca_cert),
             ("--consul-client-cert", settings.consul_client_cert),
             ("--consul-client-key", settings.consul_client_key))
    for flag, path in files:
        if path and not probes.readable(path):
            return (f"{flag} {path} cannot be read: give a readable PEM file "
                    f"(or the PYNET_{flag[2:].upper().replace('-', '_')} setting)")
    return None
