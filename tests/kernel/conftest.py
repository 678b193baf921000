"""Kernel tests: each runs against throwaway network namespaces it owns (the `ns` and
`make_netns` fixtures of tests/conftest.py, over tests/harness/netns.py).

They need root and fail (never skip) without it.
"""
from __future__ import annotations

import pytest

from tests.kernel.firewall_topology import Topology


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture
def topo(tmp_path):
    """A plugin with its firewall in a throwaway host namespace (tests/kernel/firewall_topology.py)."""
    t = Topology(tmp_path)
    try:
        t.start_plugin()
        yield t
    finally:
        t.close()
