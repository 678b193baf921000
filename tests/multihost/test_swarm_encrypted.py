"""A Swarm service on an encrypted pynet overlay (`-o encrypted`, issue 20) served by the
managed plugin: the plugin as scripts/build-plugin.sh builds it (its rootfs carries
wireguard-go and wg from the Dockerfile's packages; /dev/net/tun is the one device its
config.json gives it), on every node of a real Swarm (tests/harness/swarm.py: three simulated
hosts, dockerd and Consul each; h1 manager, h2 and h3 workers), --scope global.

This kernel has no WireGuard module, so each node's plugin (PYNET_WIREGUARD=auto, the
default) runs wireguard-go inside its own container; the link `pnwg0` is in the host's
network namespace (the plugin shares it). Tunnel addresses come from 198.19.251.0/24
(PYNET_WIREGUARD_SUBNET), inside 198.18.0.0/15 like the rest of the bed.

One bed for the module, three tests in file order sharing the network `encnet` and the
service `encweb`: the service's tasks on every node reach each other and the underlay
carries only WireGuard; a plugin disabled and enabled makes its link again with the same key
and tunnel address; removing the service and the network leaves no link, wireguard-go, guard
table or record. About 80 s with the plugin's build cache warm (bed up ~17 s).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.harness.multihost import Host
from tests.harness.netprobe import CAPTURE, SEND_MARKER, SINK
from tests.harness.swarm import PLUGIN, SwarmBed, built_plugin_dir
from tests.harness.wait import wait_until
from tests.multihost.support import brought_up, in_netns_of

NET, SERVICE = "encnet", "encweb"
SUBNET = "10.62.0.0/24"
WG_SUBNET = "198.19.251.0/24"
ENC_PORT, VXLAN_PORT, WG_PORT = 4799, 4789, 51820
LINK = "pnwg0"
IMAGE = "pynet-test/busybox:1"
CONVERGE = 90.0


@pytest.fixture(scope="module")
def eswarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmBed]:
    built = built_plugin_dir(tmp_path_factory.mktemp("plugin") / "pynet")
    bed = SwarmBed(tmp_path_factory.mktemp("eswarm"), built, name="pnswe", underlay="198.18.34.0/24",
                   plugin_env={"PYNET_WIREGUARD_SUBNET": WG_SUBNET})
    with brought_up("encrypted swarm", bed):
        yield bed


# --- helpers ------------------------------------------------------------------------------
def containers(h: Host) -> list[str]:
    return h.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={SERVICE}").stdout.split()


def running_nodes(swarm: SwarmBed) -> list[str] | None:
    """The nodes of SERVICE's tasks, once every task Swarm wants running runs."""
    out = swarm.manager.docker("service", "ps", SERVICE, "--filter", "desired-state=running",
                               "--format", "{{.Node}} {{.CurrentState}}").stdout
    got = [line.split()[:2] for line in out.splitlines() if line.strip()]
    return sorted(node for node, _ in got) if got and all(state == "Running" for _, state in got) else None


def sh(h: Host, cid: str, script: str) -> str:
    return h.docker("exec", cid, "sh", "-c", script, timeout=60, check=False).stdout


def wireguard_go_of(h: Host) -> list[int]:
    """PIDs of the wireguard-go processes in the host's network namespace."""
    inode = os.stat(f"/run/netns/{h.netns}").st_ino
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and open(f"/proc/{pid}/comm").read().strip() == "wireguard-go" \
                    and os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                found.append(int(pid))
        except OSError:
            continue
    return found


def in_plugin(pid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    """argv from the plugin's own root filesystem, in the mount and network namespaces of
    process pid (one of the plugin's)."""
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", *argv], capture_output=True, text=True,
                          timeout=20)


def wg_peers(h: Host) -> list[list[str]]:
    """`wg show pnwg0 dump` run with the plugin's own wg: its peers' lines."""
    pids = wireguard_go_of(h)
    if len(pids) != 1:
        return []
    out = in_plugin(pids[0], "wg", "show", LINK, "dump").stdout.splitlines()
    return [line.split("\t") for line in out[1:]]


def link_present(h: Host) -> bool:
    return h.run("ip", "link", "show", LINK, check=False).returncode == 0


def task_containers(swarm: SwarmBed) -> list[tuple[Host, str, str, int]]:
    """(node, container id, address on NET, PID) of every running task container."""
    found = []
    for h in swarm.hosts:
        for cid in containers(h):
            fmt = f'{{{{(index .NetworkSettings.Networks "{NET}").IPAddress}}}} {{{{.State.Pid}}}}'
            ip, pid = h.docker("inspect", "-f", fmt, cid).stdout.split()
            found.append((h, cid, ip, int(pid)))
    return found


def encrypted_records(swarm: SwarmBed) -> list[str]:
    return sorted(k for k in swarm.bed.kv("pynet/v1/overlay/")
                  if k.startswith("pynet/v1/overlay/tunnels/") or k.endswith("/wireguard"))


# --- tests --------------------------------------------------------------------------------
def test_a_service_on_an_encrypted_overlay_reaches_across_nodes_through_wireguard_only(eswarm: SwarmBed) -> None:
    manager = eswarm.manager
    manager.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "-o", "type=overlay",
                   "-o", "encrypted", "--scope", "swarm", "--attachable", "--subnet", SUBNET, NET)
    manager.docker("service", "create", "--detach", "--name", SERVICE, "--mode", "global",
                   "--endpoint-mode", "dnsrr", "--network", NET, IMAGE, "httpd", "-f", "-p", "80")
    nodes = wait_until(lambda: (n := running_nodes(eswarm)) and len(n) == 3 and n, CONVERGE,
                       "a running task on each of the three nodes")
    assert nodes == ["h1", "h2", "h3"]
    ctrs = wait_until(lambda: (c := task_containers(eswarm)) and len(c) == 3 and c, CONVERGE,
                      "three task containers")

    # Each node's plugin made one WireGuard link and runs wireguard-go from its own rootfs;
    # the plugin's wg lists the two other nodes, each allowed its tunnel /32 only.
    for h in eswarm.hosts:
        assert link_present(h), h.name
        [pid] = wireguard_go_of(h)
        assert os.path.exists(f"/proc/{pid}/root/opt/pynet/bin/plugin-entrypoint"), \
            f"{h.name}: wireguard-go {pid} is not the plugin's"
    wait_until(lambda: all(len(wg_peers(h)) == 2 for h in eswarm.hosts), CONVERGE, "two WireGuard peers per node")
    for h in eswarm.hosts:
        for line in wg_peers(h):
            assert line[2].startswith("198.18.34.") and line[2].endswith(f":{WG_PORT}"), (h.name, line)
            assert line[3].startswith("198.19.251.") and line[3].endswith("/32"), (h.name, line)
    keys = [k for k in encrypted_records(eswarm) if k.endswith("/wireguard")]
    assert len(keys) == 3, keys

    # The tasks' links leave room for VXLAN and WireGuard (1500 - 50 - 60), and every task
    # reaches every other over HTTP, whatever node each is on.
    for h, cid, ip, pid in ctrs:
        assert "mtu 1390" in in_netns_of(pid, "ip", "link", "show", "eth0").stdout, h.name
        targets = " ".join(other for _, _, other, _ in ctrs if other != ip)
        out = wait_until(lambda: (o := sh(h, cid, f"for a in {targets}; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
                                           "nc -w 3 $a 80 >/dev/null && echo ok $a || echo FAIL $a; done"))
                         .count("ok ") == 2 and o, 30, f"{h.name}'s task reaching the other two")
        assert "FAIL" not in out, (h.name, out)

    # The underlay of h1 during a 2 MiB transfer of a marker from h1's task to h2's: only
    # WireGuard's port, no VXLAN port (encrypted or not) and no marker in clear.
    (h1, _, _, src_pid), = [c for c in ctrs if c[0].name == "h1"]
    (_, _, dst_ip, dst_pid), = [c for c in ctrs if c[0].name == "h2"]
    marker = "PYNET-SWARM-ENC-MARKER-5e1a"
    sink = subprocess.Popen(["nsenter", f"--net=/proc/{dst_pid}/ns/net", sys.executable, "-c", SINK, "7100"],
                            stdout=subprocess.PIPE, text=True)
    cap = subprocess.Popen(["ip", "netns", "exec", eswarm.bed.switch_ns, sys.executable, "-c", CAPTURE,
                            h1.switch_port, "5", marker], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        assert cap.stdout is not None and cap.stdout.readline().strip() == "ready"
        sent = in_netns_of(src_pid, sys.executable, "-c", SEND_MARKER, dst_ip, "7100", marker, "2048").stdout
        assert sent.strip() == "sent 2048", sent
        found = json.loads(cap.communicate(timeout=30)[0])
    finally:
        for p in (sink, cap):
            p.kill()
            p.wait()
    assert found["marker_frames"] == 0, found
    assert str(ENC_PORT) not in found["udp_dports"] and str(VXLAN_PORT) not in found["udp_dports"], found
    assert found["udp_dports"].get(str(WG_PORT), 0) > 1000, found


def test_a_plugin_disabled_and_enabled_makes_the_link_again_with_its_key_and_address(eswarm: SwarmBed) -> None:
    """The managed plugin's wireguard-go lives in its container: `disable -f` takes the link
    along (as it takes the overlay's namespace). `enable` restores the network, and with it
    the link, the same key (the state directory is the propagated mount) and the same tunnel
    address (its claim); the node's tasks, given anew (docs/swarm.md), reach the others."""
    h2 = eswarm["h2"]
    record = f"pynet/v1/overlay/hosts/{h2.name}/wireguard"
    before = json.loads(eswarm.bed.kv(record)[record])
    h2.docker("plugin", "disable", "-f", PLUGIN, timeout=60)
    wait_until(lambda: not link_present(h2) and not wireguard_go_of(h2), 30, "h2's link gone with its plugin")
    started = time.monotonic()
    h2.docker("plugin", "enable", PLUGIN, timeout=60)
    wait_until(lambda: link_present(h2) and len(wireguard_go_of(h2)) == 1, CONVERGE, "h2's link made again",
               interval=0.1)
    print(f"\nh2's link back {time.monotonic() - started:.1f} s after `docker plugin enable` began")
    after = json.loads(eswarm.bed.kv(record)[record])
    assert (after["public_key"], after["address"]) == (before["public_key"], before["address"]), (before, after)
    eswarm.manager.docker("service", "update", "--detach", "--force", "--update-parallelism", "0", SERVICE)
    wait_until(lambda: running_nodes(eswarm) == ["h1", "h2", "h3"] and len(task_containers(eswarm)) == 3,
               CONVERGE, "the tasks given anew on the three nodes")
    wait_until(lambda: all(len(wg_peers(h)) == 2 for h in eswarm.hosts), CONVERGE, "two WireGuard peers per node")
    ctrs = task_containers(eswarm)
    for h, cid, ip, _ in ctrs:
        targets = " ".join(other for _, _, other, _ in ctrs if other != ip)
        wait_until(lambda: sh(h, cid, f"for a in {targets}; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
                                      "nc -w 3 $a 80 >/dev/null && echo ok $a || echo FAIL $a; done")
                   .count("ok ") == 2, 30, f"{h.name}'s new task reaching the other two")


def test_removing_the_service_and_network_leaves_no_link_process_table_or_record(eswarm: SwarmBed) -> None:
    manager = eswarm.manager
    manager.docker("service", "rm", SERVICE)
    wait_until(lambda: not any(containers(h) for h in eswarm.hosts), CONVERGE, "the tasks gone")
    manager.docker("network", "rm", NET)
    # Each node's DeleteNetwork follows Swarm's removal; the last encrypted overlay of a node
    # takes its link, wireguard-go and guard table, and its record and tunnel claim.
    wait_until(lambda: not any(link_present(h) or wireguard_go_of(h) for h in eswarm.hosts), CONVERGE,
               "no WireGuard link or wireguard-go left on any node")
    for h in eswarm.hosts:
        assert h.run("nft", "list", "table", "inet", "pynet_wireguard", check=False).returncode != 0, h.name
    wait_until(lambda: not encrypted_records(eswarm), 30, "no WireGuard record or tunnel claim in the store")
