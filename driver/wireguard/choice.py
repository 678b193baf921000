"""--wireguard=kernel|userspace|auto: which adapter carries the WireGuard link.

auto: the kernel when it has the wireguard module (loaded: /sys/module/wireguard; or loadable:
named in /lib/modules/<release>/modules.builtin or modules.dep, and the first
`link add type wireguard` loads it), else wireguard-go. kernel without the module is refused.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .api import BadWireGuardConfig, WireGuardLinks, WireGuardUnavailable

MODES = ("auto", "kernel", "userspace")
_MODULE = re.compile(r"(^|/)wireguard\.ko(\.(xz|zst|gz))?(:|$)", re.M)


def kernel_has_wireguard(sys_module: Path = Path("/sys/module/wireguard"),
                         modules_dir: Path = Path("/lib/modules"), release: str | None = None) -> bool:
    if sys_module.exists():
        return True
    release = release or os.uname().release
    for listing in ("modules.builtin", "modules.dep"):
        try:
            text = (modules_dir / release / listing).read_text()
        except OSError:
            continue
        if _MODULE.search(text):
            return True
    return False


def choose(mode: str, probe=kernel_has_wireguard) -> str:
    """'kernel' or 'userspace' for --wireguard=`mode`."""
    if mode not in MODES:
        raise BadWireGuardConfig(f"--wireguard must be one of {', '.join(MODES)}, got {mode!r:.40}")
    if mode == "userspace":
        return "userspace"
    has = probe()
    if mode == "kernel" and not has:
        raise WireGuardUnavailable("--wireguard=kernel: this kernel has no wireguard module "
                                   "(use --wireguard=userspace or auto for wireguard-go)")
    return "kernel" if has else "userspace"


def make_links(mode: str = "auto", probe=kernel_has_wireguard, **userspace_options) -> WireGuardLinks:
    if choose(mode, probe) == "kernel":
        from .kernel import KernelWireGuard
        return KernelWireGuard()
    from .userspace import UserspaceWireGuard
    return UserspaceWireGuard(**userspace_options)
