"""Encrypted overlays (`-o type=overlay -o encrypted`, issue 20) on the three-host bed: real
dockerd, real Consul cluster, real kernel on every simulated host, wireguard-go started by
each host's pynet (`--wireguard=userspace`: this kernel has no WireGuard module).

Tunnel addresses come from 198.19.250.0/24 (--wireguard-subnet), inside 198.18.0.0/15 like
everything else of the bed; `<bed>-out` on the underlay plays the attacker. After each test
every container and network goes, and nothing of pynet's overlay may stay in Consul.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.harness.multihost import Host, MultiHost
from tests.harness.netprobe import CAPTURE, CLIENT, FORGE_VXLAN, PING_DF, RECEIVE, SEND_MARKER, SINK
from tests.harness.wait import wait_until
from tests.multihost.support import (Ctr, Outside, brought_up, clear_overlay_bed, ctr_python, fdb, in_netns_of,
                                     network_id, overlay_create, pings, run_on, start_server, vxlan_vni)

CONVERGE = 20.0
WG_SUBNET = "198.19.250.0/24"
ENC_PORT, WG_PORT = 4799, 51820
LINK = "pnwg0"


@pytest.fixture(scope="module")
def ebed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHost]:
    bed = MultiHost(tmp_path_factory.mktemp("encrypted"), name="pnenc", underlay="198.18.31.0/24",
                    plugin_args=("--overlay-peer-timeout", "6", "--wireguard", "userspace",
                                 "--wireguard-subnet", WG_SUBNET))
    with brought_up("encrypted overlay", bed, outside=True):
        yield bed


@pytest.fixture(autouse=True)
def _reset(ebed: MultiHost) -> Iterator[None]:
    yield
    for h in ebed.hosts:
        if not h.plugin.running():
            h.plugin.start()
            ebed.wait_plugin(h)
    clear_overlay_bed(ebed)
    wait_until(lambda: all(not wg_link_present(h) for h in ebed.hosts), CONVERGE,
               "no WireGuard link left after the last encrypted overlay")


def spread(hosts: list[Host], name: str, subnet: str) -> dict[Host, str]:
    return {h: (overlay_create(h, name, subnet, "-o", "encrypted"), network_id(h, name))[1] for h in hosts}


def reach(a: Ctr, b: Ctr, timeout: float = CONVERGE) -> None:
    wait_until(lambda: pings(a, b.ip), timeout, f"{a.name} on {a.host} pinging {b.name} ({b.ip}) on {b.host}")


def wg_link_present(h: Host) -> bool:
    return h.run("ip", "link", "show", LINK, check=False).returncode == 0


def wireguard_go_in(h: Host) -> list[int]:
    """PIDs of wireguard-go processes in the host's network namespace."""
    import os
    inode = os.stat(f"/run/netns/{h.netns}").st_ino
    found = []
    for pid in subprocess.run(["pgrep", "-x", "wireguard-go"], capture_output=True, text=True).stdout.split():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                found.append(int(pid))
        except OSError:
            pass
    return found


def wg_dump(h: Host) -> list[list[str]]:
    """`wg show pnwg0 dump` inside the host: its peers' lines (public key, psk, endpoint, ...)."""
    out = h.run("wg", "show", LINK, "dump", check=False).stdout.splitlines()
    return [line.split("\t") for line in out[1:]]


def test_containers_on_three_hosts_reach_each_other_through_wireguard_only(ebed: MultiHost) -> None:
    nets = spread(ebed.hosts, "enc", "10.61.1.0/24")
    ctrs = [run_on(h, f"c{h.index}", "enc") for h in ebed.hosts]
    h1 = ebed.hosts[0]
    # One WireGuard link per host, its peers the two others, each allowed its tunnel /32.
    wait_until(lambda: all(len(wg_dump(h)) == 2 for h in ebed.hosts), CONVERGE, "two WireGuard peers per host")
    for line in wg_dump(h1):
        assert line[2].startswith("198.18.31.") and line[2].endswith(f":{WG_PORT}")
        assert line[3].startswith("198.19.250.") and line[3].endswith("/32")
    # The VXLAN entries point at tunnel addresses, never at a VTEP.
    wait_until(lambda: len(fdb(h1, nets[h1])) == 4, CONVERGE, "h1's entries")
    assert all(dst.startswith("198.19.250.") for _, dst in fdb(h1, nets[h1]))
    assert len({vxlan_vni(h, nid) for h, nid in nets.items()}) == 1
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


def test_the_encrypted_mtu_with_df(ebed: MultiHost) -> None:
    h1, h2 = ebed.hosts[:2]
    spread([h1, h2], "enc", "10.61.2.0/24")
    a, b = run_on(h1, "ca", "enc"), run_on(h2, "cb", "enc")
    reach(a, b)
    assert "mtu 1390" in in_netns_of(a.pid, "ip", "link", "show", "eth0").stdout
    assert ctr_python(a, PING_DF, b.ip, "1362") == "ok 1362"  # 1362 + 8 + 20 = 1390 = 1500 - 50 - 60
    assert ctr_python(a, PING_DF, b.ip, "1363") == "fail Message too long"


def test_an_underlay_capture_finds_only_wireguard_and_no_marker(ebed: MultiHost) -> None:
    h1, h2 = ebed.hosts[:2]
    spread([h1, h2], "enc", "10.61.3.0/24")
    a, b = run_on(h1, "ca", "enc"), run_on(h2, "cb", "enc")
    reach(a, b)
    marker = "PYNET-ENC-MARKER-91c2"
    sink = subprocess.Popen(["nsenter", f"--net=/proc/{b.pid}/ns/net", sys.executable, "-c", SINK, "7100"],
                            stdout=subprocess.PIPE, text=True)
    cap = subprocess.Popen(["ip", "netns", "exec", ebed.switch_ns, sys.executable, "-c", CAPTURE,
                            h1.switch_port, "5", marker], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        assert cap.stdout is not None and cap.stdout.readline().strip() == "ready"
        assert ctr_python(a, SEND_MARKER, b.ip, "7100", marker, "2048") == "sent 2048"
        found = json.loads(cap.communicate(timeout=30)[0])
    finally:
        for p in (sink, cap):
            p.kill()
            p.wait()
    assert found["marker_frames"] == 0, found
    assert str(ENC_PORT) not in found["udp_dports"] and "4789" not in found["udp_dports"], found
    assert found["udp_dports"].get(str(WG_PORT), 0) > 1000, found


def test_a_forged_vxlan_frame_from_the_underlay_reaches_no_container(ebed: MultiHost) -> None:
    h1, h2 = ebed.hosts[:2]
    nets = spread([h1, h2], "enc", "10.61.4.0/24")
    a, b = run_on(h1, "ca", "enc"), run_on(h2, "cb", "enc")
    reach(a, b)
    vni = str(vxlan_vni(h2, nets[h2]))
    outside: Outside = ebed.outside  # type: ignore[attr-defined]

    def delivered(to_port: int) -> str:
        rx = subprocess.Popen(["nsenter", f"--net=/proc/{b.pid}/ns/net", sys.executable, "-c", RECEIVE,
                               "7200", "3"], stdout=subprocess.PIPE, text=True)
        try:
            assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
            assert outside.python(FORGE_VXLAN, h2.address, str(to_port), vni, b.mac, b.ip, "7200",
                                  "10.61.4.99") == "sent"
            return rx.communicate(timeout=10)[0].strip()
        finally:
            rx.kill()
            rx.wait()

    assert delivered(ENC_PORT) == "none"
    assert delivered(WG_PORT) == "none"
    assert delivered(4789) == "none"          # no unencrypted device carries that VNI either
    # The control: without pynet's guard table the same frame reaches the container.
    h2.run("nft", "delete", "table", "inet", "pynet_wireguard")
    try:
        assert delivered(ENC_PORT) == "got FORGED"
    finally:
        h2.plugin.kill()                       # a restarted plugin puts the table back
        h2.plugin.start()
        ebed.wait_plugin(h2)
    wait_until(lambda: h2.run("nft", "list", "table", "inet", "pynet_wireguard", check=False).returncode == 0,
               CONVERGE, "the guard table back after the restart")
    assert delivered(ENC_PORT) == "none"
    reach(a, b)


def test_a_plugin_kill_9_keeps_traffic_and_a_rotated_key_keeps_talking(ebed: MultiHost) -> None:
    h1, h2 = ebed.hosts[:2]
    spread([h1, h2], "enc", "10.61.5.0/24")
    a, b = run_on(h1, "ca", "enc"), run_on(h2, "cb", "enc")
    reach(a, b)
    h1.plugin.kill()
    assert pings(a, b.ip) and pings(b, a.ip)   # the link outlives the plugin
    h1.plugin.start()
    ebed.wait_plugin(h1)
    reach(a, b)
    before = {line[0] for line in wg_dump(h2)}
    status, answer = h1.plugin_call("Pynet.RotateWireGuardKey", {})
    assert status == 200 and answer["PublicKey"] != answer["Previous"], answer
    wait_until(lambda: {line[0] for line in wg_dump(h2)} == {answer["PublicKey"]}, CONVERGE,
               "h2 taking h1's new key")
    assert before == {answer["Previous"]}
    reach(a, b)



def test_consul_unreachable_everywhere_keeps_traffic_flowing_with_the_keys_it_has(ebed: MultiHost) -> None:
    """Every Consul server down for longer than the peer timeout (6 s here): no host can read
    or write, so none is judged on that stretch (liveness.forgive); each link keeps its peers,
    keys and endpoints, and the containers keep talking through WireGuard."""
    h1, h2 = ebed.hosts[:2]
    spread(ebed.hosts, "enc", "10.61.9.0/24")
    a, b = run_on(h1, "ca", "enc"), run_on(h2, "cb", "enc")
    reach(a, b)
    reach(b, a)
    wait_until(lambda: all(len(wg_dump(h)) == 2 for h in ebed.hosts), CONVERGE, "two WireGuard peers per host")
    before = {h: sorted((p[0], p[2], p[3]) for p in wg_dump(h)) for h in ebed.hosts}
    for h in ebed.hosts:
        ebed.kill_consul(h)
    try:
        outage_end = time.monotonic() + 15  # 2.5 peer timeouts
        lost = 0
        while time.monotonic() < outage_end:
            lost += (not pings(a, b.ip, wait=2)) + (not pings(b, a.ip, wait=2))
            time.sleep(0.5)
        assert lost == 0, f"{lost} pings lost while Consul was down"
        assert {h: sorted((p[0], p[2], p[3]) for p in wg_dump(h)) for h in ebed.hosts} == before
    finally:
        for h in ebed.hosts:
            ebed.start_consul(h)
        ebed.wait_for_cluster(timeout=90)
    # Back with the store: still the same peers, and the traffic never stopped.
    assert pings(a, b.ip) and pings(b, a.ip)
    assert {h: sorted((p[0], p[2], p[3]) for p in wg_dump(h)) for h in ebed.hosts} == before


def test_a_host_cut_off_is_withdrawn_as_a_wireguard_peer_and_rehandshakes_when_healed(ebed: MultiHost) -> None:
    leader = ebed.wait_for_leader()
    victim = next(h for h in ebed.hosts if h is not leader)
    peer = leader
    spread([peer, victim], "enc", "10.61.7.0/24")
    a, c = run_on(peer, "ca", "enc"), run_on(victim, "cc", "enc")
    reach(c, a)
    victim_key = next(line[0] for line in wg_dump(peer))
    ebed.cut(victim)
    # The peer timeout is 6 s on this bed: the victim's WireGuard peer goes with its entries.
    wait_until(lambda: victim_key not in {line[0] for line in wg_dump(peer)}, 30,
               f"{victim} withdrawn as a WireGuard peer of {peer}")
    ebed.heal(victim)
    wait_until(lambda: victim_key in {line[0] for line in wg_dump(peer)}, 60, f"{victim} a peer again")
    reach(c, a, timeout=60), reach(a, c)
    handshake = {line[0]: int(line[4]) for line in wg_dump(peer)}[victim_key]
    assert handshake > 0

def test_nothing_is_left_after_the_last_delete(ebed: MultiHost) -> None:
    h1, h2 = ebed.hosts[:2]
    spread([h1, h2], "enc", "10.61.6.0/24")
    a, b = run_on(h1, "ca", "enc"), run_on(h2, "cb", "enc")
    reach(a, b)
    assert all(wg_link_present(h) for h in (h1, h2))
    for h, c in ((h1, a), (h2, b)):
        h.docker("rm", "-f", c.name)
        h.docker("network", "rm", "enc")
    for h in (h1, h2):
        assert not wg_link_present(h)
        assert wireguard_go_in(h) == []
        assert h.run("nft", "list", "table", "inet", "pynet_wireguard", check=False).returncode != 0
    kv = ebed.kv("pynet/v1/overlay/")
    assert not [k for k in kv if "/wireguard" in k or "/tunnels/" in k], kv
