"""Encrypted overlays (issue 20): the option, the definition every host must agree on, the
MTU arithmetic, the VXLAN port of their own, and never serving one in clear."""
from __future__ import annotations

import pytest

from driver.options import GENERIC, parse_network_options
from driver.kinds.overlay.model import (Definition, InvalidRecord, OverlayId, agreed, link_mtu,
                                        max_mtu)
from driver.kinds.overlay.runtime import DEFAULT_ENCRYPTED_PORT
from pynet_core.errors import BadRequest, Conflict
from pynet_core.store.memory import MemoryStore
from tests.harness.overlay_fake import FakeOverlayHosts

OID = OverlayId("LocalDefault", "10.50.0.0/24")
ALL = ("bridge", "macvlan", "overlay")
SUBNET = "10.50.0.0/24"
N1, N2, N3 = "1" * 64, "2" * 64, "3" * 64


def overlay(**generic):
    return parse_network_options({GENERIC: {"type": "overlay", **generic}}, ALL)


# --- the option ----------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [("", True), ("true", True), ("True", True), ("1", True),
                                             ("yes", True), ("false", False), ("0", False),
                                             ("no", False)])
def test_encrypted_as_docker_spells_it_and_with_a_value(value, expected):
    # `docker network create -o encrypted` sends the key with an empty value.
    assert overlay(encrypted=value).encrypted is expected


def test_an_overlay_is_unencrypted_unless_asked():
    assert overlay().encrypted is False


@pytest.mark.parametrize("value", ["maybe", "2", "on please"])
def test_a_bad_encrypted_value_names_the_key_and_the_expectation(value):
    with pytest.raises(BadRequest, match=r"option encrypted=.*expected true or false"):
        overlay(encrypted=value)


@pytest.mark.parametrize("kind", ["bridge", "macvlan"])
def test_encrypted_is_refused_on_bridge_and_macvlan_saying_why(kind):
    with pytest.raises(BadRequest, match=rf"only overlay networks can be encrypted.*a {kind} network"):
        parse_network_options({GENERIC: {"type": kind, "encrypted": ""}}, ALL)


def test_swarm_allocate_network_options_carry_encrypted():
    # Swarm's AllocateNetwork hands the user's options as the generic map (driver/swarm.py).
    assert parse_network_options({GENERIC: {"type": "overlay", "encrypted": ""}}, ALL).encrypted


# --- the definition ------------------------------------------------------------------
def test_a_definition_records_encryption_and_an_old_one_is_unencrypted():
    base = {"vni": 4096, "mtu": 1390, "port": 4799}
    assert Definition.from_dict({**base, "encrypted": True}) == Definition(4096, 1390, 4799, encrypted=True)
    assert Definition.from_dict(base).encrypted is False  # written before the field existed
    assert Definition.from_dict(Definition(4096, 1390, 4799, "ab", True).to_dict()).encrypted


@pytest.mark.parametrize("bad", ["true", 1, 0, None, [], {}, "yes"])
def test_a_definition_whose_encrypted_is_not_a_boolean_is_refused(bad):
    with pytest.raises(InvalidRecord, match="encrypted"):
        Definition.from_dict({"vni": 4096, "mtu": 1390, "port": 4799, "encrypted": bad})


def test_a_definition_differing_in_encryption_is_refused_naming_the_hosts():
    clear = Definition(4096, 1450, 4789)
    with pytest.raises(Conflict, match=r"defined unencrypted.*by h1, h2; this network is encrypted"):
        agreed(clear, ["h2", "h1"], OID, vni=None, mtu=None, mtu_limit=1450, port=4789, encrypted=True)
    secret = Definition(4096, 1390, 4799, encrypted=True)
    with pytest.raises(Conflict, match=r"defined encrypted.*by h1; this network is unencrypted"):
        agreed(secret, ["h1"], OID, vni=None, mtu=None, mtu_limit=1390, port=4799, encrypted=False)
    assert agreed(secret, ["h1"], OID, vni=None, mtu=None, mtu_limit=1390, port=4799,
                  encrypted=True) == secret


# --- MTU -----------------------------------------------------------------------------
def test_the_encrypted_mtu_is_the_underlays_minus_vxlan_minus_wireguard():
    assert max_mtu(1500, encrypted=True) == 1390
    assert max_mtu(9000, encrypted=True) == 8890
    assert link_mtu(1500, None, "eth0", encrypted=True) == 1390
    assert link_mtu(1500, 1300, "eth0", encrypted=True) == 1300
    assert link_mtu(1500, 1390, "eth0", encrypted=True) == 1390
    with pytest.raises(BadRequest, match=r"MTU 1391 is too large for this encrypted overlay.*"
                                         r"eth0 \(MTU 1500\).*1500 - 50 \(VXLAN\) - 60 "
                                         r"\(WireGuard over IPv4\) = 1390"):
        link_mtu(1500, 1391, "eth0", encrypted=True)
    # Unencrypted: unchanged.
    assert max_mtu(1500) == link_mtu(1500, None, "eth0") == 1450


# --- the kind --------------------------------------------------------------------------
@pytest.fixture
def hosts():
    made = FakeOverlayHosts(MemoryStore())
    yield made
    made.close()


def test_without_a_wireguard_data_path_an_encrypted_overlay_is_refused_never_made_in_clear(hosts):
    h1 = hosts.add("h1", "198.18.0.11")
    status, answer = h1.create_network(N1, SUBNET, encrypted="")
    assert status == 400 and "not served by this plugin" in answer["Err"]
    assert h1.client.network.networks() == []
    assert [e.key for e in hosts.store.list("v1/overlay/nets/")] == []


def test_an_encrypted_overlay_has_its_own_vxlan_port_and_mtu_and_hosts_must_agree(hosts):
    h1, h2, h3 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2, 3))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    vx = h1.vxlan(N1)
    assert (vx.port, vx.mtu) == (DEFAULT_ENCRYPTED_PORT, 1390)
    status, answer = h2.create_network(N2, SUBNET)  # the same overlay, without -o encrypted
    assert status == 409 and "defined encrypted" in answer["Err"] and "by h1" in answer["Err"]
    assert h2.client.network.networks() == []
    assert h3.create_network(N3, SUBNET, encrypted="true")[0] == 200
    # And the other way round: an unencrypted overlay refuses an encrypted join.
    assert h1.create_network(N2, "10.51.0.0/24")[0] == 200
    assert h1.vxlan(N2).port == 4789 and h1.vxlan(N2).mtu == 1450
    status, answer = h2.create_network(N2, "10.51.0.0/24", encrypted="")
    assert status == 409 and "defined unencrypted" in answer["Err"] and "by h1" in answer["Err"]


def test_an_encrypted_mtu_above_the_limit_is_refused_with_the_arithmetic(hosts):
    h1 = hosts.add("h1", "198.18.0.11", encrypted=True)
    status, answer = h1.create_network(N1, SUBNET, encrypted="", mtu="1400")
    assert status == 400 and "1500 - 50 (VXLAN) - 60 (WireGuard over IPv4) = 1390" in answer["Err"]
    assert h1.wireguard.links == {}  # refused before anything was made


# --- settings --------------------------------------------------------------------------
WG_ENV = ("WIREGUARD", "WIREGUARD_PORT", "ENCRYPTED_VXLAN_PORT", "WIREGUARD_SUBNET", "VXLAN_PORT")


def _serve(*argv):
    import argparse

    from pynet.settings import add_serve_arguments, settings_from_args
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)))


@pytest.fixture
def clean_wg_env(monkeypatch):
    for name in WG_ENV:
        monkeypatch.delenv(f"PYNET_{name}", raising=False)
    return monkeypatch


def test_wireguard_settings_defaults_flags_and_environment(clean_wg_env):
    s = _serve()
    assert (s.wireguard, s.wireguard_port, s.encrypted_vxlan_port, s.wireguard_subnet) == (
        "auto", 51820, 4799, "100.127.0.0/16")
    s = _serve("--wireguard", "userspace", "--wireguard-port", "51000", "--encrypted-vxlan-port", "4800",
               "--wireguard-subnet", "10.99.0.0/20")
    assert (s.wireguard, s.wireguard_port, s.encrypted_vxlan_port, s.wireguard_subnet) == (
        "userspace", 51000, 4800, "10.99.0.0/20")
    for name, value in (("WIREGUARD", "kernel"), ("WIREGUARD_PORT", "51821"),
                        ("ENCRYPTED_VXLAN_PORT", "4801"), ("WIREGUARD_SUBNET", "10.98.0.0/16")):
        clean_wg_env.setenv(f"PYNET_{name}", value)
    s = _serve()
    assert (s.wireguard, s.wireguard_port, s.encrypted_vxlan_port, s.wireguard_subnet) == (
        "kernel", 51821, 4801, "10.98.0.0/16")
    from pynet.app import overlay_settings
    o = overlay_settings(s)
    assert (o.wireguard, o.wireguard_port, o.encrypted_port, o.wireguard_subnet) == (
        "kernel", 51821, 4801, "10.98.0.0/16")


@pytest.mark.parametrize("argv, match", [
    (["--wireguard-port", "0"], "--wireguard-port 0: expected a UDP port"),
    (["--wireguard-port", "70000"], "--wireguard-port 70000"),
    (["--encrypted-vxlan-port", "4789"], "a VXLAN port of their own"),
    (["--wireguard-subnet", "10.0.0.1/16"], "expected an IPv4 prefix"),
    (["--wireguard-subnet", "fd00::/64"], "IPv4 prefix from /8 to /30"),
    (["--wireguard-subnet", "10.0.0.0/31"], "/8 to /30"),
    (["--wireguard-subnet", "127.0.0.0/16"], "loopback"),
    (["--wireguard-subnet", "nonsense"], "expected an IPv4 prefix"),
])
def test_bad_wireguard_settings_are_refused_before_serving(clean_wg_env, argv, match):
    with pytest.raises(ValueError, match=match):
        _serve(*argv)


def test_an_unknown_wireguard_mode_is_refused(clean_wg_env, capsys):
    with pytest.raises(SystemExit):
        _serve("--wireguard", "ipsec")
    assert "invalid choice: 'ipsec'" in capsys.readouterr().err


# --- pynet status --------------------------------------------------------------------------
def test_status_shows_which_wireguard_carries_encrypted_overlays(hosts, monkeypatch):
    import argparse
    import io
    import json

    from driver.wireguard import choice
    from pynet.ops import status
    from pynet.ops.context import Context, DockerNames
    from pynet.ops.render import Output

    h1 = hosts.add("h1", "198.18.0.11", wireguard="kernel")
    monkeypatch.setattr(status, "_engine", lambda ctx: None)

    def run(has_module: bool, as_json: bool) -> str:
        monkeypatch.setattr(choice, "kernel_has_wireguard", lambda: has_module)
        ctx = Context(h1.settings, as_json=as_json)
        ctx.store, ctx.netlink, ctx.docker_names = h1.store, h1.netlink, DockerNames()
        ctx.out = Output(as_json, io.StringIO())
        status.status(ctx, argparse.Namespace())
        return ctx.out.stream.getvalue()

    doc = json.loads(run(True, True))["wireguard"]
    assert (doc["setting"], doc["mode"], doc["port"], doc["vxlan_port"]) == ("kernel", "kernel", 51820, 4799)
    doc = json.loads(run(False, True))["wireguard"]
    assert doc["mode"] is None and "no wireguard module" in doc["error"]
    assert "wireguard:  " in run(False, False) and "unavailable" in run(False, False)
    h1.settings = type(h1.settings)(**{**{f: getattr(h1.settings, f) for f in h1.settings.__dataclass_fields__},
                                       "wireguard": "auto"})
    assert "wireguard:  userspace (--wireguard=auto), UDP port 51820" in run(False, False)
    assert "wireguard:  kernel (--wireguard=auto)" in run(True, False)


# --- the data path over a WireGuard port in memory (tests/fakes/wireguard.py) ---------------
def _put(store, key, value):
    from pynet_core.store.api import Op
    entry = store.get(key)
    assert store.transaction([Op("cas", key, value, entry.version) if entry else Op("create", key, value)])


def _store_keys(hosts, prefix):
    return sorted(e.key for e in hosts.store.list(prefix))


def test_one_wireguard_link_per_host_made_with_the_first_encrypted_overlay_gone_with_the_last(hosts):
    from driver.kinds.overlay.tunnels import LINK
    h1 = hosts.add("h1", "198.18.0.11", encrypted=True)
    assert h1.create_network(N1, "10.51.0.0/24")[0] == 200          # unencrypted: no link
    assert h1.wireguard.links == {}
    assert h1.guard.installed is None
    assert h1.create_network(N2, SUBNET, encrypted="")[0] == 200
    assert h1.guard.installed == (LINK, 51820, 4799)   # before the first encrypted VXLAN device
    link = h1.wireguard.links[LINK]
    assert (link.listen_port, link.mtu, str(link.address)) == (51820, 1440, "100.127.0.1/16")
    assert h1.vxlan(N2).local == "100.127.0.1" and h1.vxlan(N2).port == 4799
    assert h1.vxlan(N1).local == "198.18.0.11" and h1.vxlan(N1).port == 4789   # unchanged
    assert h1.create_network(N3, "10.52.0.0/24", encrypted="")[0] == 200
    assert h1.wireguard.created == 1 and len(h1.wireguard.links) == 1      # one link, not per network
    assert _store_keys(hosts, "v1/overlay/hosts/h1/wireguard") == ["v1/overlay/hosts/h1/wireguard"]
    assert _store_keys(hosts, "v1/overlay/tunnels/") == ["v1/overlay/tunnels/100.127.0.1"]
    h1.ok("NetworkDriver.DeleteNetwork", {"NetworkID": N2})
    assert LINK in h1.wireguard.links                                      # N3 still encrypted
    h1.ok("NetworkDriver.DeleteNetwork", {"NetworkID": N3})
    assert h1.wireguard.links == {} and h1.wireguard.removed == 1
    assert h1.guard.installed is None and h1.guard.calls[-1] == ("remove",)
    assert _store_keys(hosts, "v1/overlay/hosts/h1/wireguard") == []
    assert _store_keys(hosts, "v1/overlay/tunnels/") == []
    assert h1.vxlan(N1).local == "198.18.0.11"


def test_encrypted_peers_and_entries_go_through_the_tunnel_addresses_and_follow_liveness(hosts):
    from driver.kinds.overlay.tunnels import LINK
    from driver.netlink.api import FLOOD_MAC
    h1, h2, h3 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2, 3))
    for host, nid in ((h1, N1), (h2, N2), (h3, N3)):
        assert host.create_network(nid, SUBNET, encrypted="")[0] == 200
    h1.create_endpoint(N1, "e" * 64, "10.50.0.2/24")
    h2.create_endpoint(N2, "f" * 64, "10.50.0.3/24")
    for host in (h1, h2, h3):
        host.sync()
    addr = {h.name: str(h.wireguard.links[LINK].address.ip) for h in (h1, h2, h3)}
    assert sorted(addr.values()) == ["100.127.0.1", "100.127.0.2", "100.127.0.3"]   # unique
    peers = h1.wireguard.links[LINK].peers
    assert {str(p.endpoint) for p in peers} == {"198.18.0.12:51820", "198.18.0.13:51820"}
    assert {str(p.allowed_ips[0]) for p in peers} == {f"{addr['h2']}/32", f"{addr['h3']}/32"}
    # The VXLAN entries point at tunnel addresses, never at a VTEP.
    fdb = h1.fdb(N1)
    assert (FLOOD_MAC, addr["h2"]) in fdb and (FLOOD_MAC, addr["h3"]) in fdb
    assert all(not dst.startswith("198.18.") for _, dst in fdb)
    assert "10.50.0.3" in {ip for ip, _ in h1.neighbours(N1)}
    # h3 deleted: no longer a peer of h1 (and its record and claim are gone).
    h3.ok("NetworkDriver.DeleteNetwork", {"NetworkID": N3})
    h1.sync()
    assert {str(p.endpoint) for p in h1.wireguard.links[LINK].peers} == {"198.18.0.12:51820"}
    assert (FLOOD_MAC, addr["h3"]) not in h1.fdb(N1)


def test_a_forged_wireguard_record_for_another_host_or_address_changes_no_peer(hosts):
    import json

    from driver.kinds.overlay.tunnels import LINK
    from pynet_core.store import keys
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    h1.sync()
    before = h1.wireguard.links[LINK].peers
    h2_record = json.loads(hosts.store.get(keys.overlay_wireguard("h2")).value)
    h2.stop()   # its watcher would write its own record again at once (see the next test)
    # A "fourth host" writes a record under h2's prefix naming itself, one under its own prefix
    # taking h2's tunnel address, and junk.
    _put(hosts.store, keys.overlay_wireguard("h2"), json.dumps({**h2_record, "host": "h4"}))
    h1.sync()
    assert h1.wireguard.links[LINK].peers == ()           # h2's word is unreadable now: no peer
    _put(hosts.store, keys.overlay_wireguard("h2"), json.dumps(h2_record))
    _put(hosts.store, keys.overlay_wireguard("h4"), json.dumps({**h2_record, "host": "h4",
                                                             "endpoint": "198.18.0.99:51820"}))
    _put(hosts.store, keys.overlay_wireguard("h5"), "\x00junk")
    h1.sync()
    assert h1.wireguard.links[LINK].peers == before
    assert h1.create_network(N3, "10.52.0.0/24")[0] == 200   # unrelated calls unaffected


def test_a_restarted_plugin_keeps_the_link_and_its_tunnel_address(hosts):
    from driver.kinds.overlay.tunnels import LINK
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    h1.sync()
    address = h1.wireguard.links[LINK].address
    h1.restart()
    from tests.harness.wait import wait_until
    wait_until(lambda: h1.client.gate.restored, timeout=5, what="restore")
    h1.sync()
    assert h1.wireguard.created == 1 and h1.wireguard.links[LINK].address == address
    assert {str(p.endpoint) for p in h1.wireguard.links[LINK].peers} == {"198.18.0.12:51820"}
    assert h1.vxlan(N1).local == str(address.ip)


def test_a_host_withdrawn_by_liveness_is_removed_as_a_wireguard_peer_and_comes_back(hosts):
    import time

    from driver.kinds.overlay.tunnels import LINK
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    h2.stop()  # h2's heartbeat stands still from here
    watcher = h1.client.overlay.watcher
    now = [time.monotonic()]
    watcher.clock = lambda: now[0]
    h1.sync()
    assert len(h1.wireguard.links[LINK].peers) == 1
    now[0] += watcher.liveness.timeout + 1
    h1.sync()
    assert h1.wireguard.links[LINK].peers == () and h1.fdb(N1) == set()
    h2.client.overlay.registry.beat()  # h2 is back
    h1.sync()
    assert {str(p.endpoint) for p in h1.wireguard.links[LINK].peers} == {"198.18.0.12:51820"}


def test_a_failing_wireguard_link_does_not_stop_the_unencrypted_overlays_sync(hosts):
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    assert h1.create_network(N3, "10.51.0.0/24")[0] == 200
    assert h2.create_network("4" * 64, "10.51.0.0/24")[0] == 200
    h1.wireguard.fail_set_peers = True
    h1.sync()
    from driver.netlink.api import FLOOD_MAC
    assert h1.fdb(N3) == {(FLOOD_MAC, "198.18.0.12")}


def test_the_guard_script_drops_the_encrypted_vxlan_port_off_the_link_and_refuses_odd_values():
    from driver.firewall.nft_rules import ScriptValueError
    from driver.firewall.wireguard_guard import install_script, remove_script
    text = install_script("pnwg0", 51820, 4799)
    assert 'udp dport 4799 iifname != "pnwg0" counter drop' in text
    assert "udp dport 51820 counter accept" in text
    assert text.startswith("add table inet pynet_wireguard\ndelete table inet pynet_wireguard\n")
    assert remove_script() == "add table inet pynet_wireguard\ndelete table inet pynet_wireguard\n"
    with pytest.raises(ScriptValueError):
        install_script('pnwg0" accept #', 51820, 4799)
    for bad in (0, 70000, True, "4799"):
        with pytest.raises(ValueError):
            install_script("pnwg0", 51820, bad)


def test_a_create_that_fails_halfway_through_the_link_leaves_no_link_record_or_claim(hosts):
    from driver.kinds.overlay.tunnels import LINK
    h1 = hosts.add("h1", "198.18.0.11", encrypted=True)
    real = h1.wireguard.ensure

    def made_then_failed(name, *args, **kwargs):
        real(name, *args, **kwargs)
        raise RuntimeError("configuring the link failed (test)")
    h1.wireguard.ensure = made_then_failed
    status, _ = h1.create_network(N1, SUBNET, encrypted="")
    assert status == 500
    assert h1.wireguard.links == {} and h1.guard.installed is None
    assert [e.key for e in hosts.store.list("v1/overlay/")] == []
    h1.wireguard.ensure = real
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert LINK in h1.wireguard.links


# --- pynet doctor (OverlayKind.check) by the watcher's rules --------------------------------
def _check(host, nid):
    service = host.client.network
    return [(d.what, d.fix) for d in service.kinds["overlay"].check(
        service.ledger.network(nid), service.ledger.endpoints(nid), lambda eid: None)]


def test_doctor_compares_an_encrypted_overlays_entries_with_the_tunnel_addresses(hosts):
    from driver import naming
    from driver.netlink.api import FLOOD_MAC, FdbEntry
    from pynet_core.store import keys
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    h1.create_endpoint(N1, "e" * 64, "10.50.0.2/24")
    h2.create_endpoint(N2, "f" * 64, "10.50.0.3/24")
    h1.sync(), h2.sync()
    assert _check(h1, N1) == []
    # h1's background watcher would repair the drift made below at its next sync (on a
    # loaded machine, before the check looked): doctor is what is tested here.
    h1.stop()
    # An entry towards h2's VTEP (what an unencrypted overlay has) is one of no peer here.
    h1.inside(N1).change_peers(naming.vxlan(N1), naming.OVERLAY_BRIDGE,
                               fdb_add=[FdbEntry(FLOOD_MAC, "198.18.0.12")])
    found = _check(h1, N1)
    assert [w for w, _ in found] == [f"FDB entry of no peer on {naming.vxlan(N1)}: {FLOOD_MAC} -> 198.18.0.12"]
    # A WireGuard record of h2 under another host's claim: not believed, and said so.
    _put(hosts.store, keys.overlay_tunnel("100.127.0.2"), '{"host": "h9"}')
    whats = [w for w, _ in _check(h1, N1)]
    assert any("WireGuard record of host h2 is not believed" in w for w in whats), whats


def test_swarm_allocate_network_passes_encrypted_to_the_nodes_and_refuses_it_on_a_bridge(hosts):
    manager = hosts.add("h1", "198.18.0.11", scope="global", encrypted=True)
    hosts.add("h2", "198.18.0.12", scope="global", encrypted=True)
    net = "k2mq0d8f5tq1vz8b3yl2c0h7x"
    status, answer = manager.call("NetworkDriver.AllocateNetwork", {
        "NetworkID": net, "Options": {"type": "overlay", "encrypted": ""},
        "IPv4Data": [{"Pool": "10.60.0.0/24", "Gateway": "10.60.0.1/24"}], "IPv6Data": []})
    assert status == 200 and answer["Options"]["encrypted"] == "", answer
    status, answer = manager.call("NetworkDriver.AllocateNetwork", {
        "NetworkID": "p9w1x0c3v5b7n2m4q6e8r0t1y", "Options": {"encrypted": ""},
        "IPv4Data": [{"Pool": "10.61.0.0/24", "Gateway": "10.61.0.1/24"}], "IPv6Data": []})
    assert status == 400 and "only overlay networks can be encrypted" in answer["Err"]


def test_status_reads_the_link_and_its_peers(hosts):
    from driver.kinds.overlay.tunnels import LINK
    from pynet.ops.status import wireguard_link
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert wireguard_link("userspace", links=h1.wireguard)["present"] is False
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    h1.sync()
    doc = wireguard_link("userspace", links=h1.wireguard)
    assert doc["present"] and doc["name"] == LINK
    assert [(p["endpoint"], p["allowed_ips"], p["handshake_age_s"]) for p in doc["peers"]] == [
        ("198.18.0.12:51820", ["100.127.0.2/32"], None)]

    class Broken:
        def status(self, name):
            raise RuntimeError("UAPI socket refused")
    assert "UAPI socket refused" in wireguard_link("userspace", links=Broken())["error"]
    assert wireguard_link(None)["present"] is False


def test_after_a_reboot_restore_makes_the_link_again_with_the_same_address_and_peers(hosts):
    from driver.kinds.overlay.tunnels import LINK
    from tests.harness.wait import wait_until
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    h1.sync()
    address = h1.wireguard.links[LINK].address
    h1.stop()
    h1.wireguard.links.clear()          # a reboot: no link, no guard table
    h1.guard.installed = None
    h1.restart()
    wait_until(lambda: h1.client.gate.restored, timeout=5, what="restore")
    h1.sync()
    assert h1.wireguard.links[LINK].address == address and h1.wireguard.created == 2
    assert h1.guard.installed == (LINK, 51820, 4799)
    assert {str(p.endpoint) for p in h1.wireguard.links[LINK].peers} == {"198.18.0.12:51820"}


def test_with_the_store_unreachable_the_link_keeps_its_peers(hosts):
    from driver.kinds.overlay.tunnels import LINK
    from pynet_core.errors import BackendUnavailable
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    h1.sync()
    peers = h1.wireguard.links[LINK].peers
    store = hosts.store
    real = store.list

    def down(prefix):
        raise BackendUnavailable("consul could not be reached (a test outage)")
    store.list = down
    try:
        with pytest.raises(BackendUnavailable):
            h1.sync()
    finally:
        store.list = real
    assert h1.wireguard.links[LINK].peers == peers and h1.wireguard.removed == 0


def test_the_guard_admits_each_encrypted_overlays_frames_from_its_members_tunnels_only(hosts):
    h1, h2, h3 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2, 3))
    # X on h1 and h2; Y on h2 and h3: h3 is h2's WireGuard peer, but no member of X.
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N3, "10.52.0.0/24", encrypted="")[0] == 200
    assert h3.create_network("4" * 64, "10.52.0.0/24", encrypted="")[0] == 200
    for h in (h1, h2, h3):
        h.sync()
    vx, vy = h2.vxlan(N2).vni, h2.vxlan(N3).vni
    addr = {h.name: str(h.wireguard.links["pnwg0"].address.ip) for h in (h1, h2, h3)}
    assert h2.guard.members == {vx: {addr["h1"]}, vy: {addr["h3"]}}
    assert h1.guard.members == {vx: {addr["h2"]}}
    # h3 leaves Y: h2's rule for Y admits nobody, and h3 is no WireGuard peer of h2 any more.
    h3.ok("NetworkDriver.DeleteNetwork", {"NetworkID": "4" * 64})
    h2.sync()
    assert h2.guard.members == {vx: {addr["h1"]}, vy: set()}
    assert {str(p.endpoint) for p in h2.wireguard.links["pnwg0"].peers} == {"198.18.0.11:51820"}


def test_the_guard_script_has_a_rule_per_encrypted_overlay():
    from driver.firewall.wireguard_guard import install_script
    text = install_script("pnwg0", 51820, 4799, {4096: ["198.19.250.3", "198.19.250.2"], 4097: []})
    assert ('udp dport 4799 @th,96,24 4096 ip saddr != { 198.19.250.2, 198.19.250.3 } counter drop'
            in text)
    assert 'udp dport 4799 @th,96,24 4097 counter drop' in text
    assert text.index('iifname != "pnwg0"') < text.index("@th,96,24 4096") < text.index("dport 51820")
    for bad in ({0: []}, {16777216: []}, {4096: ["fd00::1"]}, {4096: ["1.2.3.4; flush ruleset"]}):
        with pytest.raises(ValueError):
            install_script("pnwg0", 51820, 4799, bad)


def test_wireguard_go_not_answering_is_not_taken_for_the_store_being_down(hosts):
    from driver.netlink.api import FLOOD_MAC
    from driver.wireguard.api import WireGuardUnavailable
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, "10.51.0.0/24")[0] == 200
    assert h2.create_network(N2, "10.51.0.0/24")[0] == 200
    assert h1.create_network(N3, SUBNET, encrypted="")[0] == 200
    assert h2.create_network("4" * 64, SUBNET, encrypted="")[0] == 200

    def not_answering(name, peers):
        raise WireGuardUnavailable("wireguard-go for pnwg0 did not answer within 2 s (test)")
    h1.wireguard.set_peers = not_answering
    h1.sync()   # no BackendUnavailable: the store answered
    assert h1.fdb(N1) == {(FLOOD_MAC, "198.18.0.12")}



def test_a_host_writes_its_own_wireguard_record_again_when_the_store_lost_or_forged_it(hosts):
    import json

    from pynet_core.store import keys
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    key = keys.overlay_wireguard("h2")
    good = json.loads(hosts.store.get(key).value)
    _put(hosts.store, key, json.dumps({**good, "endpoint": "198.18.0.99:51820"}))
    h2.sync()
    assert json.loads(hosts.store.get(key).value)["endpoint"] == "198.18.0.12:51820"


def test_doctor_names_a_missing_wireguard_link_or_guard_table(hosts):
    from pynet.ops.context import Context
    from pynet.ops.doctor import encrypted_differences
    h1 = hosts.add("h1", "198.18.0.11", encrypted=True)
    ctx = Context(h1.settings, as_json=True)
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    nets = h1.client.network.ledger.networks()
    present = {"name": "pnwg0", "present": True, "peers": [], "error": None}
    absent = {**present, "present": False}
    assert encrypted_differences(ctx, nets, lambda: present, lambda: "table inet pynet_wireguard {}") == []
    whats = [d.what for d in encrypted_differences(ctx, nets, lambda: absent, lambda: "")]
    assert len(whats) == 2 and "is missing: their traffic" in whats[0] and "pynet_wireguard is missing" in whats[1]
    assert [d.what for d in encrypted_differences(ctx, [], lambda: present, lambda: "")] == [
        "WireGuard link pnwg0 is up but no encrypted overlay is on this host"]
    assert encrypted_differences(ctx, [], lambda: absent, lambda: "") == []


def test_a_restarted_plugin_keeps_the_guard_table_until_its_first_sync_installs_its_own(hosts):
    from tests.harness.wait import wait_until
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    h1.sync()
    members = dict(h1.guard.members)
    assert members and all(members.values())
    h1.stop()
    h1.guard.calls.clear()
    h1.restart()
    wait_until(lambda: h1.client.gate.restored, timeout=5, what="restore")
    # Restore kept the table (no install with the new process's empty view); the sync that
    # ends restore installs the same rules again.
    installs = [c for c in h1.guard.calls if c[0] == "install"]
    assert all(c[2] == members for c in installs), installs   # never the empty view's table
    h1.sync()
    assert h1.guard.members == members


def test_the_guard_recognises_its_own_table_in_nfts_listing():
    from driver.firewall.wireguard_guard import covers
    listing = ('table inet pynet_wireguard {\n\tchain input {\n\t\ttype filter hook input priority filter - 10; '
               'policy accept;\n\t\tudp dport 4799 iifname != "pnwg0" counter packets 3 bytes 270 drop comment '
               '"x"\n\t\tudp dport 51820 counter packets 0 bytes 0 accept comment "WireGuard"\n\t}\n}\n')
    assert covers(listing, "pnwg0", 51820, 4799)
    assert not covers(listing, "pnwg1", 51820, 4799) and not covers(listing, "pnwg0", 51821, 4799)
    assert not covers("", "pnwg0", 51820, 4799)

