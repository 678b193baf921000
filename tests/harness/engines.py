"""Newer Docker Engines for the test suite, from Debian's own archive.

The host's Docker is Debian 12's docker.io 20.10. Debian 13 (trixie) carries docker.io 26.1
and Debian unstable (sid) 28.5. For each, `fetch()` debootstraps a minbase tree of that suite
into a cache directory (kept across runs) and installs docker.io there in a chroot whose
services cannot start (policy-rc.d exits 101). The engine's binaries then run NATIVELY on
this host from a directory of links put first on PATH: a chrooted dockerd would make
`docker exec` run commands in the chroot's filesystem instead of the container's. There is
no runc in that directory on purpose: the suites' runc needs glibc 2.38, so the host's
runc (Debian 12) is found next on PATH.

The archive URI comes from /etc/apt (no mirror host is written here).

    python3 -m tests.harness.engines fetch 26.1 28.5     # or scripts/fetch-engine.sh
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(os.environ.get("PYNET_ENGINE_CACHE", "/var/cache/pynet-engines"))
HOST_ENGINE = "20.10"  # Debian 12's docker.io, installed by scripts/install-test-deps.sh
# The binaries dockerd runs; docker (the CLI) is the engine's own client of the same version.
ENGINE_BINARIES = ("dockerd", "containerd", "containerd-shim-runc-v2", "docker-proxy", "docker-init", "docker")
_READY = ".pynet-engine-ready"  # written last: a tree without it is unfinished and is rebuilt


@dataclass(frozen=True)
class Engine:
    name: str  # "26.1": what PYNET_TEST_ENGINE and the test ids say
    suite: str  # Debian suite that carries it
    expired_release: bool = False  # the archive's Release file is past Valid-Until

    @property
    def root(self) -> Path:
        return CACHE_DIR / self.suite

    @property
    def bin_dir(self) -> Path:
        return self.root / "pynet-bin"


ENGINES = {e.name: e for e in (Engine("26.1", "trixie"), Engine("28.5", "sid", expired_release=True))}
KNOWN = (HOST_ENGINE, *ENGINES)


class EngineError(RuntimeError):
    pass


def selected() -> str:
    """The engine the e2e tier's dockerd is (PYNET_TEST_ENGINE, default the host's 20.10)."""
    name = os.environ.get("PYNET_TEST_ENGINE", HOST_ENGINE).strip() or HOST_ENGINE
    if name not in KNOWN:
        raise EngineError(f"PYNET_TEST_ENGINE={name!r}: not one of {', '.join(KNOWN)}")
    return name


def bin_dir(name: str) -> Path | None:
    """The directory to put first on PATH for engine NAME (None: the host's own), fetched
    into the cache first if needed."""
    if name == HOST_ENGINE:
        return None
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}: not one of {', '.join(KNOWN)}")
    return fetch(ENGINES[name])


def fetch(engine: Engine, log=None) -> Path:
    """Make ENGINE's tree and link directory if missing; idempotent, safe to run concurrently."""
    log = log or (lambda msg: print(f"[fetch-engine] {msg}", file=sys.stderr, flush=True))
    if (engine.root / _READY).exists():
        return engine.bin_dir
    if os.geteuid() != 0:
        raise EngineError("fetching an engine needs root (debootstrap, chroot)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{engine.suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (engine.root / _READY).exists():
            started = time.monotonic()
            _build(engine, log)
            log(f"docker {engine.name} ({engine.suite}) ready in {time.monotonic() - started:.0f} s")
    return engine.bin_dir


def _build(engine: Engine, log) -> None:
    for tool in ("debootstrap", "chroot"):
        if shutil.which(tool) is None:
            raise EngineError(f"{tool} is not installed (apt-get install debootstrap)")
    uri, keyring = debian_archive()
    root = engine.root
    if root.exists():  # an unfinished earlier attempt
        _umount_under(root)
        shutil.rmtree(root)
    log(f"debootstrap {engine.suite} from {uri} into {root}")
    _run(["debootstrap", "--variant=minbase", f"--keyring={keyring}", engine.suite, str(root), uri])
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\n# no service starts in this tree\nexit 101\n")
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    if engine.expired_release:
        (root / "etc/apt/apt.conf.d/99pynet-valid-until").write_text('Acquire::Check-Valid-Until "false";\n')
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    log(f"apt-get install docker.io in {root}")
    _run(["chroot", str(root), "apt-get", "update"], env=env)
    _run(["chroot", str(root), "apt-get", "install", "-y", "--no-install-recommends",
          "docker.io", "docker-cli", "docker-compose"], env=env)
    _run(["chroot", str(root), "apt-get", "clean"], env=env)
    link_dir = engine.bin_dir
    link_dir.mkdir(exist_ok=True)
    for binary in ENGINE_BINARIES:
        found = _find_in(root, binary)
        if found is None:
            raise EngineError(f"{binary} not found in {root} after installing docker.io")
        link = link_dir / binary
        link.unlink(missing_ok=True)
        link.symlink_to(found)
    # The check that the binaries really run natively (glibc), before calling it ready.
    out = _run([str(link_dir / "dockerd"), "--version"])
    if engine.name not in out:
        raise EngineError(f"{link_dir / 'dockerd'} --version says {out.strip()!r}, expected {engine.name}")
    (root / _READY).write_text(out)


def _find_in(root: Path, binary: str) -> Path | None:
    for d in ("usr/sbin", "usr/bin", "usr/libexec/docker", "sbin", "bin"):
        p = root / d / binary
        if p.is_file() and not p.is_symlink():
            return p
        if p.is_symlink():  # an absolute link inside the tree: resolve it within the tree
            target = Path(os.readlink(p))
            q = root / str(target).lstrip("/") if target.is_absolute() else p.parent / target
            if q.is_file():
                return q
    return None


def version_of(daemon_bin: str | Path) -> str:
    return _run([str(daemon_bin), "--version"]).strip()


def debian_archive() -> tuple[str, str]:
    """(URI, keyring) of the host's main Debian archive, read from /etc/apt: the first
    `deb` source with component main whose suites are not -security/-updates/-backports."""
    for uri, suites, comps, key in _apt_sources():
        if "main" in comps and any(not re.search(r"-(security|updates|backports)$", s) for s in suites) \
                and "security" not in uri:
            return uri, key or "/usr/share/keyrings/debian-archive-keyring.gpg"
    raise EngineError("no Debian 'main' archive source found in /etc/apt")


def _apt_sources():
    apt = Path("/etc/apt")
    for f in sorted(apt.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.lstrip().startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no" and "uris" in fields:
                key = fields.get("signed-by", "")
                yield (fields["uris"].split()[0], fields.get("suites", "").split(),
                       fields.get("components", "").split(), key if key.startswith("/") else "")
    for f in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            toks = line.split()
            if not toks or toks[0] != "deb":
                continue
            key = ""
            toks = toks[1:]
            if toks and toks[0].startswith("["):
                opts = []
                while toks:
                    t = toks.pop(0)
                    opts.append(t)
                    if t.endswith("]"):
                        break
                key = next((o.split("=", 1)[1].rstrip("]") for o in opts if "signed-by=" in o), "")
            if len(toks) >= 3:
                yield toks[0], [toks[1]], toks[2:], key


def _umount_under(root: Path) -> None:
    prefix = str(root).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [ln.split()[4] for ln in f if ln.split()[4].startswith(prefix)]
    for mp in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise EngineError(f"`{' '.join(argv)}` failed ({proc.returncode}):\n{(proc.stderr or proc.stdout)[-3000:]}")
    return proc.stdout


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "fetch":
        print("usage: python3 -m tests.harness.engines fetch ENGINE... (engines: "
              f"{', '.join(ENGINES)})", file=sys.stderr)
        return 2
    try:
        for name in argv[1:]:
            d = bin_dir(name)
            print(f"{name}: {d or 'the host dockerd'}")
    except EngineError as e:
        print(f"[fetch-engine] ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
