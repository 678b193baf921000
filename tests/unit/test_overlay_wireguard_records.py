"""Encrypted overlays' store records (issue 20 on issue 17's rules): each host's WireGuard
record under its own prefix and the tunnel address claims, parsed strictly at the edge (bad
ones skipped, logged, counted); which records a host believes; its WireGuard peer set and
where its encrypted VXLAN entries point (pure)."""
from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings, strategies as st

from driver.kinds.overlay.model import (InvalidRecord, Member, OverlayId, OverlayView, Peer,
                                        TunnelClaim, WireGuardHost)
from driver.kinds.overlay.peers import desired
from driver.kinds.overlay.registry import parse_views, parse_wireguard
from driver.kinds.overlay.tunnels import (KEEPALIVE, believe, encrypted_peers_of, first_free_address,
                                          tunnel_addresses, wireguard_peers)
from driver.netlink.api import FLOOD_MAC, FdbEntry
from driver.wireguard.api import PublicKey
from pynet_core.store import keys
from pynet_core.store.api import Entry

SUBNET = "100.127.0.0/16"
OID = OverlayId("LocalDefault", "10.50.0.0/24")
CLEAR = OverlayId("LocalDefault", "10.51.0.0/24")


def key_of(n: int) -> str:
    return PublicKey(bytes([n]) * 32).base64


def record(host="h2", n=2, endpoint=None, address=None, **over):
    data = {"host": host, "public_key": key_of(n),
            "endpoint": f"198.18.0.1{n}:51820" if endpoint is None else endpoint,
            "address": f"100.127.0.{n}" if address is None else address, "attempt": "ab"}
    data.update(over)
    return data


def entries(*pairs):
    return [Entry(k, v if isinstance(v, str) else json.dumps(v), i + 1) for i, (k, v) in enumerate(pairs)]


# --- parsing at the edge ----------------------------------------------------------------
def test_a_wellformed_record_parses_and_round_trips():
    parsed = WireGuardHost.from_dict(record())
    assert parsed == WireGuardHost("h2", key_of(2), "198.18.0.12:51820", "100.127.0.2", "ab")
    assert WireGuardHost.from_dict(parsed.to_dict()) == parsed
    assert parsed.key == PublicKey(bytes([2]) * 32)


@pytest.mark.parametrize("over, reason", [
    ({"public_key": "AAAA"}, "canonical base64"),
    ({"public_key": "A" * 43 + "="}, "all zeros"),
    ({"public_key": key_of(2)[:-2] + "B="}, "canonical base64"),   # non-canonical last digit
    ({"public_key": 42}, "must be a string"),
    ({"public_key": None}, "must be a string"),
    ({"endpoint": "198.18.0.12"}, "ip:port"),
    ({"endpoint": "198.18.0.12:0"}, "port"),
    ({"endpoint": "198.18.0.12:70000"}, "port"),
    ({"endpoint": "[fd00::1]:51820"}, "not IPv4"),
    ({"endpoint": "127.0.0.1:51820"}, "loopback"),
    ({"endpoint": "224.0.0.5:51820"}, "unicast"),
    ({"endpoint": "0.0.0.0:51820"}, "unicast"),
    ({"endpoint": "localhost:51820"}, "ip:port"),
    ({"endpoint": ["198.18.0.12:51820"]}, "string"),
    ({"address": "100.127.0.300"}, "IPv4"),
    ({"address": "fd00::5"}, "IPv4"),
    ({"address": "127.0.0.1"}, "loopback"),
    ({"address": ""}, "IPv4"),
    ({"address": 1677721602}, "string"),
    ({"host": "../h2"}, "host id"),
    ({"host": 7}, "host id"),
])
def test_hostile_wireguard_records_are_refused_with_the_reason(over, reason):
    with pytest.raises(InvalidRecord, match=reason):
        WireGuardHost.from_dict(record(**over))


@pytest.mark.parametrize("missing", ["host", "public_key", "endpoint", "address"])
def test_a_record_missing_a_field_is_refused(missing):
    data = record()
    del data[missing]
    with pytest.raises(InvalidRecord, match=missing):
        WireGuardHost.from_dict(data)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=50),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                    max_leaves=20))
@settings(max_examples=300, deadline=None)
def test_junk_is_refused_as_invalid_never_another_error(junk):
    for parse in (WireGuardHost.from_dict, lambda d: TunnelClaim.from_dict("100.127.0.2", d)):
        try:
            parse(junk)
        except InvalidRecord:
            pass


def test_parse_wireguard_skips_bad_records_reports_each_and_keeps_the_rest():
    reported = []
    view = parse_wireguard(entries(
        (keys.overlay_wireguard("h2"), record()),
        (keys.overlay_wireguard("h3"), record("h3", 3, public_key="nope")),
        (keys.overlay_wireguard("h4"), record("h2", 4)),          # under h4's prefix, naming h2
        (keys.overlay_wireguard("h5"), "\udcff not utf-8"),
        (keys.overlay_wireguard("h6"), "{not json"),
        (keys.overlay_tunnel("100.127.0.2"), {"host": "h2"}),
        (keys.overlay_tunnel("100.127.0.999"), {"host": "h3"}),
        (keys.overlay_tunnel("100.127.0.7"), {"host": 7}),
    ), report=lambda key, version, kind, reason: reported.append((key, kind, reason)))
    assert set(view.hosts) == {"h2"} and set(view.claims) == {"100.127.0.2"}
    assert view.claims["100.127.0.2"].host == "h2"
    bad = {key: (kind, reason) for key, kind, reason in reported}
    assert set(bad) == {keys.overlay_wireguard(h) for h in ("h3", "h4", "h5", "h6")} | {
        keys.overlay_tunnel("100.127.0.999"), keys.overlay_tunnel("100.127.0.7")}
    assert "sits under host 'h4'" in bad[keys.overlay_wireguard("h4")][1]
    assert bad[keys.overlay_wireguard("h3")][0] == "overlay WireGuard host"
    assert bad[keys.overlay_tunnel("100.127.0.7")][0] == "overlay tunnel claim"


def test_the_overlay_views_pass_over_wireguard_records_without_calling_them_bad():
    reported = []
    parse_views(entries((keys.overlay_wireguard("h2"), record()),
                        (keys.overlay_tunnel("100.127.0.2"), {"host": "h2"})),
                report=lambda *a: reported.append(a))
    assert reported == []


def test_the_wireguard_key_names_its_host_and_nothing_else_is_one():
    assert keys.overlay_wireguard("h2") == "v1/overlay/hosts/h2/wireguard"
    assert keys.wireguard_host_of("v1/overlay/hosts/h2/wireguard") == "h2"
    for other in ("v1/overlay/hosts//wireguard", "v1/overlay/hosts/a/b/wireguard",
                  "v1/overlay/hosts/../wireguard", "v1/overlay/hosts/h2/wireguardx",
                  "v1/overlay/nets/h2/wireguard"):
        assert keys.wireguard_host_of(other) is None


# --- what a host believes ---------------------------------------------------------------------
def hosts_of(*records):
    return {r["host"]: WireGuardHost.from_dict(r) for r in records}


MINE = WireGuardHost.from_dict(record("h1", 1))


def test_a_record_is_believed_only_under_its_own_claim_inside_the_subnet():
    recs = hosts_of(record("h2", 2), record("h3", 3), record("h4", 4, address="10.9.0.4"),
                    record("h5", 5, address="100.127.255.255"), record("h6", 6), record("h7", 7))
    claims = {"100.127.0.2": "h2", "100.127.0.3": "h3", "10.9.0.4": "h4", "100.127.255.255": "h5",
              "100.127.0.6": "h2"}   # h6's address is h2's claim; h7's is nobody's
    got = believe(recs, claims, "h1", SUBNET, MINE)
    assert set(got.hosts) == {"h2", "h3"}
    why = {r.host: r.reason for r in got.refused}
    assert "outside --wireguard-subnet" in why["h4"]
    assert "network or broadcast" in why["h5"]
    assert "claimed by host 'h2'" in why["h6"]
    assert "claimed by no host" in why["h7"]


def test_this_hosts_own_address_key_and_record_are_never_taken_from_the_store():
    recs = hosts_of(record("h1", 9), record("h2", 2, address="100.127.0.1"), record("h3", 1, address="100.127.0.3"))
    claims = {"100.127.0.1": "h2", "100.127.0.3": "h3", "100.127.0.9": "h1"}
    got = believe(recs, claims, "h1", SUBNET, MINE)
    assert got.hosts == {}
    why = {r.host: r.reason for r in got.refused}
    assert "this host's own" in why["h2"] and "public key is this host's own" in why["h3"]
    assert "h1" not in why   # its own record is simply not read


def test_two_hosts_giving_one_public_key_are_neither_believed():
    recs = hosts_of(record("h2", 2), record("h3", 2, address="100.127.0.3"), record("h4", 4))
    claims = {"100.127.0.2": "h2", "100.127.0.3": "h3", "100.127.0.4": "h4"}
    got = believe(recs, claims, "h1", SUBNET, MINE)
    assert set(got.hosts) == {"h4"}
    assert {r.host for r in got.refused} == {"h2", "h3"}


# --- the peer set and the VXLAN entries -------------------------------------------------------
def member(host, vtep, network="a" * 64):
    from driver import naming
    return Member(host, network, vtep, naming.overlay_netns(network), naming.vxlan(network))


def view(oid, *hosts, peers=()):
    return OverlayView(oid, None, {h: member(h, f"198.18.0.1{h[1]}") for h in hosts}, tuple(peers))


def test_peers_are_the_alive_hosts_sharing_an_encrypted_overlay_with_their_tunnel_address_only():
    views = {OID: view(OID, "h1", "h2", "h3"), CLEAR: view(CLEAR, "h1", "h4")}
    recs = hosts_of(*(record(f"h{i}", i) for i in (2, 3, 4)))
    got = believe(recs, {f"100.127.0.{i}": f"h{i}" for i in (2, 3, 4)}, "h1", SUBNET, MINE)
    alive = {"h1", "h2", "h4"}
    hosts = encrypted_peers_of(views, [OID], "h1", alive.__contains__)
    assert hosts == {"h2"}   # h3 dead (withdrawn by liveness), h4 only on an unencrypted overlay
    peers = wireguard_peers(hosts, got)
    assert len(peers) == 1
    assert (peers[0].public_key, str(peers[0].endpoint), peers[0].allowed_ips, peers[0].keepalive) == (
        PublicKey(bytes([2]) * 32), "198.18.0.12:51820", (ipaddress.ip_network("100.127.0.2/32"),), KEEPALIVE)
    # h3 back: a peer again.
    assert {str(p.endpoint) for p in wireguard_peers(
        encrypted_peers_of(views, [OID], "h1", lambda h: True), got)} == {"198.18.0.12:51820", "198.18.0.13:51820"}
    # A host without a believed record is no peer.
    assert wireguard_peers({"h2", "h9"}, got) == peers


def test_an_encrypted_overlays_entries_point_at_tunnel_addresses_never_at_vteps():
    p2 = Peer("h2", "e" * 64, "a" * 64, "10.50.0.2", "02:42:0a:32:00:02", "198.18.0.12")
    p3 = Peer("h3", "f" * 64, "a" * 64, "10.50.0.3", "02:42:0a:32:00:03", "198.18.0.13")
    v = view(OID, "h1", "h2", "h3", peers=[p2, p3])
    clear = desired(v, "h1", lambda h: True)
    assert FdbEntry(FLOOD_MAC, "198.18.0.12") in clear.fdb
    secret = desired(v, "h1", lambda h: True, via={"h2": "100.127.0.2"})   # h3: no believed record
    assert secret.fdb == {FdbEntry(FLOOD_MAC, "100.127.0.2"), FdbEntry("02:42:0a:32:00:02", "100.127.0.2")}
    assert {n.ip for n in secret.neighbours} == {"10.50.0.2"}
    assert desired(v, "h1", lambda h: True, via={}).fdb == frozenset()
    assert tunnel_addresses(believe(hosts_of(record("h2", 2)), {"100.127.0.2": "h2"}, "h1", SUBNET, MINE)) == {
        "h2": "100.127.0.2"}


def test_the_first_free_tunnel_address_skips_claims_and_the_network_address():
    assert first_free_address(SUBNET, []) == "100.127.0.1"
    assert first_free_address(SUBNET, ["100.127.0.1", "100.127.0.3"]) == "100.127.0.2"
    assert first_free_address("10.9.0.0/30", ["10.9.0.1", "10.9.0.2"]) is None


def test_the_hostile_store_tiers_wireguard_batch_is_refused_record_by_record():
    """tests/fuzz/hostile_records.py's encrypted-overlay batch, as the fuzz tier writes it into
    Consul: every record fails at the edge (the tier proves a serving pynet goes on)."""
    from tests.fuzz.hostile_records import Scene, handmade
    class Record(dict):  # the fake host's records: any field the other batches ask for
        def __missing__(self, key):
            return "198.18.201.3" if key == "vtep" else "x"
    scene = Scene("LocalDefault", "10.77.0.0/24", "10.78.0.0/24", "10.79.0.0/24", "hs-self",
                  "198.18.201.2", "hs-peer", Record(), Record(ip="10.77.0.5", mac="02:42:0a:4d:00:05"),
                  Record(), Record(), (("10.77.0.2", "02:42:0a:4d:00:02"), ("10.77.0.3", "02:42:0a:4d:00:03")),
                  "10.77.0.9", "10.77.0.10")
    (batch,) = [b for b in handmade(scene) if "WireGuard" in b.name]
    reported = []
    got = parse_wireguard([Entry(k, v.decode("utf-8", "surrogateescape"), i + 1)
                           for i, (k, v) in enumerate(batch.writes)],
                          report=lambda key, version, kind, reason: reported.append(key))
    assert (dict(got.hosts), dict(got.claims)) == ({}, {})
    assert sorted(reported) == sorted(k for k, _ in batch.writes)
