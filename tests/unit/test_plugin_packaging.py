"""The managed plugin's packaging, without building it: plugin/config.json speaks `pynet serve`'s
environment, and the build script replays exactly the Dockerfile instructions it knows."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from pynet.settings import Settings, add_serve_arguments, settings_from_args

ROOT = Path(__file__).resolve().parents[2]
CONFIG = json.loads((ROOT / "plugin" / "config.json").read_text())


def _build_module():
    spec = importlib.util.spec_from_file_location("build_plugin", ROOT / "scripts" / "build_plugin.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _build_module()


def _settings_from_env(monkeypatch, env: dict[str, str]) -> Settings:
    for name in list(os.environ):
        if name.startswith("PYNET_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return settings_from_args(parser.parse_args([]))


def test_every_plugin_variable_is_a_pynet_serve_variable():
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    known = {f"PYNET_{a.dest.upper()}" for a in parser._actions} | {"PYNET_DEFAULT_ADDRESS_POOLS"}
    names = [e["name"] for e in CONFIG["env"]]
    assert len(names) == len(set(names))
    assert set(names) <= known, set(names) - known


def test_the_readme_names_every_plugin_variable():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Environment, the same names as `pynet serve`")
    section = readme[start:readme.index("docker plugin set", start)]
    missing = [e["name"] for e in CONFIG["env"] if f"`{e['name']}`" not in section]
    assert not missing, f"README's managed-plugin environment list lacks {missing}"


def test_plugin_defaults_are_pynet_serve_defaults_but_socket_and_docker_host(monkeypatch):
    # An empty value must mean the default too: Docker sets every variable config.json lists.
    in_plugin = _settings_from_env(monkeypatch, {e["name"]: e["value"] for e in CONFIG["env"]})
    plain = _settings_from_env(monkeypatch, {})
    assert in_plugin.docker_host == "unix:///run/pynet/docker.sock"
    mounts = {m["name"]: m for m in CONFIG["mounts"]}
    assert mounts["docker-socket"]["destination"] == "/run/pynet/docker.sock"
    # The store is in the propagated mount: Docker makes its source itself, keeps it across
    # disable/enable and upgrade (only the rootfs is replaced), and removes it with the plugin.
    assert CONFIG["propagatedMount"] == in_plugin.state_dir
    assert in_plugin.socket == "/run/docker/plugins/" + CONFIG["interface"]["socket"]
    differ = {f for f in Settings.__dataclass_fields__
              if getattr(in_plugin, f) != getattr(plain, f)}
    assert differ == {"docker_host"}, differ


def test_settable_parts():
    mounts = {m["name"]: m for m in CONFIG["mounts"]}
    assert {n for n, m in mounts.items() if m.get("settable") == ["source"]} == {"docker-socket"}
    fixed = {e["name"] for e in CONFIG["env"] if "settable" not in e}
    assert fixed == {"PYNET_SOCKET", "PYNET_STATE_DIR"}
    assert CONFIG["network"] == {"type": "host"}


def test_enabling_needs_no_mount_source_made_by_hand():
    """Docker bind-mounts every source in config.json and runc fails on a missing one: the
    only one is the Docker socket, which exists wherever dockerd listens on its default."""
    assert [m["source"] for m in CONFIG["mounts"]] == ["/var/run/docker.sock"]
    assert CONFIG["propagatedMount"] == "/var/lib/pynet"


def test_the_dockerfile_is_what_the_script_replays():
    recipe = build.read_recipe(ROOT / "Dockerfile", CONFIG["entrypoint"])
    assert recipe.suite == "bookworm" and recipe.base_ref == "debian:bookworm-slim"
    assert {"python3", "python3-venv", "libnftables1", "nftables", "iptables"} <= set(recipe.packages)
    assert {s.keyword for s in recipe.steps} <= build.KNOWN


@pytest.mark.parametrize("line, refusal", [
    ("ENV A=1", "instruction 'ENV'"),
    ("USER nobody", "instruction 'USER'"),
    ("COPY --chown=1 pynet /src/pynet", "COPY flags"),
    ('RUN ["true"]', "exec) form"),
    ("COPY ../x /x", "only plain paths"),
    ("FROM debian:bookworm", "one stage only"),
    ('ENTRYPOINT ["pynet", "serve"]', "differs from plugin/config.json"),
])
def test_an_instruction_the_script_does_not_replay_is_refused(tmp_path, line, refusal):
    text = (ROOT / "Dockerfile").read_text().replace("WORKDIR /\n", f"WORKDIR /\n{line}\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    with pytest.raises(build.BuildError, match=refusal.replace("(", r"\(").replace(")", r"\)")):
        recipe = build.read_recipe(dockerfile, CONFIG["entrypoint"])
        for step in recipe.steps:  # COPY sources are checked as they are replayed
            if step.keyword == "COPY":
                build.copy_into(tmp_path / "rootfs", step.text, "/", "Dockerfile")


def test_from_must_be_the_base_arg(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("ARG BASE=debian:bookworm-slim\nARG DEBIAN_PACKAGES=python3\nFROM python:3.11\n")
    with pytest.raises(build.BuildError, match=r"FROM must be exactly \$\{BASE\}"):
        build.read_recipe(dockerfile, [])
