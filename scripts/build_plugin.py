"""Build pynet's managed plugin (config.json + rootfs/) with no image registry.

Run through scripts/build-plugin.sh, which documents the command line. The design:

* The Dockerfile is the one description of the root filesystem. Its base image is the build
  ARG BASE (debian:<suite>-slim); this script makes that base itself, with debootstrap
  --variant=minbase of the same suite and the Dockerfile's ARG DEBIAN_PACKAGES included, so
  nothing comes from an image registry.
* It then replays the Dockerfile's instructions in a chroot of that tree. It understands
  exactly ARG, FROM ${BASE}, WORKDIR, COPY (context files, no flags) and shell-form RUN, plus
  an ENTRYPOINT that must equal plugin/config.json's; any other instruction or form is refused,
  so the Dockerfile cannot say something this replay would silently do differently from
  `docker build`. No dockerd is needed to build.
* pip inside the chroot gets the host's pip configuration (PIP_* variables and `pip config`
  settings), and the local files and file:// indexes it names are bind-mounted read-only at
  the same paths, so a machine whose PyPI comes through a mirror builds the same way.
* Cached under the cache dir (default /var/cache/pynet-build): the debootstrap tree as a tar,
  keyed by suite, package list, archive URI and architecture, and pip's cache. --no-cache
  uses neither (and refreshes the base tar).
* The plugin directory is written to -o DIR; if a dockerd answers (DOCKER_HOST, else the
  default socket), the plugin NAME is created there, replacing a disabled one of that name.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
CONFIG = REPO / "plugin" / "config.json"
DEFAULT_CACHE = Path(os.environ.get("PYNET_BUILD_CACHE", "/var/cache/pynet-build"))
KNOWN = {"ARG", "FROM", "WORKDIR", "COPY", "RUN", "ENTRYPOINT"}
# Where pip's cache appears inside the chroot during RUN (a bind mount, never in the rootfs).
CHROOT_PIP_CACHE = "/run/pynet-build/pip-cache"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg: str) -> None:
    print(f"[build-plugin] {msg}", file=sys.stderr, flush=True)


class BuildError(Exception):
    pass


# ---- the Dockerfile ---------------------------------------------------------------------------

@dataclass
class Instruction:
    line: int
    keyword: str
    text: str


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped, as Docker
    reads them; a parser directive or an unknown instruction is refused."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if re.match(r"#\s*(syntax|escape|check)\s*=", stripped, re.I) and not out and not pending:
            raise BuildError(f"{path.name}:{number}: parser directive {stripped!r} is not supported")
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        text = " ".join(p.strip() for p in pending)
        pending = []
        keyword, _, rest = text.partition(" ")
        if keyword.upper() not in KNOWN:
            raise BuildError(f"{path.name}:{start}: instruction {keyword!r} is not one the build "
                             f"script replays ({', '.join(sorted(KNOWN))}); extend "
                             "scripts/build_plugin.py first or the two builds would differ")
        out.append(Instruction(start, keyword.upper(), rest.strip()))
    if pending:
        raise BuildError(f"{path.name}: ends inside a continued line")
    return out


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def substitute(text: str, values: dict[str, str], where: str) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise BuildError(f"{where}: ${name} is not a declared ARG")
        return values[name]
    return _VAR.sub(one, text)


def parse_arg(text: str, where: str) -> tuple[str, str | None]:
    m = re.fullmatch(r"(\w+)(?:=(.*))?", text)
    if not m:
        raise BuildError(f"{where}: ARG {text!r}: expected NAME or NAME=VALUE")
    value = m.group(2)
    if value is not None and len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return m.group(1), value


@dataclass
class Recipe:
    global_args: dict[str, str]
    base_ref: str                     # BASE's default, e.g. debian:bookworm-slim
    suite: str
    packages: list[str]
    steps: list[Instruction] = field(default_factory=list)   # after FROM


def read_recipe(path: Path, entrypoint: list[str]) -> Recipe:
    instructions = parse_dockerfile(path)
    global_args: dict[str, str] = {}
    index = 0
    for index, ins in enumerate(instructions):
        where = f"{path.name}:{ins.line}"
        if ins.keyword == "FROM":
            if ins.text not in ("${BASE}", "$BASE"):
                raise BuildError(f"{where}: FROM {ins.text!r}: the build script makes the base itself, "
                                 "so FROM must be exactly ${BASE}")
            break
        if ins.keyword != "ARG":
            raise BuildError(f"{where}: only ARG may come before FROM")
        name, value = parse_arg(ins.text, where)
        if value is None:
            raise BuildError(f"{where}: ARG {name} before FROM needs a default")
        global_args[name] = value
    else:
        raise BuildError(f"{path.name}: no FROM")
    base = global_args.get("BASE", "")
    m = re.fullmatch(r"(?:docker\.io/)?(?:library/)?debian:([a-z]+)(?:-slim)?", base)
    if not m:
        raise BuildError(f"{path.name}: ARG BASE={base!r}: expected debian:<suite>[-slim], "
                         "the image the debootstrap base stands in for")
    packages = global_args.get("DEBIAN_PACKAGES", "").split()
    if not packages:
        raise BuildError(f"{path.name}: ARG DEBIAN_PACKAGES (the base's extra packages) is missing")
    steps = instructions[index + 1:]
    for ins in steps:
        where = f"{path.name}:{ins.line}"
        if ins.keyword == "FROM":
            raise BuildError(f"{where}: one stage only")
        if ins.keyword == "ENTRYPOINT":
            try:
                value = json.loads(ins.text)
            except ValueError:
                raise BuildError(f"{where}: ENTRYPOINT must be in JSON form") from None
            if value != entrypoint:
                raise BuildError(f"{where}: ENTRYPOINT {value} differs from plugin/config.json's "
                                 f"entrypoint {entrypoint}: the plugin runs config.json's")
        if ins.keyword == "RUN" and ins.text.startswith("["):
            raise BuildError(f"{where}: RUN in JSON (exec) form is not replayed; use the shell form")
        if ins.keyword == "COPY" and ins.text.startswith("--"):
            raise BuildError(f"{where}: COPY flags ({ins.text.split()[0]}) are not replayed")
    return Recipe(global_args, base, m.group(1), packages, steps)


# ---- the host: archive, pip configuration, mounts ---------------------------------------------

def debian_archive(suite: str) -> str:
    """The URI of the host's apt source for SUITE main (deb822 first, then one-line form)."""
    override = os.environ.get("PYNET_DEBIAN_MIRROR")
    if override:
        return override
    for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", Path(f).read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    k, _, v = line.partition(":")
                    fields[k.strip().lower()] = v.strip()
            if suite in fields.get("suites", "").split() and "main" in fields.get("components", "").split() \
                    and "deb" in fields.get("types", "deb").split():
                return fields.get("uris", "").split()[0]
    for f in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        try:
            lines = Path(f).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 4 and words[0] == "deb" and words[2] == suite and "main" in words[3:]:
                return words[1]
    return "http://deb.debian.org/debian"


def pip_environment() -> dict[str, str]:
    """The host's pip settings as PIP_* variables (environment first, then `pip config`)."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith("PIP_") or k.lower() in ("http_proxy", "https_proxy", "no_proxy")}
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                                text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    for line in listed.splitlines():
        m = re.fullmatch(r"([^.\s]*)\.([\w-]+)='(.*)'", line.strip())
        if m and m.group(1) in ("global", "install", ":env:"):
            env.setdefault("PIP_" + m.group(2).upper().replace("-", "_"), m.group(3))
    env.pop("PIP_CACHE_DIR", None)
    env.pop("PIP_NO_CACHE_DIR", None)
    return env


def local_paths(values: list[str]) -> list[Path]:
    """Existing absolute paths (plain or file://) named in pip settings."""
    found: list[Path] = []
    for value in values:
        for word in value.split():
            path = word
            if word.startswith("file://"):
                # An index's pages link to files beside it (../../files/...): mount its parent.
                path = os.path.dirname(word[len("file://"):].rstrip("/"))
            if path.startswith("/") and os.path.exists(path):
                p = Path(os.path.realpath(path))
                if p not in found:
                    found.append(p)
    return found


class Mounts:
    """Mounts made under a rootfs for RUN, undone (in reverse) however the build ends, with
    the mount points this made for them: none of it stays in the plugin."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.points: list[Path] = []
        self.made: list[Path] = []  # the topmost path created for each mount point

    def bind(self, source: Path, target: str, readonly: bool = True) -> None:
        dest = self.root / target.lstrip("/")
        if dest.is_symlink() or (dest.exists() and dest.is_dir() != source.is_dir()):
            raise BuildError(f"cannot mount {source} at {target} in the rootfs: something else is there")
        top = dest
        while not top.parent.exists():
            top = top.parent
        if not dest.exists():
            self.made.append(top)
        if source.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.touch(exist_ok=True)
        run(["mount", "--rbind" if target == "/dev" else "--bind", str(source), str(dest)])
        self.points.append(dest)
        if readonly:
            run(["mount", "-o", "remount,bind,ro", str(dest)])

    def proc(self) -> None:
        dest = self.root / "proc"
        dest.mkdir(exist_ok=True)
        run(["mount", "-t", "proc", "proc", str(dest)])
        self.points.append(dest)

    def undo(self) -> None:
        for point in reversed(self.points):
            if subprocess.run(["umount", "-R", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-R", "-l", str(point)], capture_output=True)
        self.points.clear()
        if mounts_under(self.root):
            raise BuildError(f"mounts under {self.root} survived the build step; not cleaning up")
        for top in reversed(self.made):
            if top.is_dir():
                if all(p.is_dir() or p.stat().st_size == 0 for p in top.rglob("*")):
                    shutil.rmtree(top)
            elif top.exists() and top.stat().st_size == 0:
                top.unlink()
        self.made.clear()


def mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def remove_tree(root: Path) -> None:
    """rm -rf ROOT, after unmounting anything a killed build left mounted inside it."""
    for point in mounts_under(root):
        subprocess.run(["umount", "-R", "-l", point], capture_output=True)
    if mounts_under(root):
        raise BuildError(f"{root} still has mounts inside; not removing it")
    shutil.rmtree(root, ignore_errors=True)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, **kwargs)
    if proc.returncode != 0:
        raise BuildError(f"`{shlex.join(argv)}` failed with exit code {proc.returncode}")
    return proc


# ---- the base -------------------------------------------------------------------------------

def base_tarball(recipe: Recipe, cache: Path, use_cache: bool) -> Path:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip() \
        or platform.machine()
    mirror = debian_archive(recipe.suite)
    identity = json.dumps({"suite": recipe.suite, "variant": "minbase", "arch": arch, "mirror": mirror,
                           "packages": sorted(recipe.packages)}, sort_keys=True)
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    tar = cache / "base" / f"{recipe.suite}-{arch}-{key}.tar"
    if use_cache and tar.exists():
        log(f"base: cached {tar}")
        return tar
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (apt-get install debootstrap)")
    tar.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-", dir=tar.parent))
    try:
        log(f"base: debootstrap --variant=minbase {recipe.suite} from {mirror} "
            f"with {','.join(recipe.packages)}")
        started = time.monotonic()
        proc = subprocess.run(["debootstrap", "--variant=minbase", f"--arch={arch}",
                               f"--include={','.join(recipe.packages)}", recipe.suite,
                               str(work / "root"), mirror], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            debootstrap_log = work / "root" / "debootstrap" / "debootstrap.log"
            if debootstrap_log.exists():
                tail += "\n--- debootstrap.log ---\n" + "\n".join(debootstrap_log.read_text().splitlines()[-15:])
            raise BuildError(f"debootstrap failed (exit {proc.returncode}):\n{tail}")
        log(f"base: debootstrap took {time.monotonic() - started:.0f} s")
        (work / "identity.json").write_text(identity + "\n")
        run(["tar", "-C", str(work / "root"), "--numeric-owner", "-cf", str(work / "base.tar"), "."])
        os.replace(work / "base.tar", tar)
        (tar.with_suffix(".json")).write_text(identity + "\n")
    finally:
        remove_tree(work)
    return tar


# ---- the replay -------------------------------------------------------------------------------

def copy_into(rootfs: Path, text: str, workdir: str, where: str) -> None:
    parts = shlex.split(text)
    if len(parts) < 2:
        raise BuildError(f"{where}: COPY needs a source and a destination")
    *sources, dest = parts
    dest_path = dest if dest.startswith("/") else os.path.join(workdir, dest)
    into_dir = dest.endswith("/") or len(sources) > 1
    for src in sources:
        if any(c in src for c in "*?[") or src.startswith("/") or ".." in Path(src).parts:
            raise BuildError(f"{where}: COPY source {src!r}: only plain paths inside the context")
        source = REPO / src
        if not source.exists():
            raise BuildError(f"{where}: COPY source {src!r} does not exist")
        target = rootfs / dest_path.lstrip("/")
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))  # as .dockerignore says
        else:
            if into_dir:
                target.mkdir(parents=True, exist_ok=True)
                target = target / source.name
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def replay(recipe: Recipe, rootfs: Path, pip_cache: Path | None) -> None:
    args: dict[str, str] = {}
    workdir = "/"
    pip_env = pip_environment()
    for ins in recipe.steps:
        where = f"Dockerfile:{ins.line}"
        started = time.monotonic()
        if ins.keyword == "ARG":
            name, value = parse_arg(ins.text, where)
            args[name] = value if value is not None else recipe.global_args.get(name, "")
            continue
        if ins.keyword == "ENTRYPOINT":
            continue  # checked against config.json when read; the plugin runs config.json's
        if ins.keyword == "WORKDIR":
            workdir = os.path.join(workdir, substitute(ins.text, args, where))
            (rootfs / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            continue
        if ins.keyword == "COPY":
            log(f"COPY {ins.text}")
            copy_into(rootfs, substitute(ins.text, args, where), workdir, where)
            continue
        assert ins.keyword == "RUN"
        log(f"RUN {ins.text[:100]}{'...' if len(ins.text) > 100 else ''}")
        run_in_chroot(rootfs, ins.text, workdir, args, pip_env, pip_cache, where)
        log(f"    took {time.monotonic() - started:.1f} s")


def run_in_chroot(rootfs: Path, command: str, workdir: str, args: dict[str, str],
                  pip_env: dict[str, str], pip_cache: Path | None, where: str) -> None:
    mounts = Mounts(rootfs)
    resolv = rootfs / "etc" / "resolv.conf"
    link = os.readlink(resolv) if resolv.is_symlink() else None
    saved = resolv.read_bytes() if link is None and resolv.is_file() else None
    try:
        mounts.proc()
        mounts.bind(Path("/dev"), "/dev", readonly=False)
        for path in local_paths(list(pip_env.values())):
            mounts.bind(path, str(path))
        env = {"PATH": PATH_ENV, "HOME": "/root", "LANG": "C.UTF-8", **args, **pip_env}
        if pip_cache is not None:
            pip_cache.mkdir(parents=True, exist_ok=True)
            mounts.bind(pip_cache, CHROOT_PIP_CACHE, readonly=False)
            env["PIP_CACHE_DIR"] = CHROOT_PIP_CACHE
        else:
            env["PIP_NO_CACHE_DIR"] = "1"
        if Path("/etc/resolv.conf").exists():  # names of a mirror or proxy, as docker build has them
            if resolv.is_symlink():
                resolv.unlink()
            shutil.copyfile("/etc/resolv.conf", resolv)
        proc = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", f"cd {shlex.quote(workdir)} && {command}"],
                              env=env)
        if proc.returncode != 0:
            raise BuildError(f"{where}: RUN failed with exit code {proc.returncode}")
    finally:
        mounts.undo()
        resolv.unlink(missing_ok=True)
        if saved is not None:
            resolv.write_bytes(saved)
        elif link is not None:
            resolv.symlink_to(link)


# ---- the plugin -------------------------------------------------------------------------------

def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def create_plugin(name: str, out: Path) -> None:
    inspect = subprocess.run(["docker", "plugin", "inspect", "--format", "{{.Enabled}}", name],
                             capture_output=True, text=True)
    if inspect.returncode == 0:
        if inspect.stdout.strip() == "true":
            raise BuildError(f"plugin {name} exists and is enabled; `docker plugin disable {name}` "
                             "(-f while networks use it) and run this again, or build under another "
                             "NAME and `docker plugin upgrade` (README, Managed plugin)")
        log(f"removing the disabled plugin {name}")
        run(["docker", "plugin", "rm", name], stdout=subprocess.DEVNULL)
    started = time.monotonic()
    run(["docker", "plugin", "create", name, str(out)], stdout=subprocess.DEVNULL)
    log(f"created plugin {name} in {time.monotonic() - started:.1f} s (disabled: "
        f"`docker plugin set` what you need, then `docker plugin enable {name}`)")


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-plugin.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", default="pynet:latest", help="plugin name (default pynet:latest)")
    parser.add_argument("-o", "--out", type=Path, default=REPO / "build" / "plugin",
                        help="plugin directory to write (default build/plugin)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help=f"cache of base tarballs and pip (default {DEFAULT_CACHE}, or PYNET_BUILD_CACHE)")
    parser.add_argument("--no-cache", action="store_true", help="build the base and every wheel afresh")
    parser.add_argument("--no-create", action="store_true", help="only write the plugin directory")
    opts = parser.parse_args(argv)
    if os.geteuid() != 0:
        log("must run as root (debootstrap, chroot, mounts)")
        return 1
    started = time.monotonic()
    try:
        config = json.loads(CONFIG.read_text())
        recipe = read_recipe(DOCKERFILE, config.get("entrypoint", []))
        out = opts.out.resolve()
        if out == REPO or REPO.is_relative_to(out) or out == Path("/"):
            raise BuildError(f"-o {out}: refusing to replace that directory")
        tar = base_tarball(recipe, opts.cache_dir, not opts.no_cache)
        staging = out.parent / f".{out.name}.building"
        remove_tree(staging)
        (staging / "rootfs").mkdir(parents=True)
        try:
            run(["tar", "-C", str(staging / "rootfs"), "--numeric-owner", "-xpf", str(tar)])
            replay(recipe, staging / "rootfs", None if opts.no_cache else opts.cache_dir / "pip")
            shutil.copyfile(CONFIG, staging / "config.json")
            remove_tree(out)
            os.replace(staging, out)
        finally:
            remove_tree(staging)
        size = du(out / "rootfs")
        log(f"plugin directory {out}: rootfs {size / 1e6:.0f} MB, built in {time.monotonic() - started:.0f} s")
        if opts.no_create:
            pass
        elif docker_answers():
            create_plugin(opts.name, out)
        else:
            log(f"no dockerd answers (DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')}); install it "
                f"on a node with `docker plugin create {opts.name} {out}`")
    except BuildError as exc:
        log(f"ERROR: {exc}")
        return 1
    log(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
