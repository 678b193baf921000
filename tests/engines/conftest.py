"""The engine matrix: pynet against the newer Docker Engines of tests/harness/engines.py.

20.10 (the host's dockerd) is what the e2e tier runs in depth; this tier runs a lean smoke
over 20.10, 26.1 and 28.5, the same tests on each. One `bed` per engine per module: the engine's own dockerd (its own data-root,
exec-root, pidfile and socket, started and stopped here), one pynet plugin, the busybox
image, an "outside" namespace joined to the host by a veth, and a "LAN" veth for macvlan.
Every address is in 198.18.0.0/15; traffic stays between what the bed made and loopback.

The wall time of each bed (set-up, its tests, tear-down) is printed at the end of the run.
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.harness import engines  # noqa: E402
from tests.harness.busybox import ensure_busybox_image  # noqa: E402
from tests.harness.dockerd import (  # noqa: E402
    SHARED_DIRS,
    DockerDaemon,
    Snapshot,
    drop_empty_nft_tables,
    nft_tables,
    read_ip_forward,
    remove_empty_shared_dirs,
    restore_ip_forward,
)
from tests.harness.netns import Namespaces, NetnsError, require_root  # noqa: E402
from tests.harness.plugin import PluginProcess  # noqa: E402

# The host's 20.10 too: the e2e tier covers it in depth, but not IPv6 nor the crash below.
MATRIX = (engines.HOST_ENGINE, *engines.ENGINES)  # 20.10, 26.1, 28.5
OUTSIDE_SUBNET = "198.18.214.0/24"
HOST_IP, OUTSIDE_IP = "198.18.214.1", "198.18.214.2"
_HERE = Path(__file__).resolve().parent
_timings: dict[tuple[str, str], float] = {}  # (engine, test module): a bed per module


@dataclass
class Bed:
    engine: str
    dockerd: DockerDaemon
    plugin: PluginProcess
    image: str
    outside_ns: str  # a namespace reachable only through the host's address (HOST_IP)
    lan_parent: str  # root-namespace end of a veth: the macvlan parent
    lan_ns: str  # holds the other end ("lan", 198.18.213.254/24): a host on the LAN
    version: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def pytest_terminal_summary(terminalreporter) -> None:
    for (engine, module), seconds in _timings.items():
        terminalreporter.write_line(f"[engines] docker {engine} ({module}): bed set-up, tests and tear-down "
                                    f"took {seconds:.1f} s")


def _ip(*argv: str, check: bool = True) -> None:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")


@pytest.fixture(scope="module", params=MATRIX, ids=[f"docker{e}" for e in MATRIX])
def bed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    try:
        require_root()
    except NetnsError as exc:
        pytest.fail(str(exc), pytrace=False)
    engine = request.param
    started = time.monotonic()
    tables, absent, ip_forward = nft_tables(), {d for d in SHARED_DIRS if not d.exists()}, read_ip_forward()
    spaces = Namespaces()
    base = tmp_path_factory.mktemp(f"engine-{engine}")
    dockerd = DockerDaemon(base / "dockerd", engine=engine)
    plugin = PluginProcess(base / "pynet-state",
                           extra_env={"PYNET_DEFAULT_ADDRESS_POOLS": "base=198.19.224.0/19,size=24"})
    lan_parent = f"pnte{engine.replace('.', '')}"
    outside_link = f"pnto{engine.replace('.', '')}"
    try:
        dockerd.start()
        plugin.start()
        image = ensure_busybox_image(dockerd)
        outside, lan = spaces.make("out"), spaces.make("lan")
        _ip("link", "add", outside_link, "type", "veth", "peer", "name", "eth0", "netns", outside)
        _ip("addr", "add", f"{HOST_IP}/24", "dev", outside_link)
        _ip("link", "set", outside_link, "up")
        for argv in (("addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0"), ("link", "set", "eth0", "up"),
                     ("link", "set", "lo", "up")):
            _ip("-n", outside, *argv)
        _ip("link", "add", lan_parent, "type", "veth", "peer", "name", "lan", "netns", lan)
        _ip("link", "set", lan_parent, "up")
        for argv in (("addr", "add", "198.18.213.254/24", "dev", "lan"), ("link", "set", "lan", "up"),
                     ("link", "set", "lo", "up")):
            _ip("-n", lan, *argv)
        version = dockerd.cli("version", "--format", "{{.Server.Version}}").stdout.strip()
        yield Bed(engine, dockerd, plugin, image, outside, lan_parent, lan, version)
    finally:
        errors: list[str] = []
        if dockerd.running():
            if not plugin.running():
                plugin.start()
            errors += dockerd.remove_since(Snapshot())  # while the plugin answers
        plugin.stop()
        _remove_plugin_firewall()
        dockerd.stop()
        _ip("link", "del", outside_link, check=False)
        _ip("link", "del", lan_parent, check=False)
        left = spaces.close()
        drop_empty_nft_tables(tables)
        remove_empty_shared_dirs(absent)
        restore_ip_forward(ip_forward)
        _timings[engine, request.module.__name__.rpartition(".")[2]] = time.monotonic() - started
        if errors or left:
            pytest.fail(f"docker {engine} bed cleanup: {errors} namespaces left {left}", pytrace=False)


def _remove_plugin_firewall() -> None:
    from driver.firewall.nft_firewall import NftFirewall
    NftFirewall().remove_all()
