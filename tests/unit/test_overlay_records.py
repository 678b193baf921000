"""Overlay records read from the store are validated once, at the edge of the model
(driver/kinds/overlay/model.py, registry.parse_views), and checked against what this host knows
(driver/kinds/overlay/admission.py). Every malformed or lying record of issue 17's "Why" is here,
hand-made, plus generated junk: a record that fails is skipped and reported (once per key
and version), the rest of the view stands."""
from __future__ import annotations

import json

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from driver import naming
from driver.kinds.overlay.admission import Local, admit
from driver.kinds.overlay.model import (InvalidRecord, Definition, Member, OverlayId, OverlayView, Peer,
                                  VniClaim, heartbeat)
from driver.kinds.overlay.peers import desired
from driver.kinds.overlay.registry import overlay_records, parse_views, vni_claim
from pynet_core.store import bad_records, keys
from pynet_core.store.api import Entry

SPACE, SUBNET = "LocalDefault", "10.77.0.0/24"
OID = OverlayId(SPACE, SUBNET)
N1, N2, N3 = "1" * 64, "2" * 64, "3" * 64
E2, E3 = "b" * 64, "c" * 64
MAC2, MAC3 = "02:42:0a:4d:00:02", "02:42:0a:4d:00:03"
NOT_UTF8 = b'{"ip": "10.77.0.2", "mac": "\xff\xfe"}'.decode("utf-8", "surrogateescape")


def member_dict(host="h2", network=N2, vtep="198.18.0.12", **over):
    data = {"host": host, "network": network, "vtep": vtep, "netns": naming.overlay_netns(network),
            "vxlan": naming.vxlan(network), "attempt": "00ff"}
    data.update(over)
    return data


def peer_dict(host="h2", endpoint=E2, network=N2, ip="10.77.0.2", mac=MAC2, vtep="198.18.0.12", **over):
    data = {"host": host, "endpoint": endpoint, "network": network, "ip": ip, "mac": mac, "vtep": vtep}
    data.update(over)
    return data


def def_dict(**over):
    data = {"vni": 4096, "mtu": 1450, "port": 4789, "attempt": ""}
    data.update(over)
    return data


# --- the strict parsers ----------------------------------------------------------------
def test_what_pynet_writes_parses_back():
    assert Definition.from_dict(def_dict()) == Definition(4096, 1450, 4789)
    assert Member.from_dict(member_dict()) == Member("h2", N2, "198.18.0.12", naming.overlay_netns(N2),
                                                     naming.vxlan(N2), "00ff")
    assert Peer.from_dict(peer_dict(mac=MAC2.upper())).mac == MAC2  # MACs compare in lower case
    # A Swarm network's ID (25 alphanumerics) is an ID too.
    assert Member.from_dict(member_dict(network="x" * 25)).network == "x" * 25


@pytest.mark.parametrize("mac, why", [
    (0x0242, "must be a string"), (None, "must be a string"), ("zz:42:0a:4d:00:02", "not a MAC"),
    ("01:00:5e:00:00:05", "multicast"), ("ff:ff:ff:ff:ff:ff", "multicast"),
    ("00:00:00:00:00:00", "zero MAC"), ("02:42:0a:4d:00", "not a MAC"), ("", "not a MAC"),
    (["02:42:0a:4d:00:02"], "must be a string"), ("02-42-0a-4d-00-02", "not a MAC"),
])
def test_a_peer_mac_must_be_a_well_formed_unicast_non_zero_mac(mac, why):
    with pytest.raises(InvalidRecord, match=why):
        Peer.from_dict(peer_dict(mac=mac))


@pytest.mark.parametrize("ip, why", [
    (["10.77.0.2"], "must be a string"), ("", "not an IPv4"), ("10.77.0.300", "not an IPv4"),
    ("fd00::5", "not an IPv4"), (167641090, "must be a string"), (None, "must be a string"),
    ("010.77.0.2", "not an IPv4"), ("10.77.0.2/24", "not an IPv4"),
])
def test_a_peer_ip_must_be_an_ipv4_address(ip, why):
    with pytest.raises(InvalidRecord, match=why):
        Peer.from_dict(peer_dict(ip=ip))


@pytest.mark.parametrize("vtep, why", [
    ("localhost", "not an IPv4"), ("fd00::1", "not an IPv4"), ("300.1.1.1", "not an IPv4"),
    ("127.0.0.1", "loopback"), ("224.0.0.5", "multicast"), ("0.0.0.0", "unspecified"),
    ("255.255.255.255", "broadcast"), ("169.254.1.1", "link-local"), ("240.0.0.1", "reserved"),
    (3323068427, "must be a string"), (None, "must be a string"),
])
def test_a_vtep_must_be_a_unicast_ipv4_address_another_host_can_reach(vtep, why):
    with pytest.raises(InvalidRecord, match=why):
        Member.from_dict(member_dict(vtep=vtep))
    with pytest.raises(InvalidRecord, match=why):
        Peer.from_dict(peer_dict(vtep=vtep))


@pytest.mark.parametrize("over, why", [
    ({"netns": "pno-other"}, "namespace name"), ({"vxlan": "eth0"}, "VXLAN device name"),
    ({"netns": 5}, "must be a string"), ({"network": "../x"}, "not a valid network"),
    ({"host": ""}, "not a host id"), ({"host": "a/b"}, "not a host id"), ({"host": None}, "not a host id"),
    ({"attempt": 7}, "not a write id"),
])
def test_a_member_must_name_the_kernel_objects_pynet_makes_for_its_network(over, why):
    with pytest.raises(InvalidRecord, match=why):
        Member.from_dict(member_dict(**over))


@pytest.mark.parametrize("over, why", [
    ({"vni": 0}, "outside"), ({"vni": 16777216}, "outside"), ({"vni": "4096"}, "must be an integer"),
    ({"vni": True}, "must be an integer"), ({"vni": 4096.0}, "must be an integer"),
    ({"mtu": 20}, "outside"), ({"mtu": 70000}, "outside"), ({"mtu": None}, "must be an integer"),
    ({"port": 0}, "outside"), ({"port": 65536}, "outside"), ({"port": [4789]}, "must be an integer"),
])
def test_a_definition_needs_a_vni_mtu_and_port_in_range(over, why):
    with pytest.raises(InvalidRecord, match=why):
        Definition.from_dict(def_dict(**over))


@pytest.mark.parametrize("data", [None, [], ["vni", 4096], "text", 4096, True])
def test_json_that_is_not_an_object_is_no_record(data):
    for parse in (Definition.from_dict, Member.from_dict, Peer.from_dict, VniClaim.from_dict):
        with pytest.raises(InvalidRecord, match="not a JSON object"):
            parse(data)


def test_a_missing_field_is_named():
    data = peer_dict()
    del data["mac"]
    with pytest.raises(InvalidRecord, match="'mac' is missing"):
        Peer.from_dict(data)


def test_vni_claims_and_heartbeats_are_validated_too():
    assert vni_claim(Entry("v1/overlay/vnis/4096", json.dumps({"space": SPACE, "subnet": SUBNET}), 1))[1].holds(OID)
    for key, value, why in [
        ("v1/overlay/vnis/4096", "[]", "not a JSON object"),
        ("v1/overlay/vnis/4096", json.dumps({"space": 1, "subnet": SUBNET}), "must be a string"),
        ("v1/overlay/vnis/4096", json.dumps({"attempt": "00"}), "names neither"),
        ("v1/overlay/vnis/0", json.dumps({"space": SPACE, "subnet": SUBNET}), "not a VNI"),
        ("v1/overlay/vnis/٣", json.dumps({"space": SPACE, "subnet": SUBNET}), "not a VNI"),
        ("v1/overlay/vnis/4096", "{", "not JSON"),
        ("v1/overlay/vnis/4096", NOT_UTF8, "not UTF-8"),
    ]:
        with pytest.raises(InvalidRecord, match=why):
            vni_claim(Entry(key, value, 1))
    heartbeat({"host": "h2", "beat": "ab"}, "h2")
    with pytest.raises(InvalidRecord, match="not 'h2'"):
        heartbeat({"host": "h3"}, "h2")
    with pytest.raises(InvalidRecord, match="not a JSON object"):
        heartbeat(None, "h2")


# --- parse_views: skip, report once, keep the rest -------------------------------------
class Reports:
    def __init__(self):
        self.seen: list[tuple[str, int, str, str]] = []

    def __call__(self, key, version, kind, reason):
        self.seen.append((key, version, kind, reason))


def entries(*pairs):
    return [Entry(key, value if isinstance(value, str) else json.dumps(value), version)
            for version, (key, value) in enumerate(pairs, start=1)]


def good_overlay():
    return [(keys.overlay_def(SPACE, SUBNET), def_dict()),
            (keys.overlay_member(SPACE, SUBNET, "h2"), member_dict()),
            (keys.overlay_peer(SPACE, SUBNET, "h2", E2), peer_dict())]


@pytest.mark.parametrize("value, why", [
    (NOT_UTF8, "not UTF-8"), ("{not json", "not JSON"), ("[" * 100_000 + "]" * 100_000, "nested too deeply|not JSON"),
    (json.dumps([1, 2]), "not a JSON object"), ("null", "not a JSON object"),
    (json.dumps(peer_dict(mac=5)), "must be a string"), (json.dumps(peer_dict(host="h3")), "names host 'h3'"),
    (json.dumps(peer_dict(endpoint=E3)), "not the one its key names"),
])
def test_a_bad_peer_record_is_skipped_and_reported_and_the_rest_stands(value, why):
    reports = Reports()
    bad_key = keys.overlay_peer(SPACE, SUBNET, "h2", "d" * 64)
    views = parse_views(entries(*good_overlay(), (bad_key, value)), report=reports)
    view = views[OID]
    assert view.definition == Definition(4096, 1450, 4789)
    assert [p.endpoint for p in view.peers] == [E2]
    assert [(k, kind) for k, _, kind, _ in reports.seen] == [(bad_key, "overlay peer")]
    assert __import__("re").search(why, reports.seen[0][3]), reports.seen[0][3]
    assert bad_key in view.rejected


def test_a_member_record_naming_another_host_than_its_key_is_rejected():
    reports = Reports()
    forged = keys.overlay_member(SPACE, SUBNET, "h3")
    view = parse_views(entries(*good_overlay(), (forged, member_dict(host="h2", vtep="198.18.0.13"))),
                       report=reports)[OID]
    assert set(view.members) == {"h2"} and view.members["h2"].vtep == "198.18.0.12"
    assert reports.seen[0][0] == forged and "names host 'h2'" in reports.seen[0][3]
    # ... but h3's key exists: it still counts as holding the overlay's definition.
    assert view.holders() == {"h2", "h3"}


def test_keys_of_no_shape_pynet_writes_are_reported():
    reports = Reports()
    odd = "v1/overlay/hosts/h2/members/LocalDefault"
    parse_views(entries(*good_overlay(), (odd, member_dict())), report=reports)
    assert [(k, kind) for k, _, kind, _ in reports.seen] == [(odd, "overlay key")]


def test_records_read_again_are_checked_again_whenever_their_text_changes():
    """The watcher's memo (issue 22: every sync lists every record) keeps a verdict only
    while a key's text is unchanged: a good peer record replaced by a forged one is refused,
    a bad one made good is believed, and every listing reports its bad records."""
    memo = overlay_records()
    peer_key = keys.overlay_peer(SPACE, SUBNET, "h2", E2)
    bad_key = keys.overlay_peer(SPACE, SUBNET, "h2", "d" * 64)
    for _ in range(2):
        reports = Reports()
        view = parse_views(entries(*good_overlay(), (bad_key, "{")), report=reports, memo=memo)[OID]
        assert [p.endpoint for p in view.peers] == [E2] and [r[0] for r in reports.seen] == [bad_key]
    forged = [*good_overlay()[:2], (peer_key, peer_dict(host="h3")),
              (bad_key, peer_dict(endpoint="d" * 64, ip="10.77.0.4", mac=MAC3))]
    reports = Reports()
    view = parse_views(entries(*forged), report=reports, memo=memo)[OID]
    assert [p.endpoint for p in view.peers] == ["d" * 64]
    assert [r[0] for r in reports.seen] == [peer_key] and "names host 'h3'" in reports.seen[0][3]
    assert parse_views(entries(*good_overlay()[:2]), memo=memo)[OID].peers == ()
    assert set(memo._known) == {k for k, _ in good_overlay()[:2]}  # gone keys are forgotten


def test_a_rejected_record_is_logged_once_per_key_and_version_and_counted(caplog):
    bad_records._logged.clear()
    counted = []
    bad_records.listeners.append(counted.append)
    try:
        bad = [(keys.overlay_peer(SPACE, SUBNET, "h2", "d" * 64), "{")]
        for _ in range(3):
            parse_views(entries(*good_overlay(), *bad))
        assert counted == ["overlay peer"] * 3  # the metric counts every skip
        lines = [r.message for r in caplog.records if "skipping the overlay peer record" in r.message]
        assert len(lines) == 1
        assert keys.overlay_peer(SPACE, SUBNET, "h2", "d" * 64) in lines[0] and "not JSON" in lines[0]
        # A new version of the same key is news again.
        parse_views([*entries(*good_overlay()), Entry(bad[0][0], "[", 99)])
        assert sum("skipping the overlay peer record" in r.message for r in caplog.records) == 2
    finally:
        bad_records.listeners.remove(counted.append)
        bad_records._logged.clear()


# --- admission: no host speaks for another --------------------------------------------
MINE = Member("h1", N1, "198.18.0.11", naming.overlay_netns(N1), naming.vxlan(N1))
LOCAL = Local(MINE, frozenset({"198.18.0.11"}), frozenset({"02:42:0a:4d:00:09"}), frozenset({"10.77.0.9"}))
CLAIMS = {"10.77.0.2": ("h2", 1), "10.77.0.3": ("h3", 1), "10.77.0.9": ("h1", 1)}  # address -> (holder, claim version)


def view_of(*peers, members=None):
    members = members if members is not None else {
        "h2": Member.from_dict(member_dict()),
        "h3": Member.from_dict(member_dict("h3", N3, "198.18.0.13"))}
    return OverlayView(OID, Definition(4096, 1450, 4789), members, tuple(Peer.from_dict(p) for p in peers))


def good_peers():
    return [peer_dict(), peer_dict("h3", E3, N3, "10.77.0.3", MAC3, "198.18.0.13")]


def believed(admitted):
    return sorted(p.endpoint for p in admitted.view.peers)


def test_good_peers_are_believed():
    admitted = admit(view_of(*good_peers()), "h1", LOCAL, CLAIMS)
    assert believed(admitted) == [E2, E3] and admitted.refused == () and admitted.clashes == ()


@pytest.mark.parametrize("bad, why", [
    (peer_dict(endpoint="d" * 64, ip="10.78.0.5"), "outside the overlay's subnet"),
    (peer_dict(endpoint="d" * 64, ip="10.77.0.0"), "network or broadcast"),
    (peer_dict(endpoint="d" * 64, ip="10.77.0.255"), "network or broadcast"),
    (peer_dict(endpoint="d" * 64, ip="10.77.0.4", vtep="198.18.0.99"), "not its host's member VTEP"),
    (peer_dict(endpoint="d" * 64, ip="10.77.0.4", mac="02:42:0a:4d:00:09"), "this host's endpoints'"),
    (peer_dict(endpoint="d" * 64, ip="10.77.0.9", mac="02:42:0a:4d:00:44"), "this host's endpoints'"),
    (peer_dict(endpoint="d" * 64, ip="10.77.0.4", mac="02:42:0a:4d:00:44"), "not claimed"),
    (peer_dict(endpoint="d" * 64, ip="10.77.0.6", mac="02:42:0a:4d:00:44"), "claimed by host h3, not h2"),
    (peer_dict(host="h4", endpoint="d" * 64, ip="10.77.0.4", mac="02:42:0a:4d:00:44"), "no member record"),
])
def test_a_peer_that_speaks_for_another_or_is_impossible_is_refused_and_the_others_stand(bad, why):
    admitted = admit(view_of(*good_peers(), bad), "h1", LOCAL, {**CLAIMS, "10.77.0.4": ("h2", 1), "10.77.0.6": ("h3", 1)}
                     if "not claimed" not in why else CLAIMS)
    assert believed(admitted) == [E2, E3]
    assert [r.endpoint for r in admitted.refused] == ["d" * 64] and why in admitted.refused[0].reason


def test_without_the_claims_no_remote_peer_is_believed():
    admitted = admit(view_of(*good_peers()), "h1", LOCAL, None)
    assert believed(admitted) == [] and all("could not be read" in r.reason for r in admitted.refused)


def written(**by_endpoint):
    """The store versions of peer records (endpoint -> version, else 2), as admit takes them."""
    return lambda peer: by_endpoint.get(peer.endpoint, 2)


def test_an_address_already_claimed_when_another_host_gave_it_stays_its_holders():
    # h3 publishes h2's address after h2's claim (version 1) was made: a forgery (or a
    # leftover), refused; h2's endpoint keeps its entries.
    forged = peer_dict("h3", "d" * 64, N3, "10.77.0.2", "02:42:0a:4d:00:44", "198.18.0.13")
    admitted = admit(view_of(*good_peers(), forged), "h1", LOCAL, CLAIMS, written=written(**{"d" * 64: 9}))
    assert believed(admitted) == [E2, E3] and admitted.clashes == ()
    assert [(r.endpoint, r.reason) for r in admitted.refused] == [
        ("d" * 64, "address 10.77.0.2 was already claimed by host h2 when this record was written")]


def test_a_claim_taken_over_under_a_published_record_programs_neither():
    # h3 rewrote the shared claim of h2's address (now h3's, version 5) after h2 published
    # it (version 2), then published it itself (version 6): neither, whoever holds the claim.
    thief = peer_dict("h3", "d" * 64, N3, "10.77.0.2", "02:42:0a:4d:00:44", "198.18.0.13")
    admitted = admit(view_of(*good_peers(), thief), "h1", LOCAL, {**CLAIMS, "10.77.0.2": ("h3", 5)},
                     written=written(**{E2: 2, "d" * 64: 6}))
    assert believed(admitted) == [E3]
    assert [(c.what, c.value, c.hosts) for c in admitted.clashes] == [("address", "10.77.0.2", ("h2", "h3"))]
    assert sorted(r.endpoint for r in admitted.refused) == [E2, "d" * 64]
    # A claim rewritten under both records (a leftover and its new holder): neither either.
    admitted = admit(view_of(*good_peers(), thief), "h1", LOCAL, {**CLAIMS, "10.77.0.2": ("h2", 7)},
                     written=written(**{E2: 2, "d" * 64: 6}))
    assert believed(admitted) == [E3] and [c.value for c in admitted.clashes] == ["10.77.0.2"]


def test_a_shared_mac_goes_to_neither():
    same_mac = peer_dict("h3", "d" * 64, N3, "10.77.0.4", MAC2, "198.18.0.13")
    admitted = admit(view_of(*good_peers(), same_mac), "h1", LOCAL, {**CLAIMS, "10.77.0.4": ("h3", 1)})
    assert believed(admitted) == [E3]
    assert [(c.what, c.value, c.hosts) for c in admitted.clashes] == [("MAC", MAC2, ("h2", "h3"))]
    assert sorted(r.endpoint for r in admitted.refused) == [E2, "d" * 64]


def test_a_member_using_this_hosts_vtep_is_refused_with_its_peers():
    members = {"h2": Member.from_dict(member_dict(vtep="198.18.0.11")),
               "h3": Member.from_dict(member_dict("h3", N3, "198.18.0.13"))}
    admitted = admit(view_of(peer_dict(vtep="198.18.0.11"), good_peers()[1], members=members), "h1", LOCAL, CLAIMS)
    assert believed(admitted) == [E3] and set(admitted.view.members) == {"h1", "h3"}
    assert "this host's own" in admitted.refused[0].reason


def test_this_hosts_member_is_its_own_never_the_stores():
    # A forged member for h1 pointing at another overlay's device (and another VTEP).
    forged = Member("h1", N2, "198.18.0.11", naming.overlay_netns(N2), naming.vxlan(N2))
    members = {"h1": forged, "h2": Member.from_dict(member_dict())}
    admitted = admit(view_of(peer_dict(), members=members), "h1", LOCAL, CLAIMS)
    assert admitted.view.members["h1"] == MINE and admitted.own_member_differs
    # Without a network of its own on the overlay, the store's member for h1 is nothing.
    admitted = admit(view_of(peer_dict(), members=members), "h1", Local(None), CLAIMS)
    assert "h1" not in admitted.view.members
    want = desired(admitted.view, "h1", lambda h: True)
    assert {e.dst for e in want.fdb} == {"198.18.0.12"}


# --- generated junk ---------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
                    max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    name: JSON | st.sampled_from(["10.77.0.2", "198.18.0.12", MAC2, N2, "h2", "pno-" + N2[:12]])
    for name in ("host", "endpoint", "network", "ip", "mac", "vtep", "netns", "vxlan", "vni", "mtu",
                 "port", "attempt", "space", "subnet")})


@settings(max_examples=300, deadline=None)
@given(data=JSON | FIELDS)
def test_generated_records_parse_or_raise_bad_record_and_nothing_else(data):
    for parse in (Definition.from_dict, Member.from_dict, Peer.from_dict, VniClaim.from_dict):
        try:
            parse(data)
        except InvalidRecord as exc:
            assert exc.reason


KEYS = st.sampled_from([keys.overlay_def(SPACE, SUBNET), keys.overlay_member(SPACE, SUBNET, "h2"),
                        keys.overlay_peer(SPACE, SUBNET, "h2", E2), keys.overlay_peer(SPACE, SUBNET, "h3", E3),
                        keys.overlay_vni(4096), "v1/overlay/hosts/h2/x", "v1/overlay/nets/a/b"]) | \
    st.text(max_size=40).map(lambda t: "v1/overlay/" + t)
VALUES = st.one_of(JSON.map(json.dumps), FIELDS.map(json.dumps), st.binary(max_size=30).map(
    lambda b: b.decode("utf-8", "surrogateescape")), st.text(max_size=30))


@settings(max_examples=300, deadline=None)
@given(junk=st.lists(st.tuples(KEYS, VALUES), max_size=8))
def test_any_listing_gives_views_and_a_good_overlay_in_it_is_kept(junk):
    listing = entries(*good_overlay()) + [Entry(k, v, 100 + i) for i, (k, v) in enumerate(junk)]
    listing.sort(key=lambda e: e.key)
    views = parse_views(listing, report=lambda *_: None)
    for view in views.values():
        admitted = admit(view, "h1", LOCAL, CLAIMS)
        desired(admitted.view, "h1", lambda h: True)  # never raises on what got through
        for peer in admitted.view.peers:
            assert peer.ip in CLAIMS and peer.mac not in LOCAL.macs


def test_a_dead_hosts_leftover_blocks_no_live_holder_of_its_address():
    # h3 died holding a peer record for 10.77.0.2, which h2 now holds: h2's peer stands.
    leftover = peer_dict("h3", "d" * 64, N3, "10.77.0.2", "02:42:0a:4d:00:44", "198.18.0.13")
    admitted = admit(view_of(*good_peers(), leftover), "h1", LOCAL, CLAIMS, alive=lambda h: h != "h3")
    assert believed(admitted) == [E2] and admitted.clashes == ()
