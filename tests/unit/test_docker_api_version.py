"""Docker's API version floor: every docker SDK client in pynet negotiates its version.

dockerd 20.10 speaks API 1.41 at most; Docker 29 refuses anything older than 1.44 by default
(daemon/config: defaultMinAPIVersion). A pinned version works with one end of that range
only, and docker-py 7's default (1.44 and newer) is refused by 20.10. `version="auto"` asks
dockerd first, so one client reaches 20.10 to 29. tests/engines proves it on real engines.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pynet", "pynet_core", "driver", "ipam_driver")
CLIENTS = {"APIClient", "DockerClient", "from_env"}


def _client_calls():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    if name in CLIENTS:
                        yield f"{path.relative_to(ROOT)}:{node.lineno}", node


def test_every_docker_client_negotiates_the_api_version():
    calls = list(_client_calls())
    assert calls, "no docker SDK client found: this test looks in the wrong place"
    pinned = []
    for where, node in calls:
        version = next((k.value for k in node.keywords if k.arg == "version"), None)
        if not (isinstance(version, ast.Constant) and version.value == "auto"):
            pinned.append(where)
    assert not pinned, f"docker clients without version='auto' (pinned or docker-py's default): {pinned}"
