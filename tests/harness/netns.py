"""Throwaway network namespaces, one helper for every tier that needs them.

    spaces = Namespaces()
    name = spaces.make()      # "pnt-<hex>", empty (only a loopback, down)
    host = spaces.make("h")   # "pnt-h<hex>": the tag says what the namespace plays
    spaces.close()            # kills what runs inside (by PID), then deletes them all

The fixtures `make_netns` (a factory) and `ns` (one namespace) in tests/conftest.py wrap it;
code that is not a fixture (tests/kernel/firewall_topology.py) uses the class itself.
Creating a namespace needs root (CAP_SYS_ADMIN); without it make() raises, never skips.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess

PREFIX = "pnt-"


class NetnsError(RuntimeError):
    pass


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetnsError("creating network namespaces needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); "
                         "run this test tier as root")


class Namespaces:
    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self.made: list[str] = []

    def make(self, tag: str = "") -> str:
        require_root()
        name = f"{self.prefix}{tag}{secrets.token_hex(4)}"
        proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise NetnsError(f"ip netns add {name} failed: {proc.stderr.strip()}")
        self.made.append(name)
        return name

    __call__ = make

    def close(self) -> list[str]:
        """Delete every namespace made here, newest first, after killing the processes the
        test started inside. Returns the names that could not be deleted."""
        failed = []
        for name in reversed(self.made):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                                  timeout=30).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30).returncode != 0:
                failed.append(name)
        self.made.clear()
        return failed
