"""Shared scaffolding for benchmarks: a private dockerd + pynet, side-by-side timing, ratios.

Benchmarks are not tests: they print figures, pynet against Docker's built-in driver measured
in the same run on the same machine, so the ratio means something even on a noisy host.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.busybox import ensure_busybox_image  # noqa: E402
from tests.harness.dockerd import (DockerDaemon, Snapshot, drop_empty_nft_tables,  # noqa: E402
                                   nft_tables, read_ip_forward, restore_ip_forward)
from tests.harness.plugin import PluginProcess  # noqa: E402


# Benches start dockerds and touch the host's firewall, as the e2e tiers do (tests/conftest.py).
MACHINE_LOCK = Path(os.environ.get("PYNET_TEST_LOCK", "/run/lock/pynet-tests.lock"))


def _lock_held_by_ancestor(path: Path) -> bool:
    """Whether this process or one it descends from holds the flock on `path` (as under
    `flock LOCK python3 bench/X.py`, or bench/all.py running each bench): taking it again
    from here would wait for ever."""
    try:
        st = os.stat(path)
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    holders = set()
    for line in locks:
        f = line.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[3] == "WRITE" and f[5].rsplit(":", 1)[-1] == str(st.st_ino):
            holders.add(int(f[4]))
    pid = os.getpid()
    while pid > 1:
        if pid in holders:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


@contextlib.contextmanager
def machine_lock():
    """Hold the machine-wide test/bench lock for the block (waiting, and saying so, while
    another run holds it); nothing to take when an ancestor process holds it already."""
    if _lock_held_by_ancestor(MACHINE_LOCK):
        yield
        return
    MACHINE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(MACHINE_LOCK, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {MACHINE_LOCK} (another e2e/bench run holds it)", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def bench_docker(plugin_env: dict[str, str] | None = None, holder: dict | None = None):
    """(dockerd, image) with the pynet plugin serving; all torn down afterwards.
    PLUGIN_ENV adds to the plugin's environment; HOLDER, if given, gets the PluginProcess
    under "plugin" (to read its pid, RSS and store)."""
    if os.geteuid() != 0:
        sys.exit("benchmarks need root: they start a private dockerd and the pynet plugin")
    host_tables, ip_forward = nft_tables(), read_ip_forward()
    with tempfile.TemporaryDirectory(prefix="pynet-bench-") as tmp, _restore_host(host_tables, ip_forward):
        daemon = DockerDaemon(Path(tmp) / "dockerd")
        plugin = PluginProcess(Path(tmp) / "state",
                               extra_env={"PYNET_DEFAULT_ADDRESS_POOLS": "base=198.19.224.0/19,size=24",
                                          **(plugin_env or {})})
        if holder is not None:
            holder["plugin"] = plugin
        daemon.start()
        try:
            plugin.start()
            try:
                yield daemon, ensure_busybox_image(daemon)
            finally:
                daemon.remove_since(Snapshot())  # everything but the built-in networks
                plugin.stop()
                _remove_plugin_firewall()
        finally:
            daemon.stop()


@contextlib.contextmanager
def _restore_host(tables: set[str], ip_forward: str):
    """Leave the host as the benchmark found it: no empty iptables-nft tables, same ip_forward."""
    try:
        yield
    finally:
        drop_empty_nft_tables(tables)
        restore_ip_forward(ip_forward)


def _remove_plugin_firewall() -> None:
    # The plugin keeps its rules across restarts on purpose; a benchmark must not leave them.
    from driver.firewall.forward_accept import ForwardAccept
    from driver.firewall.nft_firewall import NftFirewall
    for remove in (ForwardAccept().remove_all, NftFirewall().remove_all):
        with contextlib.suppress(Exception):
            remove()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def container_pid(daemon: DockerDaemon, ctr: str) -> int:
    return int(daemon.cli("inspect", "-f", "{{.State.Pid}}", ctr).stdout.strip())


def container_ip(daemon: DockerDaemon, ctr: str) -> str:
    return daemon.cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                      ctr).stdout.strip()


def iperf3(server_pid: int, client_pid: int, server_ip: str, seconds: int, port: int = 5201,
           extra: tuple[str, ...] = ()) -> float:
    """TCP throughput in Gbit/s from client's namespace to server's, with the host's iperf3."""
    return iperf3_in(["nsenter", f"--net=/proc/{server_pid}/ns/net"],
                     ["nsenter", f"--net=/proc/{client_pid}/ns/net"], server_ip, seconds, port, extra)


def iperf3_in(server_argv: list[str], client_argv: list[str], server_ip: str, seconds: int,
              port: int = 5201, extra: tuple[str, ...] = ()) -> float:
    """TCP throughput in Gbit/s (every stream's received bytes summed) from the client to the
    server, each iperf3 run under an argv prefix that enters its namespace (`nsenter ...`,
    `ip netns exec NS`); `extra` adds client flags, e.g. ("-P", "4")."""
    server = subprocess.Popen([*server_argv, "iperf3", "-s", "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run([*client_argv, "iperf3", "-c", server_ip, "-p", str(port), "-t", str(seconds),
                              "-J", *extra], capture_output=True, text=True, timeout=seconds + 30,
                             check=True).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        server.kill()
        server.wait()


def report(title: str, unit: str, pynet: list[float], docker: list[float], higher_is_better: bool) -> None:
    p, d = statistics.median(pynet), statistics.median(docker)
    ratio = p / d if d else float("nan")
    better = "higher is better" if higher_is_better else "lower is better"
    print(f"{title:<44} pynet {p:9.3f} {unit:<8} docker {d:9.3f} {unit:<8} ratio pynet/docker "
          f"{ratio:6.3f}  ({better}; median of {len(pynet)})")
