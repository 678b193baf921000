"""pynet as a managed plugin on one host: built by scripts/build-plugin.sh, enabled on a bare
host (no directory made by hand) with its store kept across disable/enable, installed and
enabled on the tier's private dockerd as pynet:latest; bridge and macvlan networks through it;
disable/enable and upgrade with containers running; nothing left after `docker plugin rm`.

Addresses: bridge networks in 198.19.0.0/16 (the dockerd harness's range), the simulated LAN
in 198.18.0.0/15, only inside namespaces, bridges and containers the tests made; containers
have no route out. The tests run in file order; the last removes the plugin.
"""
from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.dockerd import DockerDaemon
from tests.harness.managed_plugin import ManagedPlugin, build_plugin, pynet_links, second_plugin_dir
from tests.harness.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = "pynet:latest"
DRIVER = ["-d", NAME, "--ipam-driver", NAME]


def _name(kind: str) -> str:
    return f"pynet-t-mp-{kind}-{secrets.token_hex(3)}"


def _network(dockerd: DockerDaemon, subnet: str, *opts: str) -> str:
    net = _name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", subnet, *opts, net)
    return net


def _run(dockerd: DockerDaemon, image: str, net: str, *extra: str) -> str:
    ctr = _name("c")
    dockerd.cli("run", "-d", "--pull", "never", "--name", ctr, "--network", net, *extra, image, "sleep", "600")
    return ctr


def _ip(dockerd: DockerDaemon, ctr: str) -> str:
    return dockerd.cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                       ctr).stdout.strip()


def _pings(dockerd: DockerDaemon, ctr: str, target: str, count: int = 2) -> bool:
    return dockerd.cli("exec", ctr, "ping", "-c", str(count), "-W", "2", target, check=False).returncode == 0


class Pinger:
    """`ping -i 0.2` from one container to another for the length of a `with` block: how many
    echo requests went unanswered while the plugin was disabled or replaced."""

    def __init__(self, dockerd: DockerDaemon, ctr: str, target: str) -> None:
        self.argv = ["docker", "exec", ctr, "ping", "-i", "0.2", "-W", "1", target]
        self.env = dockerd.env
        self.sent = self.received = 0

    def __enter__(self) -> Pinger:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        time.sleep(1)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1)
        # SIGINT reaches busybox ping through `docker exec` only with a tty; end it by PID
        # (the docker client, which we started) and count the replies it printed.
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.received = len(re.findall(r"seq=\d+", out))
        seqs = [int(s) for s in re.findall(r"seq=(\d+)", out)]
        self.sent = (max(seqs) + 1) if seqs else 0

    @property
    def lost(self) -> int:
        return self.sent - self.received


# ---- the build ------------------------------------------------------------------------------

def test_build_writes_config_and_a_working_rootfs(managed_plugin_dir: Path) -> None:
    assert json.loads((managed_plugin_dir / "config.json").read_text()) == \
        json.loads((REPO_ROOT / "plugin" / "config.json").read_text())
    rootfs = managed_plugin_dir / "rootfs"
    # libnftables through pynet's ctypes adapter; nothing of Debian's Python in the venv.
    proc = subprocess.run(["chroot", str(rootfs), "/opt/pynet/bin/python", "-c",
                           "import pyroute2, flask, gunicorn, consul, docker, pynet.app\n"
                           "from driver.firewall.libnftables import load; load()\n"
                           "try:\n    import nftables\nexcept ImportError:\n    pass\n"
                           "else:\n    raise SystemExit('Debian python3-nftables is visible')"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # Nothing of the build stayed: no source tree, pip cache or bind-mounted pip settings.
    for gone in ("src", "root/.cache", "run/pynet-build", "var/cache/apt/archives/python3_3.11.2-1+b1_amd64.deb"):
        assert not (rootfs / gone).exists(), gone
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(rootfs) in line]


def test_script_creates_the_plugin_on_the_dockerd_docker_host_names(
        dockerd: DockerDaemon, managed: ManagedPlugin, tmp_path: Path) -> None:
    name = "pynet-scripted:latest"
    try:
        build_plugin(tmp_path / "plugin", name=name, docker_host=dockerd.base_url)
        assert dockerd.cli("plugin", "inspect", "-f", "{{.Enabled}} {{.Config.Entrypoint}}",
                           name).stdout.strip() == "false [/opt/pynet/bin/plugin-entrypoint]"
    finally:
        dockerd.cli("plugin", "rm", "-f", name, check=False)


# ---- a bare host ----------------------------------------------------------------------------

# What plugin/config.json bound into the plugin before it used Docker's propagated mount:
# `enable` failed in runc ("error mounting /var/lib/pynet to rootfs") unless they existed.
FORMER_SOURCES = (Path("/var/lib/pynet"), Path("/etc/pynet"))


@pytest.fixture
def bare_host() -> Iterator[None]:
    """The former mount sources absent from the host for the test (empty ones are removed and
    made again afterwards; one with content is someone's data: the test cannot run)."""
    removed = []
    for path in FORMER_SOURCES:
        if path.exists():
            if not path.is_dir() or any(path.iterdir()):
                pytest.fail(f"{path} exists with content on this host: a bare host cannot be "
                            "simulated here", pytrace=False)
            path.rmdir()
            removed.append(path)
    try:
        yield
    finally:
        for path in removed:
            path.mkdir(exist_ok=True)


def test_enables_on_a_bare_host_and_keeps_its_store_across_disable_enable(
        dockerd: DockerDaemon, managed_plugin_dir: Path, busybox_image: str, bare_host: None,
        tmp_path: Path) -> None:
    """Before pynet:latest exists (the tier's other tests use it): another name, from a copy
    that differs by one file (dockerd 20.10 refuses a second plugin of an identical rootfs)."""
    name = "pynet-bare:latest"
    plugin = ManagedPlugin(dockerd, second_plugin_dir(managed_plugin_dir, tmp_path / "bare", "pynet (bare)"),
                           name=name)
    made: list[str] = []
    net = None
    try:
        plugin.install()  # create, set (the test dockerd's socket, the pools), enable
        assert plugin.enabled()
        net = _name("net")
        dockerd.cli("network", "create", "-d", name, "--ipam-driver", name, "--subnet", "198.19.66.0/24", net)
        made += [_run(dockerd, busybox_image, net), _run(dockerd, busybox_image, net)]
        target = _ip(dockerd, made[1])
        assert target.startswith("198.19.66.") and _pings(dockerd, made[0], target)
        # The store is in the directory Docker made for the propagated mount.
        store = plugin.state_dir / "pynet.db"
        assert store.is_file() and store.stat().st_size > 0
        inode = store.stat().st_ino
        mounts = Path(f"/proc/{plugin.pids()[0]}/mountinfo").read_text().splitlines()
        by_point = {line.split()[4]: line.split()[5] for line in mounts}
        assert by_point["/var/lib/pynet"].startswith("rw") and "/etc/pynet" not in by_point

        plugin.disable(force=True)
        plugin.enable()
        assert store.stat().st_ino == inode
        # The re-enabled plugin restored the network from that store: a new container gets
        # the next address of the same pool and reaches the others.
        made.append(_run(dockerd, busybox_image, net))
        ip = _ip(dockerd, made[-1])
        assert ip.startswith("198.19.66.") and ip not in (_ip(dockerd, made[0]), target)
        assert _pings(dockerd, made[-1], target)
        assert not [p for p in FORMER_SOURCES if p.exists()], "the plugin made a former mount source"
    finally:
        if plugin.exists() and not plugin.enabled():
            plugin.enable()
        if made:
            dockerd.cli("rm", "-f", *made, check=False)
        if net:
            dockerd.cli("network", "rm", net, check=False)
        plugin.remove()


# ---- the enabled plugin ---------------------------------------------------------------------

def test_plugin_runs_with_writable_sysctls_and_asks_its_dockerd(
        dockerd: DockerDaemon, managed: ManagedPlugin, busybox_image: str) -> None:
    pids = managed.pids()
    assert pids, "no pynet serve process in the plugin's rootfs"
    mounts = Path(f"/proc/{pids[0]}/mountinfo").read_text().splitlines()
    by_point = {line.split()[4]: line.split()[5] for line in mounts}
    assert by_point["/proc/sys"].startswith("rw") and by_point["/sys"].startswith("rw")
    assert by_point["/var/lib/pynet"].startswith("rw")
    # The store is on the host, in the propagated mount's source under dockerd's data root.
    assert (managed.state_dir / "pynet.db").exists()
    # The leak check reaches dockerd through the mounted socket and proves it is this host's
    # once a pynet pool exists.
    net = _network(dockerd, "198.19.61.0/24")
    _run(dockerd, busybox_image, net)
    managed.wait_log(r"leak check: dockerd at unix:///run/pynet/docker.sock knows this host's", timeout=30)
    assert not [line for line in managed.log_lines() if "cannot ask dockerd" in line]


def test_bridge_network_through_the_managed_plugin(dockerd: DockerDaemon, managed: ManagedPlugin,
                                                  busybox_image: str) -> None:
    net = _network(dockerd, "198.19.62.0/24")
    shown = dockerd.cli("network", "inspect", "-f", "{{.Driver}} {{.IPAM.Driver}} {{(index .IPAM.Config 0).Subnet}}",
                        net).stdout.split()
    assert shown == [NAME, NAME, "198.19.62.0/24"]
    a, b = _run(dockerd, busybox_image, net), _run(dockerd, busybox_image, net)
    assert _ip(dockerd, a).startswith("198.19.62.") and _ip(dockerd, b).startswith("198.19.62.")
    assert _pings(dockerd, a, b), "containers on a managed-plugin bridge network cannot reach each other by name"
    bridge = "pn-" + dockerd.cli("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()[:12]
    assert bridge in pynet_links()


@pytest.fixture
def lan(make_netns: Callable[[], str]) -> Iterator[tuple[str, str]]:
    """(parent, namespace): a veth whose root end is a macvlan parent and whose peer, in a
    namespace of its own, is a LAN host at 198.18.110.1 with no route anywhere else."""
    parent = f"pntm{secrets.token_hex(3)}"
    ns = make_netns()

    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True)

    ip("link", "add", parent, "type", "veth", "peer", "name", f"{parent}p")
    try:
        ip("link", "set", f"{parent}p", "netns", ns)
        ip("-n", ns, "addr", "add", "198.18.110.1/24", "dev", f"{parent}p")
        ip("-n", ns, "link", "set", f"{parent}p", "up")
        ip("link", "set", parent, "up")
        yield parent, ns
    finally:
        subprocess.run(["ip", "link", "del", parent], capture_output=True)


def test_macvlan_network_through_the_managed_plugin(dockerd: DockerDaemon, managed: ManagedPlugin,
                                                   busybox_image: str, lan: tuple[str, str]) -> None:
    parent, ns = lan
    net = _network(dockerd, "198.18.110.0/24", "--gateway", "198.18.110.1", "-o", "type=macvlan",
                   "-o", f"parent={parent}")
    made: list[str] = []
    try:
        made += [_run(dockerd, busybox_image, net, "--ip", "198.18.110.10"),
                 _run(dockerd, busybox_image, net, "--ip", "198.18.110.11")]
        assert _pings(dockerd, made[0], "198.18.110.11")
        assert _pings(dockerd, made[1], "198.18.110.1"), "a macvlan container cannot reach the LAN host"
    finally:
        # Before the lan fixture deletes the parent.
        if made:
            dockerd.cli("rm", "-f", *made, check=False)
        dockerd.cli("network", "rm", net, check=False)


# ---- lifecycle -----------------------------------------------------------------------------

def test_disable_is_refused_while_networks_use_it_and_forced_disable_enable_keeps_traffic(
        dockerd: DockerDaemon, managed: ManagedPlugin, busybox_image: str) -> None:
    net = _network(dockerd, "198.19.63.0/24")
    a, b = _run(dockerd, busybox_image, net), _run(dockerd, busybox_image, net)
    target = _ip(dockerd, b)
    refused = dockerd.cli("plugin", "disable", NAME, check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr, refused.stderr
    with Pinger(dockerd, a, target) as ping:
        took = managed.disable(force=True)
        time.sleep(2)  # traffic while no pynet runs: the kernel's bridge and rules carry it
        disabled_pings = _pings(dockerd, a, target)
        managed.enable()
    # pynet as PID 1 handles Docker's SIGTERM; Docker would SIGKILL it after 10 s.
    assert took < 8, f"docker plugin disable took {took:.1f} s"
    assert not managed.pids() or managed.enabled()
    assert disabled_pings, "containers lost each other while the plugin was disabled"
    assert ping.sent > 10 and ping.lost == 0, f"{ping.lost} of {ping.sent} pings lost across disable/enable"
    # The re-enabled plugin restored the network: a new container joins it and reaches the others.
    c = _run(dockerd, busybox_image, net)
    assert _pings(dockerd, c, target)


def test_upgrade_keeps_running_containers_connected(dockerd: DockerDaemon, managed: ManagedPlugin,
                                                  managed_plugin_dir: Path, busybox_image: str,
                                                  tmp_path: Path) -> None:
    net = _network(dockerd, "198.19.64.0/24")
    a, b = _run(dockerd, busybox_image, net), _run(dockerd, busybox_image, net)
    target = _ip(dockerd, b)
    store = managed.state_dir / "pynet.db"
    inode = store.stat().st_ino
    with Registry(tmp_path / "registry") as registry:
        # `docker plugin upgrade` only pulls from a registry: push the second build to a private one.
        remote = f"{registry.address}/pynet:v2"
        second_plugin_dir(managed_plugin_dir, tmp_path / "plugin-v2", "pynet (upgraded)")
        dockerd.cli("plugin", "create", remote, str(tmp_path / "plugin-v2"), timeout=300)
        try:
            dockerd.cli("plugin", "push", remote, timeout=300)
        finally:
            dockerd.cli("plugin", "rm", "-f", remote, check=False)
        with Pinger(dockerd, a, target) as ping:
            refused = dockerd.cli("plugin", "upgrade", "--grant-all-permissions", NAME, remote, check=False)
            managed.disable(force=True)
            started = time.monotonic()
            dockerd.cli("plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check", NAME, remote,
                        timeout=300)
            upgraded_in = time.monotonic() - started
            # dockerd 20.10 mounts the sources in the plugin's Config, which the upgrade
            # replaces with the new config.json's: `docker plugin set` mounts again
            # (environment settings survive). The store is not a mount: the propagated
            # mount's directory is the plugin's, untouched by an upgrade (only the rootfs is
            # replaced).
            reverted = (managed.mount_source("docker-socket"), managed.mount_source("docker-socket", "Settings"))
            env_kept = managed.inspect("{{.Settings.Env}}")
            managed.set(*managed.mount_settings())
            managed.enable()
    assert refused.returncode != 0 and "disable" in refused.stderr.lower(), refused.stderr
    print(f"\nplugin upgrade took {upgraded_in:.1f} s; {ping.lost} of {ping.sent} pings lost")
    assert managed.inspect("{{.Config.Description}}") == "pynet (upgraded)"
    assert reverted == ("/var/run/docker.sock", str(dockerd.socket)), reverted
    assert "PYNET_LEAK_CHECK_INTERVAL=2" in env_kept, env_kept
    assert managed.mount_source("docker-socket") == str(dockerd.socket)
    assert store.stat().st_ino == inode  # the same store, not a new one
    assert ping.sent > 10 and ping.lost == 0, f"{ping.lost} of {ping.sent} pings lost across the upgrade"
    # The upgraded plugin found its store in the state mount: the network is still served.
    c = _run(dockerd, busybox_image, net)
    assert _pings(dockerd, c, target)


# ---- last: removal --------------------------------------------------------------------------

def test_plugin_rm_leaves_no_links_and_no_rules(dockerd: DockerDaemon, managed: ManagedPlugin,
                                              busybox_image: str) -> None:
    links_before = pynet_links()
    net = _network(dockerd, "198.19.65.0/24", "-o", "mtu=1400")
    ctr = _run(dockerd, busybox_image, net, "-p", "18080:80")
    bridge = "pn-" + dockerd.cli("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()[:12]
    assert bridge in pynet_links() and bridge in _nft_text()
    dockerd.cli("rm", "-f", ctr)
    dockerd.cli("network", "rm", net)
    managed.disable()
    dockerd.cli("plugin", "rm", NAME)
    assert not managed.exists()
    assert not pynet_links() - links_before, pynet_links() - links_before
    # pynet keeps its table and chain (empty) across restarts; no rule names anything of a network.
    assert bridge not in _nft_text() and "198.19.65." not in _nft_text()
    forward = subprocess.run(["iptables", "-S", "PYNET-FORWARD"], capture_output=True, text=True).stdout
    assert bridge not in forward, forward


def _nft_text() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout + \
        subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
