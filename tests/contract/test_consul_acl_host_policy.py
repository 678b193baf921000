"""The per-host least-privilege policy (docs/consul-policy-host.hcl, issue 17 item 3), against
a real Consul agent with ACLs on (default deny):

* with host A's token, every store write pynet makes for A works: IPAM pools and addresses,
  network and endpoint records, overlay join / publish / heartbeat / leave, the Swarm VNI
  allocator, restore after a restart, and the background jobs (no "refused access" logged);
* with A's token, raw writes (and deletes) of host B's keys are refused with 403, and of A's
  own keys accepted: a host cannot speak for another in the store.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from driver.kinds.overlay.model import OverlayId
from pynet_core.store.consul import ConsulStore
from tests.harness.consul import ConsulAgent
from tests.harness.hostile_store import (RawConsul, addr_key, alive_key, def_key, member_key,
                                         old_member_key, old_peer_key, peer_key)
from tests.harness.overlay_fake import FakeHost

POLICY = Path(__file__).resolve().parents[2] / "docs" / "consul-policy-host.hcl"
MASTER = "5d2b7e1a-3c4f-4a6b-8d9e-0f1a2b3c4d5e"
SPACE, SUBNET = "LocalDefault", "10.77.0.0/24"
A, B = "ha", "hb"
NID_A, NID_B = "a" * 64, "b" * 64
EID_A, EID_B = "ae" * 32, "be" * 32

pytestmark = pytest.mark.consul


def host_policy(host: str) -> str:
    text = POLICY.read_text()
    assert text.count("/HOST") == 5, "the policy names the host in five rules"
    return text.replace("/HOST", f"/{host}")


@pytest.fixture(scope="module")
def agent():
    with ConsulAgent(acl_token=MASTER) as agent:
        yield agent


@pytest.fixture(scope="module")
def tokens(agent) -> dict[str, str]:
    """One policy and one token per host, made as docs/consul.md says (HTTP API)."""
    admin = RawConsul(agent.addr, MASTER)
    made = {}
    for host in (A, B):
        admin.acl("policy", {"Name": f"pynet-{host}", "Rules": host_policy(host)})
        made[host] = admin.acl("token", {"Description": f"pynet on {host}",
                                         "Policies": [{"Name": f"pynet-{host}"}]})["SecretID"]
    return made


@pytest.fixture
def admin(agent):
    raw = RawConsul(agent.addr, MASTER)
    raw.delete("", recurse=True)
    yield raw
    raw.delete("", recurse=True)


def _refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "refused access" in r.getMessage() or "403" in r.getMessage()
            or "Permission denied" in r.getMessage()]


def test_each_hosts_own_token_is_enough_for_everything_pynet_writes(agent, tokens, admin, caplog):
    caplog.set_level(logging.INFO)
    stores = {h: ConsulStore(agent.addr, token=tokens[h], prefix="pynet/") for h in (A, B)}
    started: list[FakeHost] = []
    try:
        ha = FakeHost(A, "198.18.0.11", stores[A])
        started.append(ha)
        hb = FakeHost(B, "198.18.0.12", stores[B])
        started.append(hb)
        ctrs = {}
        for h, nid, eid in ((ha, NID_A, EID_A), (hb, NID_B, EID_B)):
            pool = h.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": SUBNET,
                                                   "SubPool": "", "Options": {}, "V6": False})["PoolID"]
            gateway = h.ok("IpamDriver.RequestAddress", {
                "PoolID": pool, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}})
            status, answer = h.create_network(nid, SUBNET)
            assert status == 200, (h.name, answer)
            address = h.ok("IpamDriver.RequestAddress", {
                "PoolID": pool, "Address": "", "Options": {"com.docker.network.endpoint.name": h.name}})["Address"]
            h.create_endpoint(nid, eid, address)
            ctrs[h.name] = (pool, gateway["Address"], address)
        ha.client.overlay.registry.beat()
        hb.client.overlay.registry.beat()
        for h in (ha, hb):
            h.sync()

        # Every record is where the decided layout puts it, written by its own host.
        for host, nid, eid in ((A, NID_A, EID_A), (B, NID_B, EID_B)):
            member = admin.get_json(member_key(host, SPACE, SUBNET))
            assert member is not None and member["host"] == host and member["network"] == nid
            peer = admin.get_json(peer_key(host, SPACE, SUBNET, eid))
            assert peer is not None and peer["host"] == host and peer["ip"] == ctrs[host][2].split("/")[0]
            assert admin.get(alive_key(host)) is not None
            assert admin.get(f"v1/hosts/{host}/networks/{nid}") is not None
            assert admin.get(f"v1/hosts/{host}/endpoints/{nid}/{eid}") is not None
            assert admin.get(addr_key(SPACE, SUBNET, ctrs[host][2].split("/")[0])) is not None
        assert admin.get(def_key(SPACE, SUBNET)) is not None
        assert admin.keys("v1/overlay/nets/") == [def_key(SPACE, SUBNET)]  # nothing else shared

        # Each host programmed the other's endpoint: both read every host's records.
        b_ip, a_ip = ctrs[B][2].split("/")[0], ctrs[A][2].split("/")[0]
        assert any(dst == "198.18.0.12" for _, dst in ha.fdb(NID_A))
        assert {ip for ip, _ in ha.neighbours(NID_A)} == {b_ip}
        assert {ip for ip, _ in hb.neighbours(NID_B)} == {a_ip}

        # Swarm's VNI allocator (shared v1/overlay/vnis/, fenced by the host's own fence).
        registry = ha.client.overlay.registry
        vni = registry.allocate_swarm_vni("f" * 64, OverlayId(SPACE, "10.78.0.0/24"), None)
        assert registry.free_swarm_vni("f" * 64) == vni

        # A restart restores (re-joins, re-publishes) with the same token.
        ha.restart()
        ha.sync()
        assert {ip for ip, _ in ha.neighbours(NID_A)} == {b_ip}

        # And everything goes again.
        for h, nid, eid in ((ha, NID_A, EID_A), (hb, NID_B, EID_B)):
            pool, gateway, address = ctrs[h.name]
            h.delete_endpoint(nid, eid)
            h.ok("IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": address.split("/")[0]})
            h.ok("NetworkDriver.DeleteNetwork", {"NetworkID": nid})
            h.ok("IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": gateway.split("/")[0]})
            h.ok("IpamDriver.ReleasePool", {"PoolID": pool})
        for h in (ha, hb):
            h.sync()  # the watcher retires the heartbeat of a host with no overlay left
        assert admin.keys("v1/overlay/") == []
        assert admin.keys("v1/ipam/addrs/") == []
        assert admin.keys("v1/overlay-alive/") == []
        assert _refusals(caplog) == []
    finally:
        for h in started:
            h.stop()
        for s in stores.values():
            s.close()


# Host B's keys (and keys of a host "hax" whose name starts with A's: prefixes end in "/").
FOREIGN = [
    member_key(B, SPACE, SUBNET),
    peer_key(B, SPACE, SUBNET, EID_B),
    alive_key(B),
    "v1/ipam/fences/hb",
    f"v1/hosts/{B}/networks/{NID_B}",
    f"v1/hosts/{B}/endpoints/{NID_B}/{EID_B}",
    f"v1/hosts/{B}/names/network/{NID_B[:12]}",
    f"v1/hosts/{B}/fence",
    f"v1/hosts/{B}/overlay-fence",
    f"v1/hosts/{B}/seen",
    f"v1/hosts/{B}/docker",
    f"v1/names/hosts/{B}/{EID_B}",
    member_key("hax", SPACE, SUBNET),
    peer_key("hax", SPACE, SUBNET, EID_B),
    f"v1/overlay/hosts/{B}/wireguard",
    "v1/overlay/hosts/hax/wireguard",
    alive_key("hax"),
    "v1/ipam/fences/hax",
    "v1/hosts/hax/seen",
    f"v1/names/hosts/hax/{EID_B}",
    "v1/names/hosts/x",  # not under any host's own prefix
    "v1/overlay/hosts/members",  # not under any host's own prefix
    "v1/overlay-alive/",
]
OWN = [
    member_key(A, SPACE, SUBNET),
    peer_key(A, SPACE, SUBNET, EID_A),
    alive_key(A),
    "v1/ipam/fences/ha",
    f"v1/hosts/{A}/networks/{NID_A}",
    f"v1/hosts/{A}/endpoints/{NID_A}/{EID_A}",
    f"v1/hosts/{A}/fence",
    f"v1/hosts/{A}/overlay-fence",
    f"v1/hosts/{A}/seen",
    f"v1/overlay/hosts/{A}/wireguard",
    f"v1/names/hosts/{A}/{EID_A}",
]
# Shared by every host (Consul's ACLs cannot tell one writer's value from another's): the
# readers' checks, not the ACL, stop a forged record here (docs/overlay.md, threat model).
SHARED = [
    def_key(SPACE, SUBNET),
    "v1/overlay/vnis/4096",
    "v1/overlay/tunnels/100.127.0.9",
    addr_key(SPACE, SUBNET, "10.77.0.9"),
    f"v1/ipam/blocks/{SPACE}/10.77.0.0_24/10.77.0.64_26",
    f"v1/ipam/spaces/{SPACE}",
    old_member_key(B, SPACE, SUBNET),
    old_peer_key(B, SPACE, SUBNET, EID_B),
]


def test_a_hosts_token_is_refused_every_key_of_another_host(agent, tokens, admin):
    as_a = RawConsul(agent.addr, tokens[A])
    record = {"host": B, "network": NID_B, "vtep": "198.18.0.12", "netns": "pno-x", "vxlan": "pnx-x"}
    for key in FOREIGN:
        assert as_a.put(key, record) == (403, b"Permission denied"), key
        admin.put(key, "held")  # present: a delete must be refused too, not just find nothing
        assert as_a.delete(key) == (403, b"Permission denied"), key
        assert admin.get(key) == b"held", key
    # All or nothing: a transaction that touches one of B's keys does not commit A's part.
    status, body = as_a.txn([
        {"KV": {"Verb": "set", "Key": f"pynet/{peer_key(A, SPACE, SUBNET, EID_A)}", "Value": "e30="}},
        {"KV": {"Verb": "set", "Key": f"pynet/{peer_key(B, SPACE, SUBNET, EID_B)}", "Value": "e30="}},
    ])
    assert status == 409 and b"Permission denied" in body, (status, body)
    assert admin.get(peer_key(A, SPACE, SUBNET, EID_A)) is None
    # Nothing outside pynet's prefix, not even to read.
    outside = RawConsul(agent.addr, tokens[A], prefix="other/")
    assert outside.put("k", "v") == (403, b"Permission denied")
    assert outside.request("GET", "/v1/kv/other/k")[0] == 403


def test_a_hosts_token_writes_its_own_and_the_shared_keys(agent, tokens, admin):
    as_a = RawConsul(agent.addr, tokens[A])
    for key in OWN + SHARED:
        assert as_a.put(key, {"host": A}) == (200, b"true\n"), key
        assert json.loads(admin.get(key)) == {"host": A}, key
        assert as_a.delete(key) == (200, b"true\n"), key
    # It reads every host's records: the overlay needs them.
    admin.put(peer_key(B, SPACE, SUBNET, EID_B), {"host": B})
    assert as_a.get_json(peer_key(B, SPACE, SUBNET, EID_B)) == {"host": B}
    assert peer_key(B, SPACE, SUBNET, EID_B) in as_a.keys("v1/overlay/")


def test_a_pynet_run_with_another_hosts_token_is_refused_naming_consul(agent, tokens, admin):
    """The token is host A's, the --host-id says "hc": pynet cannot write hc's keys, and the
    call says why instead of half making the network."""
    store = ConsulStore(agent.addr, token=tokens[A], prefix="pynet/")
    hc = FakeHost("hc", "198.18.0.13", store)
    try:
        # Docker asks the IPAM for the pool first: refused there, naming Consul's refusal.
        status, answer = hc.call("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": SUBNET,
                                                            "Options": {}, "V6": False})
        assert status >= 500 and "refused access" in answer["Err"], (status, answer)
        # And an overlay without that pool is refused before any write.
        status, answer = hc.create_network(NID_A, SUBNET, pool_from_pynet=False)
        assert status >= 400 and "Err" in answer, (status, answer)
        assert admin.keys("v1/hosts/") == [] and admin.keys("v1/overlay/") == []
        assert hc.netlink.world == {}  # no namespace, no VXLAN device left behind
    finally:
        hc.stop()
        store.close()



def test_encrypted_overlays_need_nothing_beyond_each_hosts_own_token(agent, tokens, admin, caplog):
    """Each host's WireGuard record (its own prefix) and its tunnel address claim (shared
    v1/overlay/tunnels/), made, read by the other host, and removed with the last network."""
    caplog.set_level(logging.INFO)
    stores = {h: ConsulStore(agent.addr, token=tokens[h], prefix="pynet/") for h in (A, B)}
    started: list[FakeHost] = []
    try:
        for name, vtep in ((A, "198.18.0.11"), (B, "198.18.0.12")):
            started.append(FakeHost(name, vtep, stores[name], encrypted=True))
        ha, hb = started
        for h, nid in ((ha, NID_A), (hb, NID_B)):
            h.ok("IpamDriver.RequestPool", {"AddressSpace": SPACE, "Pool": SUBNET, "SubPool": "",
                                            "Options": {}, "V6": False})
            status, answer = h.create_network(nid, SUBNET, encrypted="")
            assert status == 200, (h.name, answer)
        for h in (ha, hb):
            h.sync()
        assert sorted(admin.keys("v1/overlay/tunnels/")) == ["v1/overlay/tunnels/100.127.0.1",
                                                              "v1/overlay/tunnels/100.127.0.2"]
        assert admin.get(f"v1/overlay/hosts/{A}/wireguard") is not None
        assert [str(p.endpoint) for p in ha.wireguard.links["pnwg0"].peers] == ["198.18.0.12:51820"]
        status, _ = ha.call("Pynet.RotateWireGuardKey", {})
        assert status == 200
        for h, nid in ((ha, NID_A), (hb, NID_B)):
            h.ok("NetworkDriver.DeleteNetwork", {"NetworkID": nid})
            h.sync()
        assert [k for k in admin.keys("v1/overlay/") if "wireguard" in k or "tunnels" in k] == []
        assert _refusals(caplog) == []
    finally:
        for h in started:
            h.stop()
        for s in stores.values():
            s.close()
