"""The commands the firewall runs (iptables for its FORWARD shim, `ip netns exec` for the
kernel settings of a test namespace): the one place in pynet that starts subprocesses.
nftables is not one of them: it is driven in-process through libnftables (nft.py).

ForwardAccept and KernelKnobs take a `run` (and, where they look binaries up, a
`which`) so that tests can build them without the binaries and see every command they
would run. The defaults below are what the plugin uses.
"""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence

from pynet_core import deadline

TIMEOUT = 15.0
# iptables waits this long (at most) for the xtables lock another program holds.
LOCK_WAIT = 5

# run(argv, stdin, timeout) -> the finished process (text mode, output captured); it raises
# subprocess.TimeoutExpired when the command outlives `timeout`.
Runner = Callable[[Sequence[str], "str | None", float], "subprocess.CompletedProcess[str]"]
Which = Callable[[str], "str | None"]


def run_command(argv: Sequence[str], stdin: str | None = None,
                timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), input=stdin, text=True, capture_output=True, timeout=timeout)


def timeout() -> float:
    """How long a command started now may run: TIMEOUT, cut to what the plugin call's
    budget has left (dockerd must get its answer in time even when iptables stalls)."""
    return deadline.clamp(TIMEOUT) or TIMEOUT


def lock_wait() -> str:
    """iptables' -w: seconds to wait for the xtables lock, within the call's budget."""
    left = deadline.remaining()
    return str(LOCK_WAIT if left is None else max(1, min(LOCK_WAIT, int(left))))


def which(binary: str) -> str | None:
    return shutil.which(binary)
