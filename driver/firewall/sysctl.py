"""Kernel settings the bridge firewall depends on, read and written through /proc and /sys.

* net.ipv4.ip_forward=1: routing between the bridges and the host's uplinks (Docker sets it
  at daemon start; pynet sets it when a bridge network that may reach out exists), and
  net.ipv6.conf.all.forwarding=1 when such a network has an IPv6 subnet (as Docker does).
* net.ipv4.conf.<bridge>.route_localnet=1: a connection from 127.0.0.1 on the host to a
  published port is DNAT'd to a container; its packets (source 127.0.0.1) must be allowed
  out of the bridge and its replies in. The rule set drops everything else addressed to
  127.0.0.0/8 that arrives on the bridge.
* hairpin_mode=1 on the bridge port of an endpoint with published ports: with
  br_netfilter, a container's connection to its own published port is DNAT'd back to it
  and *bridged* out of the port it came in on, which a bridge only does in hairpin mode.
* Uplinks: the bridges that carry a default route (a host whose way out is itself a
  bridge); the rule set lets pynet networks reach those and no other bridge.

In a network namespace (tests), the files are read and written with `ip netns exec`.
"""
from __future__ import annotations

import logging
import os
import subprocess

from . import commands
from .forward_accept import FirewallError

log = logging.getLogger(__name__)

RTF_UP, RTF_REJECT = 0x0001, 0x0200


class KernelKnobs:
    def __init__(self, netns: str | None = None, *, run: commands.Runner | None = None) -> None:
        # run: how `ip netns exec` commands are run (commands.py; tests inject it).
        self.netns = netns
        self._command = run or commands.run_command

    def ensure_ip_forward(self) -> None:
        if self._read("/proc/sys/net/ipv4/ip_forward").strip() != "1":
            self._write("/proc/sys/net/ipv4/ip_forward", "1")
            log.info("enabled IPv4 forwarding (net.ipv4.ip_forward=1) for pynet bridge networks")

    def ensure_ipv6_forward(self) -> None:
        """net.ipv6.conf.all.forwarding=1, as Docker sets it for IPv6 bridge networks. Note
        that it makes interfaces with accept_ra=1 ignore router advertisements (accept_ra=2
        keeps them): logged, because a host configured by SLAAC may lose its default route."""
        path = "/proc/sys/net/ipv6/conf/all/forwarding"
        if self._read(path, missing="").strip() in ("1", ""):
            return
        self._write(path, "1")
        log.info("enabled IPv6 forwarding (net.ipv6.conf.all.forwarding=1) for pynet IPv6 bridge "
                 "networks; interfaces that take router advertisements need accept_ra=2 to keep "
                 "doing so")

    def ensure_route_localnet(self, bridge: str) -> None:
        path = f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet"
        if self._read(path, missing="").strip() not in ("1", ""):
            self._write(path, "1")

    def reset_route_localnet(self, bridge: str) -> None:
        """Off again, on a bridge pynet found with it off (a user's, left as found)."""
        path = f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet"
        if self._read(path, missing="").strip() == "1":
            self._write(path, "0")

    def ensure_hairpin(self, port: str) -> None:
        path = f"/sys/class/net/{port}/brport/hairpin_mode"
        current = self._read(path, missing="").strip()
        if current == "":
            log.warning("cannot set hairpin mode on %s (%s is missing): its container will not "
                        "reach its own published ports through the host's address", port, path)
        elif current != "1":
            self._write(path, "1")

    def uplinks(self) -> set[str]:
        """Bridges carrying an IPv4 or IPv6 default route (main table)."""
        # Both files have a line per route of every interface (a few per bridge): only the
        # lines that can be a default route are split, which keeps this flat in the number
        # of networks (it runs on every network change; issue 22).
        devices: set[str] = set()
        for line in self._read("/proc/net/route", missing="").splitlines()[1:]:
            if line.partition("\t")[2][:9] != "00000000\t":  # fields are tab-separated
                continue
            f = line.split()
            if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000" and int(f[3], 16) & RTF_UP:
                devices.add(f[0])
        default6 = "0" * 32 + " 00 "
        for line in self._read("/proc/net/ipv6_route", missing="").splitlines():
            if not line.startswith(default6):
                continue
            f = line.split()
            if (len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00"
                    and not int(f[8], 16) & RTF_REJECT and f[9] != "lo"):
                devices.add(f[9])
        return {d for d in devices if self._exists(f"/sys/class/net/{d}/bridge")}

    # --- file access, here or in a namespace ----------------------------------------
    def _read(self, path: str, missing: str | None = None) -> str:
        if self.netns is None:
            try:
                with open(path) as f:
                    return f.read()
            except FileNotFoundError:
                if missing is not None:
                    return missing
                raise FirewallError(f"{path} does not exist") from None
        proc = self._ns(["cat", path])
        if proc.returncode != 0:
            if missing is not None:
                return missing
            raise FirewallError(f"cannot read {path} in netns {self.netns}: {proc.stderr.strip()}")
        return proc.stdout

    def _write(self, path: str, value: str) -> None:
        if self.netns is None:
            try:
                with open(path, "w") as f:
                    f.write(value)
                return
            except OSError as exc:
                raise FirewallError(f"cannot set {path} to {value}: {exc.strerror}") from None
        proc = self._ns(["sh", "-c", 'printf %s "$1" > "$2"', "sh", value, path])
        if proc.returncode != 0:
            raise FirewallError(f"cannot set {path} to {value} in netns {self.netns}: "
                                f"{proc.stderr.strip()}")

    def _exists(self, path: str) -> bool:
        if self.netns is None:
            return os.path.exists(path)
        return self._ns(["test", "-e", path]).returncode == 0

    def _ns(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return self._command(["ip", "netns", "exec", self.netns, *argv], None, commands.timeout())
