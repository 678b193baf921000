"""A forged "fourth host" on the three-host bed (issue 17 item 8): real dockerd, real Consul
cluster, real kernel on every simulated host.

Three hosts share an overlay with a container each. Then records of a host "h4" that does not
exist are written straight into Consul, as a hostile writer would (no pynet code): a member
record, peer records claiming the real containers' addresses and MACs, and junk. Its
heartbeat keeps moving, so liveness never hides it: only the readers' checks can.

Afterwards the real containers' FDB and neighbour entries on every host are exactly as before
(plus a new container, which proves the hosts synced past the forged records), the containers
still reach each other (ping and TCP, across hosts), every plugin call through dockerd works,
and a pynet killed (-9) and started with the forged records present starts and serves.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from driver import naming
from tests.harness.hostile_store import RawConsul, alive_key, member_key, peer_key
from tests.harness.multihost import Host, MultiHost
from tests.harness.netprobe import CLIENT
from tests.harness.wait import wait_until
from tests.multihost.support import (Ctr, brought_up, clear_overlay_bed, ctr_python, fdb, neighbours,
                                     network_id, overlay_create, pings, run_on, start_server)

FLOOD = "00:00:00:00:00:00"
SPACE, SUBNET = "LocalDefault", "10.61.1.0/24"
FORGER = "h4"
FORGER_VTEP = "198.18.23.44"  # on the bed's underlay; no host answers there
CONVERGE = 15.0


@pytest.fixture(scope="module")
def fbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHost]:
    bed = MultiHost(tmp_path_factory.mktemp("forged"), name="pnfr", underlay="198.18.23.0/24",
                    plugin_args=("--overlay-peer-timeout", "6"), dockerd_args=("--live-restore",))
    with brought_up("forged-records", bed):
        yield bed


@pytest.fixture
def forger(fbed: MultiHost) -> Iterator[RawConsul]:
    """Raw writes into the cluster (through h1's agent), and h4's heartbeat moving every
    second until the test ends; everything of h4's is removed afterwards."""
    raw = RawConsul(fbed.hosts[0].consul_addr)
    stop = threading.Event()

    def beat() -> None:
        n = 0
        while not stop.wait(1.0):
            n += 1
            raw.put(alive_key(FORGER), {"host": FORGER, "beat": str(n)})
    raw.put(alive_key(FORGER), {"host": FORGER, "beat": "0"})
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield raw
    finally:
        stop.set()
        thread.join(5)
        raw.delete(f"v1/overlay/hosts/{FORGER}/", recurse=True)
        raw.delete(alive_key(FORGER))
        for h in fbed.hosts:
            if not h.plugin.running():
                h.plugin.start()
                fbed.wait_plugin(h)
        clear_overlay_bed(fbed)


def expected(host: Host, ctrs: list[Ctr], hosts: list[Host]) -> tuple[set, set]:
    """What `host`'s VXLAN device and bridge must hold for the others' containers."""
    remote = [c for c in ctrs if c.host is not host]
    fdb_want = {(FLOOD, h.address) for h in hosts if h is not host} | {(c.mac, c.host.address) for c in remote}
    return fdb_want, {(c.ip, c.mac) for c in remote}


def container_entries(host: Host, nid: str) -> tuple[set, set]:
    """The host's entries for containers, and its flood list apart."""
    f = fdb(host, nid)
    return {e for e in f if e[0] != FLOOD}, neighbours(host, nid)


def assert_entries(hosts: list[Host], nets: dict[Host, str], ctrs: list[Ctr], what: str) -> None:
    for h in hosts:
        fdb_want, neigh_want = expected(h, ctrs, hosts)
        flood_want = {e for e in fdb_want if e[0] == FLOOD}
        have = fdb(h, nets[h])
        flood = {e for e in have if e[0] == FLOOD}
        assert container_entries(h, nets[h]) == ({e for e in fdb_want if e[0] != FLOOD}, neigh_want), \
            f"{what}: {h}'s container entries: {container_entries(h, nets[h])}, want {fdb_want} {neigh_want}"
        # h4's member record is well formed: its flood entry may be there, nothing else new.
        assert flood_want <= flood <= flood_want | {(FLOOD, FORGER_VTEP)}, f"{what}: {h}'s flood list {flood}"


def converged(hosts: list[Host], nets: dict[Host, str], ctrs: list[Ctr]) -> bool:
    return all(container_entries(h, nets[h]) == (
        {e for e in expected(h, ctrs, hosts)[0] if e[0] != FLOOD}, expected(h, ctrs, hosts)[1])
        for h in hosts)


def traffic(ctrs: list[Ctr]) -> None:
    servers = [start_server(c.pid) for c in ctrs]
    try:
        for a in ctrs:
            for b in ctrs:
                if a is not b:
                    wait_until(lambda: pings(a, b.ip), CONVERGE, f"{a.name} pinging {b.name} ({b.ip})")
                    assert ctr_python(a, CLIENT, "tcp", b.ip, "7000") == f"tcp {a.ip}", (a.name, b.name)
    finally:
        for s in servers:
            s.kill()
            s.wait()


def another_overlay_round_trip(host: Host, tag: str) -> None:
    """Every plugin call of an unrelated overlay, through dockerd: create, run, rm, rm."""
    overlay_create(host, f"other{tag}", f"10.61.{100 + int(tag)}.0/24")
    run_on(host, f"o{tag}", f"other{tag}")
    host.docker("rm", "-f", f"o{tag}")
    host.docker("network", "rm", f"other{tag}")


def test_a_forged_fourth_host_changes_no_entry_no_traffic_and_no_call(fbed: MultiHost, forger: RawConsul) -> None:
    hosts = fbed.hosts
    nets = {h: (overlay_create(h, "ov", SUBNET), network_id(h, "ov"))[1] for h in hosts}
    ctrs = [run_on(h, f"c{h.index}", "ov") for h in hosts]
    wait_until(lambda: converged(hosts, nets, ctrs), CONVERGE, "every host has the others' containers")
    assert_entries(hosts, nets, ctrs, "before h4")
    traffic(ctrs)

    # h4, as a hostile writer would forge it: a well-formed member record, peers claiming the
    # real containers' addresses and MACs (none of which it holds), and junk.
    c1, c2, c3 = ctrs
    nid4 = "d4" * 32
    member = {"host": FORGER, "network": nid4, "vtep": FORGER_VTEP,
              "netns": naming.overlay_netns(nid4), "vxlan": naming.vxlan(nid4)}
    forged = {
        member_key(FORGER, SPACE, SUBNET): member,
        # c1 whole: its address and its MAC.
        peer_key(FORGER, SPACE, SUBNET, "a1" * 32): {"host": FORGER, "endpoint": "a1" * 32, "network": nid4,
                                                     "ip": c1.ip, "mac": c1.mac, "vtep": FORGER_VTEP},
        # c2's address with a MAC of h4's own.
        peer_key(FORGER, SPACE, SUBNET, "a2" * 32): {"host": FORGER, "endpoint": "a2" * 32, "network": nid4,
                                                     "ip": c2.ip, "mac": "02:42:0a:3d:44:02", "vtep": FORGER_VTEP},
        # A free address with c3's MAC.
        peer_key(FORGER, SPACE, SUBNET, "a3" * 32): {"host": FORGER, "endpoint": "a3" * 32, "network": nid4,
                                                     "ip": "10.61.1.200", "mac": c3.mac, "vtep": FORGER_VTEP},
        # h4 claiming to be h1, under h4's prefix.
        peer_key(FORGER, SPACE, SUBNET, "a4" * 32): {"host": "h1", "endpoint": "a4" * 32, "network": nid4,
                                                     "ip": c1.ip, "mac": c1.mac, "vtep": hosts[0].address},
        peer_key(FORGER, SPACE, SUBNET, "a5" * 32): b"\xff\xfe{junk, not JSON, not UTF-8",
        member_key(FORGER, SPACE, "10.61.2.0/24"): b"[1, 2",
    }
    for key, value in forged.items():
        assert forger.put(key, value)[0] == 200, key

    # A new container on h1: once h2 and h3 have it, they synced past h4's records.
    c1b = run_on(hosts[0], "c1b", "ov")
    ctrs = [*ctrs, c1b]
    wait_until(lambda: converged(hosts, nets, ctrs), CONVERGE, "every host has the new container")
    assert_entries(hosts, nets, ctrs, "with h4's records")
    traffic(ctrs)
    for h in hosts:
        another_overlay_round_trip(h, str(h.index))

    # A pynet killed and started with h4's records present starts, restores and serves.
    victim = hosts[1]
    victim.plugin.kill()
    victim.plugin.start()
    fbed.wait_plugin(victim)
    c2b = run_on(victim, "c2b", "ov")
    ctrs = [*ctrs, c2b]
    wait_until(lambda: converged(hosts, nets, ctrs), CONVERGE, "every host has the restarted host's new container")
    assert_entries(hosts, nets, ctrs, f"after {victim}'s plugin restarted")
    traffic([c1, c2b, c3])
    another_overlay_round_trip(victim, "9")
    assert "Traceback" not in Path(victim.plugin.log_path).read_text(errors="replace")
