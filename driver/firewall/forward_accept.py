"""Let traffic through the iptables FORWARD chain for pynet bridges.

Why this exists: with br_netfilter loaded (bridge-nf-call-iptables=1), frames between two
ports of one bridge traverse iptables' FORWARD chain, where dockerd sets policy DROP. An
ACCEPT in pynet's own nftables table cannot override that: every base chain on a hook must
accept. So pynet keeps one chain of its own, PYNET-FORWARD, jumped to from FORWARD, that
accepts whatever enters or leaves a pynet bridge. It decides nothing: every restriction
(isolation, icc, internal networks, published ports) is in pynet's nftables table, see
nft_rules.py, whose drops no iptables ACCEPT can override.
Each network change edits only its own two rules: one `iptables-restore --noflush` per
binary appends them (or deletes them by their exact spec), atomically, touching no other
rule, so a create costs the same with 1 or 200 networks (issue 22). The chain is written
whole (flushed and refilled in one iptables-restore, equally atomic) when there is nothing
to edit yet (the first network), at plugin start (sync), when a network already known is
added again (a replayed CreateNetwork, a bridge re-made: this repairs drift), and when an
edit is refused (someone deleted the chain or one of its rules): so a restart, or any of
these, converges on exactly the rules of the networks, and `pynet doctor` (audit.py) names
any difference in between.
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
        bridge = network.bridge
        if bridge in self._bridges or not self._bridges:
            self._change(self._bridges | {bridge})  # repeated (repairs drift), or the first
        else:
            self._edit(self._bridges | {bridge}, "-A", bridge)

    def network_removed(self, network: NetworkRecord) -> None:
        bridge = network.bridge
        if bridge not in self._bridges:
            # Not pynet's to know of (restore dropped it, or it never got its rules): the
            # chain is written whole for the others, which removes any rule left for it.
            self._change(set(self._bridges))
        elif self._bridges == {bridge}:
            self._change(set())  # the last one: the chain and its jump go
        else:
            self._edit(self._bridges - {bridge}, "-D", bridge)

    def sync(self, networks: list[NetworkRecord]) -> None:
        self._change({n.bridge for n in networks})

    def _change(self, bridges: set) -> None:
        """The chain for `bridges`, written whole; the state changes only once the kernel
        took it. Without bridges the chain and its jump go: pynet leaves nothing in FORWARD
        it has no use for."""
        before, self._bridges = self._bridges, set(bridges)
        try:
            self._apply() if self._bridges else self.remove_all()
        except BaseException:
            self._bridges = before
            raise

    def _edit(self, bridges: set, verb: str, bridge: str) -> None:
        """One bridge's two rules appended (-A) or deleted (-D), leaving every other rule
        alone; the state becomes `bridges` once the kernel took it. A refused edit (the
        chain or a rule changed behind pynet's back) writes the chain whole instead."""
        try:
            self._restore(bridges, [f"{verb} {CHAIN} -{d} {bridge} -j ACCEPT" for d in ("i", "o")])
        except FirewallError as exc:
            log.warning("iptables refused an edit of %s (%s); writing the chain whole from "
                        "pynet's state", CHAIN, exc.message)
            self._change(bridges)

    def _restore(self, bridges: set, lines: list[str]) -> None:
        """Apply LINES (iptables-restore --noflush, one transaction per binary) and make
        sure of the jump; the state becomes `bridges` once every binary took them. (A
        binary refusing after another took them: the caller writes the chain whole, as
        for any failed change; NftFirewall syncs the state before back on failure.)"""
        script = "\n".join(["*filter", *lines, "COMMIT", ""])
        for binary in self._binaries:
            self._run([*self._prefix, f"{binary}-restore", "-w", commands.lock_wait(), "--noflush"],
                      script)
            self._ensure_jump(binary)
        self._bridges = set(bridges)

    def rules(self) -> list[str]:
        """The PYNET-FORWARD chain as iptables-restore lines (golden-tested)."""
        lines = []
        for bridge in sorted(self._bridges):
            lines.append(f"-A {CHAIN} -i {bridge} -j ACCEPT")
            lines.append(f"-A {CHAIN} -o {bridge} -j ACCEPT")
        return lines

    def _apply(self) -> None:
        """The whole chain: declared (which flushes it) and refilled in one transaction."""
        script = "\n".join(["*filter", f":{CHAIN} - [0:0]", *self.rules(), "COMMIT", ""])
        for binary in self._binaries:
            self._run([*self._prefix, f"{binary}-restore", "-w", commands.lock_wait(), "--noflush"], script)
            self._ensure_jump(binary)

    def _ensure_jump(self, binary: str) -> None:
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
