"""Install tests: pynet installed as users install it (pip into a fresh virtualenv, pipx, the
README's scripts in a Debian 13 tree), then started for real. They need root, the network
to the package indexes the machine's apt and pip settings name, and fail (never skip)
without them. They touch nothing shared: temporary sockets and state directories, a private
network namespace for every `pynet serve`, and the build cache under its own lock."""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/install" in str(item.fspath):
            item.add_marker(pytest.mark.install)
