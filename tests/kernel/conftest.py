"""Kernel tests: each runs against throwaway network namespaces it owns (the `ns` and
`make_netns` fixtures of tests/conftest.py, over tests/harness/netns.py).

They need root and fail (never skip) without it.
"""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)
