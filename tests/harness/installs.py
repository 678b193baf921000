"""Installs the way users make them, for tests/install.

* source_copy(dest): the worktree's files (tracked and new, not ignored) copied to DEST, so a
  `pip install DEST` builds there and leaves nothing in the worktree.
* ServedPlugin: a `pynet serve` command started with a temporary socket and state dir (never
  /run/docker/plugins), waited for, asked /Plugin.Activate, stopped by its PID.
* DistroTree: a Debian suite's minbase tree made once with debootstrap into the build cache
  (PYNET_BUILD_CACHE, default /var/cache/pynet-build; reused between runs), used through an
  overlay so every test starts from the pristine tree, in a chroot with /proc, /sys and /dev
  bound, a policy-rc.d that lets no service start, apt's downloads and lists kept in the
  cache, and the host's pip settings (scripts/build_plugin.py). Every mount is undone however
  the test ends.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.harness.plugin import call_socket

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import build_plugin  # noqa: E402  - the plugin build's archive, pip and mount helpers

CACHE = Path(os.environ.get("PYNET_BUILD_CACHE", "/var/cache/pynet-build"))
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def source_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = REPO_ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def activate(sock: Path) -> dict:
    status, _, body = call_socket(sock, "/Plugin.Activate", timeout=5)
    assert status == 200, (status, body)
    return json.loads(body)


class ServedPlugin:
    """`ARGV` (a `pynet serve` command line) in its own session; stop() ends it by PID."""

    def __init__(self, argv: list[str], sock: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.sock, self.log = sock, log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 30) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"pynet serve exited with {self.proc.returncode}:\n{self.output()}")
            if self.sock.exists():
                try:
                    activate(self.sock)
                    return time.monotonic() - started
                except OSError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"pynet serve did not answer on {self.sock} in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what it started
                self.proc.wait(5)
        self._out.close()


def host_archive() -> str:
    """The Debian archive of this machine's own apt source (PYNET_DEBIAN_MIRROR overrides)."""
    codename = ""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip().strip('"')
    archive = build_plugin.debian_archive(codename)
    # build_plugin falls back to a default mirror; here only the machine's own source will do.
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list"),
               *Path("/etc/apt/sources.list.d").glob("*.sources")]
    if not os.environ.get("PYNET_DEBIAN_MIRROR") and not any(
            p.is_file() and archive in p.read_text() for p in sources):
        raise AssertionError(f"no apt source of this machine names a Debian '{codename}' archive "
                             "(set PYNET_DEBIAN_MIRROR to one)")
    return archive


class DistroTree:
    def __init__(self, suite: str, work: Path) -> None:
        self.suite, self.work = suite, work
        self.root = work / "root"
        self.mounted: list[Path] = []
        self.pip_env = build_plugin.pip_environment()
        self.base: Path | None = None
        self.debootstrap_seconds = 0.0

    # --- the cached base -------------------------------------------------------------------
    def _base(self) -> Path:
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
        archive = host_archive()
        key = hashlib.sha256(json.dumps([self.suite, arch, archive, "minbase"]).encode()).hexdigest()[:12]
        home = CACHE / "distro"
        home.mkdir(parents=True, exist_ok=True)
        tree = home / f"{self.suite}-{arch}-{key}"
        with open(home / f"{self.suite}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be making the same tree
            if (tree / "complete").exists():
                return tree / "root"
            build_plugin.remove_tree(tree)
            started = time.monotonic()
            proc = subprocess.run(["debootstrap", "--variant=minbase", f"--arch={arch}", self.suite,
                                   str(tree / "root"), archive], capture_output=True, text=True)
            if proc.returncode != 0:
                build_plugin.remove_tree(tree)
                raise AssertionError(f"debootstrap {self.suite} from {archive} failed:\n"
                                     f"{(proc.stdout + proc.stderr)[-3000:]}")
            self.debootstrap_seconds = time.monotonic() - started
            (tree / "complete").write_text(f"{self.suite} {arch} {archive}\n")
        return tree / "root"

    # --- the chroot ---------------------------------------------------------------------------
    def __enter__(self) -> "DistroTree":
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _mount(self, *argv: str, target: Path) -> None:
        subprocess.run(["mount", *argv, str(target)], check=True, capture_output=True)
        self.mounted.append(target)

    def _bind(self, source: Path, inside: str, *, readonly: bool = False, recursive: bool = False) -> None:
        target = self.root / inside.lstrip("/")
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        self._mount("--rbind" if recursive else "--bind", str(source), target=target)
        if recursive:
            subprocess.run(["mount", "--make-rslave", str(target)], check=True)
        if readonly:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)

    def _open(self) -> None:
        self.base = self._base()
        for d in ("upper", "overlay-work"):
            (self.work / d).mkdir(parents=True)
        self.root.mkdir()
        self._mount("-t", "overlay", "overlay", "-o",
                    f"lowerdir={self.base},upperdir={self.work / 'upper'},workdir={self.work / 'overlay-work'}",
                    target=self.root)
        self._mount("-t", "proc", "proc", target=self.root / "proc")
        self._bind(Path("/sys"), "/sys", recursive=True)
        self._bind(Path("/dev"), "/dev", recursive=True)
        # apt's downloads and package lists outlive the test: the next run fetches only changes.
        apt_cache = CACHE / "distro" / f"{self.suite}-apt"
        for sub in ("archives/partial", "lists/partial"):
            (apt_cache / sub).mkdir(parents=True, exist_ok=True)
        self._bind(apt_cache / "archives", "/var/cache/apt/archives")
        self._bind(apt_cache / "lists", "/var/lib/apt/lists")
        pip_cache = CACHE / "pip"
        pip_cache.mkdir(parents=True, exist_ok=True)
        self._bind(pip_cache, "/run/pynet-build/pip-cache")
        for path in build_plugin.local_paths(list(self.pip_env.values())):
            if path.is_dir():
                self._bind(path, str(path), readonly=True)  # file:// indexes name their files by path
                continue
            # A file (a CA bundle, a constraints file) goes aside: at its own path it would be
            # a mount point the tree's packages cannot replace (ca-certificates writes there).
            aside = f"/run/pynet-host{path}"
            self._bind(path, aside, readonly=True)
            self.pip_env = {k: v.replace(str(path), aside) for k, v in self.pip_env.items()}
        policy = self.root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\n# no service starts in this tree\nexit 101\n")
        policy.chmod(0o755)
        shutil.copy2("/etc/resolv.conf", self.root / "etc/resolv.conf")
        source_copy(self.root / "src")

    def env(self) -> dict[str, str]:
        return {"PATH": PATH_ENV, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
                "PIP_CACHE_DIR": "/run/pynet-build/pip-cache", **self.pip_env}

    def argv(self, command: str, *, private_net: bool = False) -> list[str]:
        """bash -c COMMAND in the chroot (in a network namespace of its own if PRIVATE_NET)."""
        prefix = ["unshare", "--net"] if private_net else []
        return [*prefix, "chroot", str(self.root), "/bin/bash", "-c", command]

    def run(self, command: str, *, timeout: float = 600, private_net: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(command, private_net=private_net), env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        for point in build_plugin.mounts_under(self.root) + ([str(self.root)] if self.mounted else []):
            if subprocess.run(["umount", "-R", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-R", "-l", point], capture_output=True)
        self.mounted.clear()
        left = build_plugin.mounts_under(self.work)
        if left:
            raise AssertionError(f"mounts left under {self.work}: {left}")
        shutil.rmtree(self.work, ignore_errors=True)


def shell(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ARGV, failing the test with its output when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"`{shlex.join(argv)}` exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def fresh_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
