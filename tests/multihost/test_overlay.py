"""Overlay networks (`-o type=overlay`, --store consul) on the three-host bed: real dockerd,
real Consul cluster, real kernel on every simulated host.

One bed for the module, built for what the overlay needs on top of the session's bed:
* h1 and h2 run dockerd with its own iptables rules (inside their network namespaces only),
  so docker_gwbridge gives overlay containers egress and `-p`; h3 runs `--iptables=false`,
  to show what users get then;
* every dockerd runs with `--live-restore` (a dockerd restart keeps the containers);
* the plugins' overlay peer timeout is 6 s (the host-cut case);
* `<bed>-out` (198.18.7.250) on the underlay stands for the outside world: no test traffic
  ever leaves 198.18.0.0/15, and the hosts have no default route.
After each test every container and network goes, and nothing of it may stay in Consul.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from driver import naming
from tests.harness.multihost import Host, MultiHost
from tests.harness.netprobe import ARP_WATCH, CLIENT, PING_DF
from tests.harness.wait import wait_until
from tests.multihost.support import (
    IMAGE,
    Ctr,
    Outside,
    brought_up,
    clear_overlay_bed,
    ctr_python,
    fdb,
    in_netns_of,
    inspect_ctr,
    neighbours,
    network_id,
    overlay_create,
    pings,
    pool_record,
    run_on,
    start_server,
    vxlan_vni,
)

FLOOD = "00:00:00:00:00:00"
CONVERGE = 10.0  # seconds a change may take to reach another host in these tests
# Per-host keys (not per network) that stay: the write fences and the dockerd engine proof.
HOST_KEYS = ("/fence", "/overlay-fence", "/docker", "/seen")


@pytest.fixture(scope="module")
def obed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHost]:
    bed = MultiHost(tmp_path_factory.mktemp("overlay"), name="pnov", underlay="198.18.7.0/24",
                    plugin_args=("--overlay-peer-timeout", "6"), docker_iptables=("h1", "h2"),
                    dockerd_args=("--live-restore",))
    with brought_up("overlay", bed, outside=True):
        yield bed


@pytest.fixture(autouse=True)
def _reset(obed: MultiHost) -> Iterator[None]:
    yield
    for h in obed.hosts:
        obed.heal(h)
        if not h.consul.running():
            obed.start_consul(h)
    obed.wait_for_cluster(timeout=60)
    for h in obed.hosts:
        if not h.dockerd.running():
            obed.restart_dockerd(h)
        if not h.plugin.running():
            h.plugin.start()
            obed.wait_plugin(h)
    clear_overlay_bed(obed)


# --- helpers -------------------------------------------------------------------------------
def spread(hosts: list[Host], name: str, subnet: str, *extra: str) -> dict[Host, str]:
    """The same overlay network created on each host: host -> its NetworkID."""
    return {h: (overlay_create(h, name, subnet, *extra), network_id(h, name))[1] for h in hosts}


def reach(a: Ctr, b: Ctr, timeout: float = CONVERGE) -> None:
    wait_until(lambda: pings(a, b.ip), timeout,
               f"{a.name} on {a.host} pinging {b.name} ({b.ip}) on {b.host}")


def remote_view(host: Host, nid: str) -> tuple[set, set]:
    return fdb(host, nid), neighbours(host, nid)


def leader_free(bed: MultiHost) -> list[Host]:
    """The hosts whose Consul server does not lead (cutting one keeps the cluster's leader)."""
    leader = bed.wait_for_leader()
    return [h for h in bed.hosts if h is not leader]


# --- connectivity --------------------------------------------------------------------------
def test_containers_on_three_hosts_reach_each_other_over_tcp_and_udp(obed: MultiHost) -> None:
    nets = spread(obed.hosts, "ov", "10.60.1.0/24")
    assert len(set(nets.values())) == 3  # three NetworkIDs, one overlay
    ctrs = [run_on(h, f"c{h.index}", "ov") for h in obed.hosts]
    assert len({c.ip for c in ctrs}) == 3 and all(c.ip.startswith("10.60.1.") for c in ctrs)
    # Every host's VXLAN device: one VNI, head-end replication to both other VTEPs, a static
    # entry per remote container, and its neighbour entry.
    assert len({vxlan_vni(h, nid) for h, nid in nets.items()}) == 1
    h1 = obed.hosts[0]
    wait_until(lambda: remote_view(h1, nets[h1]) == (
        {(FLOOD, "198.18.7.12"), (FLOOD, "198.18.7.13"), (ctrs[1].mac, "198.18.7.12"),
         (ctrs[2].mac, "198.18.7.13")}, {(ctrs[1].ip, ctrs[1].mac), (ctrs[2].ip, ctrs[2].mac)}),
        CONVERGE, "h1's entries for h2's and h3's containers")
    servers = [start_server(c.pid) for c in ctrs]
    try:
        for a in ctrs:
            for b in ctrs:
                if a is b:
                    continue
                reach(a, b)
                assert ctr_python(a, CLIENT, "tcp", b.ip, "7000") == f"tcp {a.ip}"
                assert ctr_python(a, CLIENT, "udp", b.ip, "7000") == f"udp {a.ip} ping"
    finally:
        for s in servers:
            s.kill()
            s.wait()


def test_the_mtu_inside_the_container_leaves_room_for_vxlan(obed: MultiHost) -> None:
    h1, h2 = obed.hosts[:2]
    spread([h1, h2], "ov", "10.60.2.0/24")
    a, b = run_on(h1, "ca", "ov"), run_on(h2, "cb", "ov")
    reach(a, b)
    assert "mtu 1450" in in_netns_of(a.pid, "ip", "link", "show", "eth0").stdout
    assert ctr_python(a, PING_DF, b.ip, "1422") == "ok 1422"  # 1422 + 8 + 20 = 1450
    assert ctr_python(a, PING_DF, b.ip, "1423") == "fail Message too long"


def test_arp_broadcast_reaches_every_host(obed: MultiHost) -> None:
    nets = spread(obed.hosts, "ov", "10.60.3.0/24")
    a, b, c = (run_on(h, f"c{h.index}", "ov") for h in obed.hosts)
    reach(a, b), reach(a, c)
    import subprocess
    import sys
    watchers = [subprocess.Popen(["nsenter", f"--net=/proc/{x.pid}/ns/net", sys.executable, "-c",
                                  ARP_WATCH, "10.60.3.250", "6"], stdout=subprocess.PIPE, text=True)
                for x in (b, c)]
    try:
        for w in watchers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        # Nobody has 10.60.3.250: the request is broadcast, replicated to every VTEP.
        in_netns_of(a.pid, "busybox", "arping", "-c", "2", "-w", "2", "-I", "eth0", "10.60.3.250")
        assert [w.communicate(timeout=10)[0].strip() for w in watchers] == [f"seen {a.ip}"] * 2
    finally:
        for w in watchers:
            w.kill()
            w.wait()
    assert (FLOOD, obed.hosts[1].address) in fdb(obed.hosts[0], nets[obed.hosts[0]])


def test_two_overlays_are_isolated_from_each_other_and_from_bridge_networks(obed: MultiHost) -> None:
    h1, h2 = obed.hosts[:2]
    x = spread([h1, h2], "ovx", "10.60.4.0/24")
    y = spread([h1, h2], "ovy", "10.60.5.0/24")
    assert vxlan_vni(h1, x[h1]) != vxlan_vni(h1, y[h1])
    h2.docker("network", "create", "--subnet", "10.60.6.0/24", "plain")  # Docker's bridge driver
    xa, xb = run_on(h1, "xa", "ovx"), run_on(h2, "xb", "ovx")
    ya = run_on(h1, "ya", "ovy", "--cap-add", "NET_ADMIN")
    yb = run_on(h2, "yb", "ovy")
    pa = run_on(h2, "pa", "plain", "--cap-add", "NET_ADMIN")
    reach(xa, xb), reach(ya, yb)
    # By address: no route from one overlay (or a bridge network) into another.
    for src, dst in ((ya, xb), (yb, xa), (xa, yb), (pa, xb), (xb, pa)):
        assert not pings(src, dst.ip), f"{src.name} reached {dst.name}"
    # Not even on the wire: an address of ovx's subnet on ovy's (or the bridge network's)
    # link reaches nobody on ovx, on the same host or the other.
    h1.docker("exec", "ya", "ip", "addr", "add", "10.60.4.200/24", "dev", "eth0")
    h2.docker("exec", "pa", "ip", "addr", "add", "10.60.4.201/24", "dev", "eth0")
    for src, dst in ((ya, xa), (ya, xb), (pa, xa), (pa, xb)):
        assert not pings(src, dst.ip), f"{src.name} reached {dst.name} across segments"
    assert not pings(xa, "10.60.4.200") and not pings(xb, "10.60.4.201")
    reach(xa, xb), reach(yb, ya)  # each overlay still works


def test_the_same_compose_file_on_two_hosts_joins_one_overlay(obed: MultiHost, tmp_path: Path) -> None:
    import os
    import subprocess
    h1, h2 = obed.hosts[:2]
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(f"""version: "2.4"
services:
  app:
    image: {IMAGE}
    command: ["sleep", "3600"]
    networks: [appnet]
networks:
  appnet:
    driver: pynet
    driver_opts:
      type: overlay
    ipam:
      driver: pynet
      config:
        - subnet: 10.60.7.0/24
""")

    def compose_on(h: Host, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = f"unix://{h.docker_socket}"
        proc = subprocess.run(["docker-compose", "-p", "demo", "-f", str(compose), *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc

    try:
        for h in (h1, h2):
            compose_on(h, "up", "-d")
        a, b = inspect_ctr(h1, "demo_app_1", "demo_appnet"), inspect_ctr(h2, "demo_app_1", "demo_appnet")
        assert a.ip != b.ip
        nid1, nid2 = network_id(h1, "demo_appnet"), network_id(h2, "demo_appnet")
        assert nid1 != nid2 and vxlan_vni(h1, nid1) == vxlan_vni(h2, nid2)
        reach(a, b), reach(b, a)
    finally:
        for h in (h1, h2):
            compose_on(h, "down")


# --- external connectivity ---------------------------------------------------------------
def test_egress_and_published_ports_go_through_docker_gwbridge(obed: MultiHost) -> None:
    h1, h2, h3 = obed.hosts
    out: Outside = obed.outside  # type: ignore[attr-defined]
    spread(obed.hosts, "ov", "10.60.8.0/24")
    a = run_on(h1, "ca", "ov", "-p", "8080:7000")
    c = run_on(h3, "cc", "ov", "-p", "8081:7000")
    # No gateway from pynet: Docker added eth1 on its docker_gwbridge, with the default route.
    routes = in_netns_of(a.pid, "ip", "route").stdout
    assert "default" in routes and "dev eth1" in routes.split("default", 1)[1].splitlines()[0], routes
    assert "docker_gwbridge" in h1.docker("network", "ls", "--format", "{{.Name}}").stdout
    server = out.server()
    web = [start_server(a.pid), start_server(c.pid)]
    try:
        # Outbound, masqueraded to the host's own address by dockerd's rules.
        assert ctr_python(a, CLIENT, "tcp", out.address, "7000") == f"tcp {h1.address}"
        assert ctr_python(a, CLIENT, "udp", out.address, "7000") == f"udp {h1.address} ping"
        # -p: the outside reaches the container through the host's address.
        answer = out.python(CLIENT, "tcp", h1.address, "8080")
        assert answer.startswith("tcp "), answer
        # dockerd --iptables=false (h3): no masquerade and no DNAT, so neither works.
        assert ctr_python(c, CLIENT, "tcp", out.address, "7000").startswith("fail")
        assert out.python(CLIENT, "tcp", h3.address, "8081").startswith("fail")
        # The overlay itself does not care.
        reach(a, c)
    finally:
        for p in (server, *web):
            p.kill()
            p.wait()


def test_an_internal_overlay_has_no_egress(obed: MultiHost) -> None:
    h1, h2 = obed.hosts[:2]
    out: Outside = obed.outside  # type: ignore[attr-defined]
    spread([h1, h2], "ovi", "10.60.9.0/24", "--internal")
    a, b = run_on(h1, "ca", "ovi"), run_on(h2, "cb", "ovi")
    reach(a, b)
    assert "default" not in in_netns_of(a.pid, "ip", "route").stdout
    assert in_netns_of(a.pid, "ip", "-o", "link", "show", "eth1").returncode != 0  # no gwbridge leg
    server = out.server()
    try:
        assert ctr_python(a, CLIENT, "tcp", out.address, "7000").startswith("fail")
        assert not pings(a, out.address) and not pings(a, h1.address)
    finally:
        server.kill()
        server.wait()


# --- faults ----------------------------------------------------------------------------------
def _changes_meanwhile(peer: Host, gone: Ctr, name: str) -> Ctr:
    """A new endpoint on peer, then one removed (in that order, so the new one does not
    take the removed one's address, and with it its MAC)."""
    new = run_on(peer, name, gone.network)
    peer.docker("rm", "-f", gone.name)
    assert new.ip != gone.ip and new.mac != gone.mac
    return new


def test_plugin_kill_keeps_traffic_and_its_restart_reconciles_entries(obed: MultiHost) -> None:
    h1, h2 = obed.hosts[:2]
    nets = spread([h1, h2], "ov", "10.60.10.0/24")
    a, gone, b = run_on(h1, "ca", "ov"), run_on(h1, "gone", "ov"), run_on(h2, "cb", "ov")
    reach(b, a), reach(b, gone)
    h2.plugin.kill()
    assert pings(b, a.ip) and pings(a, b.ip)  # the kernel kept its state
    new = _changes_meanwhile(h1, gone, "new")
    time.sleep(1.0)
    assert (gone.ip, gone.mac) in neighbours(h2, nets[h2])  # nobody updated h2 meanwhile
    h2.plugin.start()
    obed.wait_plugin(h2)
    want = ({(FLOOD, h1.address), (a.mac, h1.address), (new.mac, h1.address)},
            {(a.ip, a.mac), (new.ip, new.mac)})
    wait_until(lambda: remote_view(h2, nets[h2]) == want, CONVERGE, "h2 reconciled after its restart")
    reach(b, new), reach(new, b)
    reach(run_on(h2, "b2", "ov"), a)  # and the restarted plugin serves new endpoints


def test_dockerd_restart_keeps_traffic_and_entries_are_reconciled(obed: MultiHost) -> None:
    h1, h2 = obed.hosts[:2]
    nets = spread([h1, h2], "ov", "10.60.11.0/24")
    a, gone, b = run_on(h1, "ca", "ov"), run_on(h1, "gone", "ov"), run_on(h2, "cb", "ov")
    reach(b, a), reach(b, gone)
    h2.dockerd.stop()  # --live-restore: the containers stay
    assert pings(b, a.ip) and pings(a, b.ip)
    new = _changes_meanwhile(h1, gone, "new")
    obed.restart_dockerd(h2)
    want = ({(FLOOD, h1.address), (a.mac, h1.address), (new.mac, h1.address)},
            {(a.ip, a.mac), (new.ip, new.mac)})
    wait_until(lambda: remote_view(h2, nets[h2]) == want, CONVERGE, "h2's entries after dockerd restart")
    # h1 still has b (its endpoint survived the restart), and b's traffic flows both ways.
    assert (b.ip, b.mac) in neighbours(h1, nets[h1])
    reach(b, new), reach(new, b)
    reach(run_on(h2, "b2", "ov"), a)


def test_consul_unreachable_keeps_traffic_fails_new_endpoints_fast_and_catches_up(obed: MultiHost) -> None:
    victim, peer = leader_free(obed)[0], obed.wait_for_leader()
    nets = spread([peer, victim], "ov", "10.60.12.0/24")
    a, b = run_on(peer, "ca", "ov"), run_on(victim, "cb", "ov")
    reach(b, a)
    obed.kill_consul(victim)  # the plugin's own agent: pynet on victim cannot reach Consul
    assert pings(b, a.ip) and pings(a, b.ip)
    started = time.monotonic()
    failed = victim.docker("run", "-d", "--pull", "never", "--network", "ov", "--name", "late", IMAGE,
                           "sleep", "3600", check=False, timeout=90)
    seconds = time.monotonic() - started
    assert failed.returncode != 0 and "consul" in failed.stderr.lower(), failed.stderr
    assert seconds < 20, f"docker run took {seconds:.1f}s to fail"
    # The driver's own CreateEndpoint (a static address, no IPAM call) fails fast too.
    started = time.monotonic()
    status, answer = victim.plugin_call("/NetworkDriver.CreateEndpoint", {
        "NetworkID": nets[victim], "EndpointID": "e" * 64, "Interface": {"Address": "10.60.12.200/24"}})
    assert status >= 500 and "consul" in answer["Err"].lower(), answer
    assert time.monotonic() - started < 10
    new = run_on(peer, "new", "ov")  # the rest of the cluster carries on
    obed.start_consul(victim)
    obed.wait_for_cluster(timeout=60)
    wait_until(lambda: (new.ip, new.mac) in neighbours(victim, nets[victim]), 30,
               "victim's watcher caught up after Consul healed")
    reach(b, new)
    victim.docker("rm", "-f", "late", check=False)
    reach(run_on(victim, "late", "ov"), a)


def test_a_host_cut_off_the_underlay_is_withdrawn_and_catches_up_when_healed(obed: MultiHost) -> None:
    victim = leader_free(obed)[0]
    peer = next(h for h in obed.hosts if h is not victim)
    nets = spread(obed.hosts, "ov", "10.60.13.0/24")
    a, gone, c = run_on(peer, "ca", "ov"), run_on(peer, "gone", "ov"), run_on(victim, "cc", "ov")
    reach(c, a), reach(c, gone)
    obed.cut(victim)
    # The others stop sending to it after the peer timeout (6 s here); its claims stay.
    wait_until(lambda: not any(dst == victim.address for _, dst in fdb(peer, nets[peer])), 30,
               f"{peer}'s entries for the cut {victim} withdrawn")
    assert any(k.startswith(f"pynet/v1/overlay/hosts/{victim.name}/peers/") for k in obed.kv(host=peer))
    new = _changes_meanwhile(peer, gone, "new")
    obed.heal(victim)
    want = {(a.ip, a.mac), (new.ip, new.mac)}
    wait_until(lambda: want <= neighbours(victim, nets[victim]) and
               (gone.ip, gone.mac) not in neighbours(victim, nets[victim]), 60,
               f"{victim} caught up after healing")
    wait_until(lambda: (c.mac, victim.address) in fdb(peer, nets[peer]), 30, f"{victim} back on {peer}")
    reach(c, new), reach(new, c)


# --- the last delete -----------------------------------------------------------------------
def test_the_last_delete_frees_the_vni_and_pool_and_nothing_is_left_behind(obed: MultiHost) -> None:
    nets = spread(obed.hosts, "ov", "10.60.14.0/24")
    ctrs = [run_on(h, f"c{h.index}", "ov") for h in obed.hosts]
    reach(ctrs[0], ctrs[2])
    vni = vxlan_vni(obed.hosts[0], nets[obed.hosts[0]])
    vni_key = f"pynet/v1/overlay/vnis/{vni}"
    assert vni_key in obed.kv("pynet/v1/overlay/") and pool_record(obed, "10.60.14.0/24") is not None
    for i, h in enumerate(obed.hosts):
        h.docker("rm", "-f", ctrs[i].name)
        h.docker("network", "rm", "ov")
        if i < 2:  # others still hold it
            assert vni_key in obed.kv("pynet/v1/overlay/")
            assert pool_record(obed, "10.60.14.0/24") is not None
    assert obed.kv("pynet/v1/overlay/") == {}
    assert pool_record(obed, "10.60.14.0/24") is None
    assert obed.kv("pynet/v1/ipam/addrs/") == {} and obed.kv("pynet/v1/ipam/blocks/") == {}
    # The heartbeats go once each watcher has seen its host leave its last overlay; what
    # stays under pynet's prefix are per-host keys (fences, the engine proof), none per network.
    wait_until(lambda: obed.kv("pynet/v1/overlay-alive/") == {}, 15, "the heartbeat keys gone")
    left = [k for k in obed.kv("pynet/") if not k.endswith(HOST_KEYS) and "/ipam/fences/" not in k
            and not k.startswith("pynet/v1/ipam/spaces/")]
    assert left == [], left
    for h in obed.hosts:
        links = h.run("ip", "-o", "link", "show").stdout
        assert not [line for line in links.splitlines() if naming.is_pynet_link(line.split(": ")[1].split("@")[0])], links
        assert not [n for n in h.run("ip", "netns", "list").stdout.split() if n.startswith("pno-")]
        assert "dst" not in h.run("bridge", "fdb", "show").stdout  # no VXLAN entries anywhere
    # The VNI is free again: the next overlay takes it.
    again = spread(obed.hosts[:1], "ov2", "10.60.15.0/24")
    assert vxlan_vni(obed.hosts[0], again[obed.hosts[0]]) == vni
    obed.hosts[0].docker("network", "rm", "ov2")
    assert obed.kv("pynet/v1/overlay/") == {}
