"""Kernel tests: each runs against a throwaway network namespace it owns.

They need root and fail (never skip) without it.
"""
from __future__ import annotations

import os
import uuid

import pytest
from pyroute2 import netns


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture
def ns():
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root (CAP_NET_ADMIN) to create network namespaces")
    name = f"pnt-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)
