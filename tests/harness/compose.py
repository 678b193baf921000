"""Compose v2 as its users run it: `docker compose`, the CLI plugin of an engine's Debian tree.

tests/harness/engines.py installs `docker-compose` (Compose v2) next to docker.io in each
engine's tree: trixie's 2.26 beside 26.1, sid's 2.40 beside 28.5. The plugin is a static Go
binary, so like the engine it runs natively; the engine's own `docker` CLI finds it through a
private DOCKER_CONFIG whose cli-plugins/ links to it (the user's ~/.docker is never touched).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.harness import engines

# The Compose each engine's suite carries (what `docker compose version --short` must say).
COMPOSE_OF_ENGINE = {"26.1": "2.26", "28.5": "2.40"}
_PLUGIN_IN_TREE = "usr/libexec/docker/cli-plugins/docker-compose"


class ComposeError(RuntimeError):
    pass


def plugin_binary(engine: str) -> Path:
    """The Compose v2 CLI plugin of ENGINE's tree (fetched into the cache first if needed)."""
    if engine not in engines.ENGINES:
        raise ComposeError(f"no Compose v2 for engine {engine!r}: only {', '.join(engines.ENGINES)} carry one")
    try:
        engines.bin_dir(engine)
    except engines.EngineError as e:
        raise ComposeError(f"docker {engine}: {e}") from None
    binary = engines.ENGINES[engine].root / _PLUGIN_IN_TREE
    if not binary.is_file():
        raise ComposeError(f"{binary} is missing: the docker {engine} tree has no Compose v2 "
                           "(rebuild it: remove its directory, then scripts/fetch-engine.sh)")
    return binary


class Compose:
    """`docker compose -p PROJECT -f FILE ...` with ENGINE's docker CLI and Compose plugin,
    against the dockerd at DOCKER_HOST."""

    def __init__(self, engine: str, docker_host: str, file: Path, project: str, config_dir: Path) -> None:
        self.engine, self.file, self.project = engine, Path(file), project
        plugins = Path(config_dir) / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "docker-compose"
        link.unlink(missing_ok=True)
        link.symlink_to(plugin_binary(engine))
        bin_dir = engines.bin_dir(engine)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        self.env.update(DOCKER_HOST=docker_host, DOCKER_CONFIG=str(config_dir),
                        PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")

    def __call__(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "compose", "-p", self.project, "-f", str(self.file), *args]
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise ComposeError(f"`{' '.join(argv[1:])}` on docker {self.engine} failed ({proc.returncode}):\n"
                               f"{(proc.stderr or proc.stdout)[-2000:]}")
        return proc

    def version(self) -> str:
        return self("version", "--short").stdout.strip()
