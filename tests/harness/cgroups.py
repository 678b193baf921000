"""The cgroups of a private `--cgroup-parent`: find them, end their processes, remove them.

Used by the single-host dockerd (tests/harness/dockerd.py) and by every simulated host of
the multi-host bed (tests/harness/multihost.py). With the cgroupfs driver dockerd puts each
container in <hierarchy>/<parent>/<id>:

* cgroup v2 alone (/sys/fs/cgroup is the unified hierarchy, cgroup.controllers at its top):
  the one directory /sys/fs/cgroup/<parent>;
* cgroup v1 or hybrid (/sys/fs/cgroup is a tmpfs with one mount per controller, and maybe
  the v2 tree at /sys/fs/cgroup/unified): /sys/fs/cgroup/<hierarchy>/<parent> in each.

Nothing in these cgroups belongs to anyone but the daemon that was given that parent.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def unified_only(root: Path = ROOT) -> bool:
    """True when `root` is itself the cgroup v2 hierarchy (no v1 controllers beside it)."""
    return (root / "cgroup.controllers").is_file()


def cgroup_dirs(parent: str, root: Path = ROOT) -> list[Path]:
    """The existing directories of cgroup `parent`, one per hierarchy."""
    if unified_only(root):
        candidates = [root / parent]
    else:
        candidates = sorted(root.glob(f"*/{parent}"))
    return [d for d in candidates if d.is_dir()]


def cgroup_pids(parent: str, root: Path = ROOT) -> set[int]:
    """Every process in `parent` or in a cgroup below it, in any hierarchy."""
    pids: set[int] = set()
    for d in cgroup_dirs(parent, root):
        for procs in d.glob("**/cgroup.procs"):
            try:
                pids |= {int(x) for x in procs.read_text().split()}
            except (OSError, ValueError):
                pass
    return pids


def _alive(pid: int) -> bool:
    """PID exists and is not a zombie (a zombie may still be listed until it is reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_cgroup_procs(parent: str, timeout: float = 5.0, root: Path = ROOT) -> set[int]:
    """SIGKILL every process in the cgroups of `parent`, and wait (up to `timeout` s) until
    none is left alive there. Returns the PIDs still alive (empty when all went)."""
    pids = {p for p in cgroup_pids(parent, root) if _alive(p)}
    deadline = time.monotonic() + timeout
    while pids:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
        pids = {p for p in cgroup_pids(parent, root) if _alive(p)}
    return pids


def rmdir_cgroups(parent: str, root: Path = ROOT) -> None:
    """Remove the (empty) cgroups of `parent`, children first; a busy one stays."""
    for d in cgroup_dirs(parent, root):
        for sub in sorted((p for p in d.glob("**/") if p != d), key=lambda p: len(str(p)), reverse=True):
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            d.rmdir()
        except OSError:
            pass
