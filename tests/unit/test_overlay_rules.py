"""The overlay's pure rules: MTU, definitions, VNIs, the VTEP choice, liveness, and the
diff from the store's view to the kernel's entries."""
from __future__ import annotations

import ipaddress

import pytest

from driver.netlink.api import FLOOD_MAC, FdbEntry, Link, Neighbour
from driver.options import GENERIC, parse_network_options
from driver.kinds.overlay import underlay
from driver.kinds.overlay.liveness import Liveness
from driver.kinds.overlay.model import (Definition, Member, OverlayId, OverlayView, Peer, agreed,
                                  link_mtu, lowest_free_vni)
from driver.kinds.overlay.peers import Changes, Desired, desired, diff
from pynet_core.errors import BadRequest, Conflict

OID = OverlayId("LocalDefault", "10.50.0.0/24")
ALL = ("bridge", "macvlan", "overlay")


# --- options -------------------------------------------------------------------------
def test_overlay_is_refused_unless_the_plugin_serves_it():
    assert parse_network_options({GENERIC: {"type": "overlay"}}).type == "overlay"  # released
    assert parse_network_options({GENERIC: {"type": "overlay"}}, ALL).type == "overlay"
    with pytest.raises(BadRequest, match="overlay networks are not available"):
        parse_network_options({GENERIC: {"type": "overlay"}}, ("bridge", "macvlan"))


@pytest.mark.parametrize("key", ["vni", "com.docker.network.driver.kinds.overlay.vxlanid_list"])
def test_vni_option(key):
    assert parse_network_options({GENERIC: {"type": "overlay", key: "5000"}}, ALL).vni == 5000
    for bad in ("0", "16777216", "x", "-3"):
        with pytest.raises(BadRequest, match="1 to 16777215"):
            parse_network_options({GENERIC: {"type": "overlay", key: bad}}, ALL)
    with pytest.raises(BadRequest, match="does not apply to bridge"):
        parse_network_options({GENERIC: {key: "5000"}}, ALL)


# --- MTU -----------------------------------------------------------------------------
def test_mtu_is_the_underlays_minus_vxlan_unless_given_and_never_above():
    assert link_mtu(1500, None, "eth0") == 1450
    assert link_mtu(9000, None, "eth0") == 8950
    assert link_mtu(1500, 1400, "eth0") == 1400
    assert link_mtu(1500, 1450, "eth0") == 1450
    with pytest.raises(BadRequest, match=r"MTU 1451 is too large.*eth0 \(MTU 1500\).*50 bytes.*at most 1450"):
        link_mtu(1500, 1451, "eth0")


# --- definitions ---------------------------------------------------------------------
def test_a_joining_host_follows_the_definition_or_is_refused_naming_the_holders():
    current = Definition(4096, 1450, 4789)
    assert agreed(current, ["h1", "h2"], OID, vni=None, mtu=None, mtu_limit=1450, port=4789) == current
    assert agreed(current, ["h1"], OID, vni=4096, mtu=1450, mtu_limit=8950, port=4789) == current
    with pytest.raises(Conflict, match=r"VNI 4096.*by h1, h2; this network asks for VNI 5000"):
        agreed(current, ["h2", "h1"], OID, vni=5000, mtu=None, mtu_limit=1450, port=4789)
    with pytest.raises(Conflict, match=r"by h1; this network asks for MTU 1400"):
        agreed(current, ["h1"], OID, vni=None, mtu=1400, mtu_limit=1450, port=4789)
    with pytest.raises(Conflict, match="same --vxlan-port"):
        agreed(current, ["h1"], OID, vni=None, mtu=None, mtu_limit=1450, port=8472)
    with pytest.raises(Conflict, match="allows at most MTU 1400"):
        agreed(current, ["h1"], OID, vni=None, mtu=None, mtu_limit=1400, port=4789)


def test_automatic_vnis_start_at_4096_and_fill_gaps():
    assert lowest_free_vni([]) == 4096
    assert lowest_free_vni([4096, 4097, 4099, 7]) == 4098


# --- the VTEP ------------------------------------------------------------------------
def _links(*specs):
    return {name: Link(name, kind, True, mtu, None, None, "02:00:00:00:00:01", loopback=name == "lo")
            for name, kind, mtu in specs}


ADDRS = [("lo", ipaddress.ip_interface("127.0.0.1/8")), ("eth0", ipaddress.ip_interface("198.18.0.11/24")),
         ("eth0", ipaddress.ip_interface("fe80::1/64")), ("docker0", ipaddress.ip_interface("172.17.0.1/16")),
         ("pn-abc", ipaddress.ip_interface("10.1.0.1/24"))]
LINKS = _links(("lo", None, 65536), ("eth0", None, 1500), ("docker0", "bridge", 1500), ("pn-abc", "bridge", 1500))


def test_vtep_default_is_the_default_routes_link_then_the_only_global_address():
    assert underlay.choose(None, ADDRS, ["eth0"], LINKS)[0] == "198.18.0.11"
    assert underlay.choose(None, ADDRS, [], LINKS) == ("198.18.0.11", LINKS["eth0"])
    two = ADDRS + [("eth1", ipaddress.ip_interface("192.0.2.5/24"))]
    links = {**LINKS, **_links(("eth1", None, 9000))}
    with pytest.raises(BadRequest, match=r"198.18.0.11 on eth0, 192.0.2.5 on eth1.*--data-path-addr"):
        underlay.choose(None, two, [], links)
    assert underlay.choose(None, two, ["eth1"], links) == ("192.0.2.5", links["eth1"])


def test_vtep_given_must_be_a_non_loopback_address_of_this_host():
    assert underlay.choose("198.18.0.11", ADDRS, [], LINKS)[1].name == "eth0"
    with pytest.raises(BadRequest, match="--data-path-addr.*127.0.0.1 cannot be a VTEP"):
        underlay.choose("127.0.0.1", ADDRS, [], LINKS)
    with pytest.raises(BadRequest, match="--data-path-addr.*192.0.2.9 is not an address of this host"):
        underlay.choose("192.0.2.9", ADDRS, [], LINKS)
    with pytest.raises(BadRequest, match="not an IP address"):
        underlay.choose("eth0", ADDRS, [], LINKS)
    with pytest.raises(BadRequest, match="--data-path-addr"):
        underlay.choose(None, [ADDRS[0]], [], LINKS)


# --- liveness ------------------------------------------------------------------------
def test_a_host_is_dead_once_its_heartbeat_stands_still_for_the_timeout_on_our_clock():
    live = Liveness(timeout=10)
    live.observe({"h2": 5}, {"h2", "h3"}, now=100)
    assert live.alive("h2", 109) and live.alive("h3", 109)
    live.observe({"h2": 6}, {"h2", "h3"}, now=108)  # h2 beat; h3 never did
    assert live.alive("h2", 115) and not live.alive("h3", 115)
    assert live.dead(117) == {"h3"}
    live.forgive(130)  # we could not read the store: nobody is judged on that stretch
    assert live.dead(135) == set() and live.dead(140) == {"h2", "h3"}
    assert live.alive("never-seen", 1000)


# --- desired entries and the diff ------------------------------------------------------
def _view(*peers, members=("h1", "h2", "h3")):
    vteps = {"h1": "198.18.0.11", "h2": "198.18.0.12", "h3": "198.18.0.13"}
    return OverlayView(OID, Definition(4096, 1450, 4789),
                       {h: Member(h, "n" + h, vteps[h], "pno-x", "pnx") for h in members},
                       tuple(Peer(h, e, "n" + h, ip, mac, vteps[h]) for h, e, ip, mac in peers))


def test_desired_entries_are_the_other_live_hosts_endpoints_and_one_flood_entry_each():
    view = _view(("h1", "e1", "10.50.0.2", "02:42:0a:32:00:02"), ("h2", "e2", "10.50.0.3", "02:42:0A:32:00:03"),
                 ("h3", "e3", "10.50.0.4", "02:42:0a:32:00:04"))
    want = desired(view, "h1", alive=lambda h: True)
    assert want.fdb == {FdbEntry(FLOOD_MAC, "198.18.0.12"), FdbEntry(FLOOD_MAC, "198.18.0.13"),
                        FdbEntry("02:42:0a:32:00:03", "198.18.0.12"), FdbEntry("02:42:0a:32:00:04", "198.18.0.13")}
    assert want.neighbours == {Neighbour("10.50.0.3", "02:42:0a:32:00:03"), Neighbour("10.50.0.4", "02:42:0a:32:00:04")}
    dead_h3 = desired(view, "h1", alive=lambda h: h != "h3")
    assert dead_h3.fdb == {FdbEntry(FLOOD_MAC, "198.18.0.12"), FdbEntry("02:42:0a:32:00:03", "198.18.0.12")}
    # A peer of a host that is no member (left, or not yet joined) is not programmed.
    assert desired(_view(("h3", "e3", "10.50.0.4", "02:42:0a:32:00:04"), members=("h1", "h2")),
                   "h1", lambda h: True).neighbours == frozenset()


def test_two_endpoints_claiming_one_address_resolve_the_same_way_everywhere():
    view = _view(("h3", "b", "10.50.0.9", "02:00:00:00:00:0b"), ("h2", "a", "10.50.0.9", "02:00:00:00:00:0a"))
    assert desired(view, "h1", lambda h: True).neighbours == {Neighbour("10.50.0.9", "02:00:00:00:00:0a")}


def test_diff_changes_only_the_difference():
    want = Desired(frozenset({FdbEntry(FLOOD_MAC, "198.18.0.12"), FdbEntry("02:00:00:00:00:0a", "198.18.0.12")}),
                   frozenset({Neighbour("10.50.0.3", "02:00:00:00:00:0a")}))
    assert diff(want, want.fdb, want.neighbours) == Changes() and not diff(want, want.fdb, want.neighbours)
    changes = diff(want,
                   [FdbEntry(FLOOD_MAC, "198.18.0.13"), FdbEntry("02:00:00:00:00:0A", "198.18.0.13"),
                    FdbEntry("02:00:00:00:00:0b", "198.18.0.12")],
                   [Neighbour("10.50.0.3", "02:00:00:00:00:0b"), Neighbour("10.50.0.7", "02:00:00:00:00:07")])
    assert changes.fdb_remove == (FdbEntry(FLOOD_MAC, "198.18.0.13"), FdbEntry("02:00:00:00:00:0a", "198.18.0.13"),
                                  FdbEntry("02:00:00:00:00:0b", "198.18.0.12"))
    assert changes.fdb_add == (FdbEntry(FLOOD_MAC, "198.18.0.12"), FdbEntry("02:00:00:00:00:0a", "198.18.0.12"))
    # The neighbour whose MAC changed is replaced by the add, not removed first.
    assert changes.neigh_remove == (Neighbour("10.50.0.7", "02:00:00:00:00:07"),)
    assert changes.neigh_add == (Neighbour("10.50.0.3", "02:00:00:00:00:0a"),)
    assert changes.count() == 7
