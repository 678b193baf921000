"""Talk to nftables through its JSON interface: `nft -j -f -` in a subprocess.

A subprocess (not libnftables through ctypes) because it can be pointed at a network
namespace with `ip netns exec` (the kernel tests use throwaway namespaces), costs a few
milliseconds per change, and a crash in it cannot take the plugin down.
"""
from __future__ import annotations

import json
import subprocess
from typing import Any

from . import commands
from .forward_accept import FirewallError
from .nft_rules import FAMILY, TABLE

TIMEOUT = commands.TIMEOUT


class Nft:
    def __init__(self, netns: str | None = None, binary: str = "nft", *,
                 run: commands.Runner | None = None, which: commands.Which | None = None) -> None:
        # run, which: how commands are run and binaries found (commands.py; tests inject them).
        if (which or commands.which)(binary) is None:
            raise FirewallError(f"{binary} is not installed; pynet writes its NAT and isolation "
                                "rules with nftables (Debian package nftables)")
        self._prefix = ["ip", "netns", "exec", netns] if netns else []
        self._binary = binary
        self._command = run or commands.run_command

    def apply(self, doc: dict[str, Any]) -> None:
        """Run one transaction: all of it is applied, or none (nft's batches are atomic)."""
        proc = self._run(["-j", "-f", "-"], json.dumps(doc))
        if proc.returncode != 0:
            raise FirewallError(f"nft refused pynet's rules: {proc.stderr.strip() or proc.returncode}")

    def text(self) -> str:
        """`nft list table inet pynet` (for people and golden files); empty if absent."""
        proc = self._run(["list", "table", FAMILY, TABLE])
        return proc.stdout if proc.returncode == 0 else ""

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        limit = commands.timeout()
        try:
            return self._command([*self._prefix, self._binary, *args], stdin, limit)
        except subprocess.TimeoutExpired:
            raise FirewallError(f"nft {' '.join(args)} did not finish within {limit:.1f} s") from None
