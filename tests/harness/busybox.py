"""A tiny container image built from Debian's busybox-static (no registry is reachable).

The image holds /bin/busybox plus a symlink per applet, minimal /etc/passwd and /etc/group,
CMD ["sh"] and PATH=/bin. Run containers with `--pull never`.

Busybox quirks seen here:
* busybox-static 1.35 `wget` segfaults when given `-T`. Bound it with the `timeout` applet
  instead: use http_get_argv() (or `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 IP PORT`).
* `ping -W` is the per-reply wait in seconds; `-w` is the overall deadline.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tarfile
import time
from pathlib import Path

from tests.harness.dockerd import DockerDaemon

IMAGE = "pynet-test/busybox:1"

# Applets the tests rely on; building fails loudly if this busybox lacks one. Every other
# applet this busybox has gets a symlink too.
REQUIRED_APPLETS = ("sh", "ip", "ping", "wget", "nc", "sleep", "hostname", "ifconfig", "route", "arp",
                    "udhcpc", "cat", "ls", "httpd", "timeout", "nslookup", "echo", "printf", "grep")


def find_busybox() -> Path:
    """Debian's busybox-static installs /bin/busybox; it must be static (the image has no libc)."""
    path = Path("/bin/busybox")
    if not path.exists():
        found = shutil.which("busybox")
        if found is None:
            raise RuntimeError("busybox is not installed; run scripts/install-test-deps.sh (busybox-static)")
        path = Path(found)
    if _elf_interpreter(path.read_bytes()):
        raise RuntimeError(f"{path} is dynamically linked; install busybox-static instead of busybox")
    return path


def ensure_busybox_image(dockerd: DockerDaemon, tag: str = IMAGE) -> str:
    """Import the image into DOCKERD unless it is already there; return its tag."""
    if dockerd.cli("image", "inspect", tag, check=False).returncode == 0:
        return tag
    # Docker 26+ gives `docker exec` no default PATH in an image that has none.
    dockerd.cli("import", "--change", 'CMD ["sh"]', "--change", "ENV PATH=/bin", "-", tag,
                input=build_rootfs_tar(find_busybox()))
    return tag


def build_rootfs_tar(busybox: Path) -> bytes:
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    missing = sorted(set(REQUIRED_APPLETS) - set(applets))
    if missing:
        raise RuntimeError(f"{busybox} lacks applets the tests need: {missing}")
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700), ("var", 0o755),
                        ("var/www", 0o755), ("proc", 0o755), ("sys", 0o755), ("dev", 0o755)):
            tar.addfile(_info(d, tarfile.DIRTYPE, mode, now))
        data = busybox.read_bytes()
        tar.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, now, size=len(data)), io.BytesIO(data))
        for name in sorted(set(applets) - {"busybox"}):
            if "/" not in name:
                tar.addfile(_info(f"bin/{name}", tarfile.SYMTYPE, 0o777, now, link="busybox"))
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
                           ("etc/group", "root:x:0:\nnogroup:x:65534:\n")):
            raw = text.encode()
            tar.addfile(_info(name, tarfile.REGTYPE, 0o644, now, size=len(raw)), io.BytesIO(raw))
    return buf.getvalue()


def http_get_argv(url: str, seconds: int = 5) -> list[str]:
    """argv for an HTTP GET inside a busybox container, bounded without wget's broken -T."""
    return ["timeout", str(seconds), "wget", "-qO-", url]


def _info(name: str, kind: bytes, mode: int, mtime: int, *, size: int = 0, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.size, ti.linkname = kind, mode, mtime, size, link
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def _elf_interpreter(elf: bytes) -> bool:
    """True if the 64-bit little-endian ELF has a PT_INTERP program header (i.e. is dynamic)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise RuntimeError("busybox is not a 64-bit ELF binary")
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))
