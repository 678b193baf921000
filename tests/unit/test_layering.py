"""The import rules of the architecture (README "Architecture"), read from the source with ast.

Packages are layers, from the bottom:

    pynet_core/             the core: store, errors, body decoding, deadline, defaults
    driver/  ipam_driver/   the two drivers
    pynet/                  the composition roots: the plugin app and the operator CLI

A module imports its own package and packages of lower layers only: the core imports nothing
else of pynet, a driver imports the core and never the other driver, and nothing imports the
composition roots. There are no exceptions. Besides:
- pure modules import only a few side-effect-free standard modules and other pure modules,
  and call no I/O builtin;
- pyroute2 is imported only by the netlink adapter, subprocess only by the firewall adapter.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Bottom first; a package may import only itself and the packages of the layers below it.
LAYERS = (("pynet_core",), ("driver", "ipam_driver"), ("pynet",))
PACKAGES = tuple(pkg for layer in LAYERS for pkg in layer)
LAYER_OF = {pkg: depth for depth, layer in enumerate(LAYERS) for pkg in layer}

PURE = {
    "pynet_core.errors", "pynet_core.defaults", "pynet_core.wire", "pynet_core.record_fields", "pynet_core.store.keys", "pynet_core.store.segments",
    "driver.options", "driver.naming", "driver.portmap", "driver.models", "driver.protocol",
    "driver.kinds.macvlan.parents", "driver.firewall.nft_rules", "driver.netlink.api",
    "driver.kinds.overlay.model", "driver.kinds.overlay.underlay", "driver.kinds.overlay.peers", "driver.kinds.overlay.liveness",
    "driver.kinds.overlay.admission", "driver.kinds.overlay.claims", "driver.kinds.overlay.tunnels",
    "driver.wireguard.api",
    "driver.names.table", "driver.names.resolvconf", "driver.names.limits", "driver.names.records",
    "driver.names.local", "driver.firewall.dns_rules",
    "ipam_driver.allocator", "ipam_driver.blocks", "ipam_driver.pool_id", "ipam_driver.options",
}
PURE_STDLIB = {"__future__", "abc", "bisect", "collections", "collections.abc", "dataclasses",
               "enum", "functools", "hashlib", "ipaddress", "itertools", "json", "math", "re",
               "string", "typing"}
IO_BUILTINS = {"open", "print", "input", "exec", "eval", "__import__"}
# Third-party or stdlib modules allowed only inside one adapter (a path prefix).
ADAPTER_ONLY = {
    "pyroute2": ("driver.netlink.pyroute2_netlink", "driver.wireguard.pyroute2_wg"),
    "subprocess": ("driver.firewall.", "driver.wireguard.keys", "driver.wireguard.userspace"),
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> list[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.append(prefix)
            # `from pkg import mod` may import a submodule: count pkg.mod too.
            found += [f"{prefix}.{alias.name}" for alias in node.names]
    return found


def io_calls_of(path: Path) -> list[str]:
    return [node.func.id for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in IO_BUILTINS]


def _rule(own: str, other: str) -> str:
    if LAYER_OF[other] == LAYER_OF[own]:
        return f"{own} and {other} are one layer and never import each other"
    below = [pkg for layer in LAYERS[:LAYER_OF[own]] for pkg in layer]
    return f"{own} may import only " + (" and ".join(below) if below else "itself")


def _top(name: str) -> str:
    return name.split(".")[0]


def _is_project(name: str, modules: set[str]) -> bool:
    return _top(name) in PACKAGES and name in modules


def violations(root: Path, pure: set[str] = PURE) -> list[str]:
    sources = {module_name(root, p): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    modules = set(sources)
    problems: list[str] = []
    for name, path in sources.items():
        imported = imports_of(root, path)
        tops = {_top(i) for i in imported}
        own = _top(name)
        for other in sorted(tops & set(PACKAGES) - {own}):
            if LAYER_OF[other] >= LAYER_OF[own]:
                problems.append(f"{name} imports {other}: {_rule(own, other)}")
        for module, allowed in ADAPTER_ONLY.items():
            if module in tops and not any(name == a or name.startswith(a) for a in allowed):
                problems.append(f"{name} imports {module}, which only "
                                f"{' and '.join(allowed)} may import")
        if name in pure:
            for imp in imported:
                if _top(imp) in PACKAGES:
                    # `from pkg import name` lists pkg.name too; only real modules count.
                    target = imp if imp in modules else None
                    if target is not None and target not in pure and target not in PACKAGES:
                        problems.append(f"{name} is pure but imports {target}, which is not")
                elif imp not in PURE_STDLIB and _top(imp) not in PURE_STDLIB and \
                        not (imp.rpartition(".")[0] in PURE_STDLIB):
                    problems.append(f"{name} is pure but imports {imp}")
            for call in io_calls_of(path):
                problems.append(f"{name} is pure but calls {call}()")
    missing = sorted(pure - modules)
    problems += [f"{m} is declared pure but does not exist" for m in missing]
    return problems


def test_the_tree_keeps_the_import_rules():
    assert violations(REPO) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_driver_importing_the_other_is_caught(tmp_path):
    root = _tree(tmp_path, {"driver/service.py": "from ipam_driver.pool_id import PoolId\n",
                            "ipam_driver/service.py": "from driver import models\n"})
    assert sorted(violations(root, pure=set())) == [
        "driver.service imports ipam_driver: driver and ipam_driver are one layer and never "
        "import each other",
        "ipam_driver.service imports driver: ipam_driver and driver are one layer and never "
        "import each other",
    ]


def test_the_core_imports_nothing_above_it(tmp_path):
    root = _tree(tmp_path, {"pynet_core/store/__init__.py": "",
                            "pynet_core/store/consul.py": "from driver.models import NetworkRecord\n",
                            "pynet_core/errors.py": "from pynet import metrics\n"})
    assert sorted(violations(root, pure=set())) == [
        "pynet_core.errors imports pynet: pynet_core may import only itself",
        "pynet_core.store.consul imports driver: pynet_core may import only itself",
    ]


def test_nothing_imports_the_composition_roots(tmp_path):
    root = _tree(tmp_path, {"pynet/app.py": "import driver.service\nimport ipam_driver.service\n"
                                            "import pynet_core.errors\n",
                            "pynet/ops/__init__.py": "",
                            "pynet/ops/doctor.py": "from driver.ledger import Ledger\n"
                                                   "from ipam_driver.leaks import AddressLeakCheck\n",
                            "driver/service.py": "from pynet.metrics import CALLS\n",
                            "ipam_driver/leaks.py": "import pynet.ops.doctor\n"})
    assert sorted(violations(root, pure=set())) == [
        "driver.service imports pynet: driver may import only pynet_core",
        "ipam_driver.leaks imports pynet: ipam_driver may import only pynet_core",
    ]


def test_every_package_reads_one_way():
    """No package both imports a driver and is imported by one: the picture of the packages
    has arrows pointing down only."""
    sources = {module_name(REPO, p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}
    edges = {(_top(name), _top(imp)) for name, path in sources.items()
             for imp in imports_of(REPO, path) if _top(imp) in PACKAGES and _top(imp) != _top(name)}
    assert not {(a, b) for a, b in edges if (b, a) in edges}
    assert edges <= {("driver", "pynet_core"), ("ipam_driver", "pynet_core"),
                     ("pynet", "pynet_core"), ("pynet", "driver"), ("pynet", "ipam_driver")}


def test_pure_modules_import_nothing_with_side_effects(tmp_path):
    root = _tree(tmp_path, {"driver/naming.py": "import os\nfrom . import store\n",
                            "driver/store.py": "import sqlite3\n",
                            "driver/models.py": "from .naming import x\nprint('hi')\n"})
    found = violations(root, pure={"driver.naming", "driver.models"})
    assert "driver.naming is pure but imports os" in found
    assert "driver.naming is pure but imports driver.store, which is not" in found
    assert "driver.models is pure but calls print()" in found
    assert not any("driver.models is pure but imports" in p for p in found)


def test_adapters_alone_import_pyroute2_and_subprocess(tmp_path):
    root = _tree(tmp_path, {"driver/kinds/bridge.py": "from pyroute2 import IPRoute\n",
                            "ipam_driver/leaks.py": "import subprocess\n",
                            "driver/netlink/pyroute2_netlink.py": "import pyroute2\n",
                            "driver/firewall/nft.py": "import subprocess\n"})
    assert sorted(violations(root, pure=set())) == [
        "driver.kinds.bridge imports pyroute2, which only driver.netlink.pyroute2_netlink and "
        "driver.wireguard.pyroute2_wg may import",
        "ipam_driver.leaks imports subprocess, which only driver.firewall. and driver.wireguard.keys "
        "and driver.wireguard.userspace may import",
    ]
