"""Let traffic through the iptables FORWARD chain for pynet bridges.

Why this exists: with br_netfilter loaded (bridge-nf-call-iptables=1), frames between two
ports of one bridge traverse iptables' FORWARD chain, where dockerd sets policy DROP. An
ACCEPT in pynet's own nftables table cannot override that: every base chain on a hook must
accept. So pynet keeps one chain of its own, PYNET-FORWARD, jumped to from FORWARD, that
accepts whatever enters or leaves a pynet bridge. It decides nothing: every restriction
(isolation, icc, internal networks, published ports) is in pynet's nftables table, see
nft_rules.py, whose drops no iptables ACCEPT can override.
The chain is rewritten whole with iptables-restore --noflush: atomic, and it touches no
rule that another program owns.
"""
from __future__ import annotations

import logging
import subprocess

from pynet_core.errors import PynetError
from driver.models import NetworkRecord

from . import commands

log = logging.getLogger(__name__)

CHAIN = "PYNET-FORWARD"


class FirewallError(PynetError):
    """iptables is missing or failed (category INTERNAL, PynetError's)."""


class ForwardAccept:
    def __init__(self, binaries: tuple[str, ...] = ("iptables", "ip6tables"),
                 netns: str | None = None, *, run: commands.Runner | None = None,
                 which: commands.Which | None = None) -> None:
        # netns: work in that network namespace (kernel tests) instead of this one.
        # run, which: how commands are run and binaries found (commands.py; tests inject them).
        self._prefix = ["ip", "netns", "exec", netns] if netns else []
        self._command = run or commands.run_command
        which = which or commands.which
        self._binaries = tuple(b for b in binaries if which(b))
        if "iptables" not in self._binaries:
            raise FirewallError("iptables is not installed; pynet needs it to let bridge traffic "
                                "past Docker's FORWARD policy")
        self._bridges: set[str] = set()

    def network_added(self, network: NetworkRecord) -> None:
        self._change(self._bridges | {network.bridge})

    def network_removed(self, network: NetworkRecord) -> None:
        self._change(self._bridges - {network.bridge})

    def sync(self, networks: list[NetworkRecord]) -> None:
        self._change({n.bridge for n in networks})

    def _change(self, bridges: set) -> None:
        """The chain for `bridges`; the state changes only once the kernel took it. Without
        bridges the chain and its jump go: pynet leaves nothing in FORWARD it has no use for."""
        before, self._bridges = self._bridges, set(bridges)
        try:
            self._apply() if self._bridges else self.remove_all()
        except BaseException:
            self._bridges = before
            raise

    def rules(self) -> list[str]:
        """The PYNET-FORWARD chain as iptables-restore lines (golden-tested)."""
        lines = []
        for bridge in sorted(self._bridges):
            lines.append(f"-A {CHAIN} -i {bridge} -j ACCEPT")
            lines.append(f"-A {CHAIN} -o {bridge} -j ACCEPT")
        return lines

    def _apply(self) -> None:
        script = "\n".join(["*filter", f":{CHAIN} - [0:0]", *self.rules(), "COMMIT", ""])
        for binary in self._binaries:
            self._run([*self._prefix, f"{binary}-restore", "-w", commands.lock_wait(), "--noflush"], script)
            # The jump is added once, at the top, and never duplicated.
            if self._run([*self._prefix, binary, "-w", commands.lock_wait(), "-C", "FORWARD", "-j", CHAIN], check=False) != 0:
                self._run([*self._prefix, binary, "-w", commands.lock_wait(), "-I", "FORWARD", "1", "-j", CHAIN])

    def remove_all(self) -> None:
        """Take the chain and its jump away entirely (tests, uninstall)."""
        for binary in self._binaries:
            for _ in range(16):  # the jump is added once; a few more copies were someone's
                if self._run([*self._prefix, binary, "-w", commands.lock_wait(), "-D", "FORWARD",
                              "-j", CHAIN], check=False) != 0:
                    break
            self._run([*self._prefix, binary, "-w", commands.lock_wait(), "-F", CHAIN], check=False)
            self._run([*self._prefix, binary, "-w", commands.lock_wait(), "-X", CHAIN], check=False)

    def _run(self, argv: list[str], stdin: str | None = None, check: bool = True) -> int:
        limit = commands.timeout()
        try:
            proc = self._command(argv, stdin, limit)
        except subprocess.TimeoutExpired:
            raise FirewallError(f"{' '.join(argv)} did not finish within {limit:.1f} s") from None
        if check and proc.returncode != 0:
            raise FirewallError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.returncode}")
        return proc.returncode
