"""Published ports: Docker's portmap parsing, host port reservation, and NftFirewall's
all-or-nothing bookkeeping over stand-ins for nft, iptables and the kernel knobs."""
from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from pynet_core.errors import BadRequest, Conflict
from driver.firewall.forward_accept import FirewallError
from driver.firewall.nft_firewall import NftFirewall
from driver.firewall.nft_rules import NetworkPolicy, Published, network_elements, port_element
from driver.firewall.ports import HostPorts
from driver.models import EndpointRecord, NetworkRecord
from driver.options import parse_network_options
from driver.portmap import PortBinding, PortRequest, resolve_host_ips
from driver.protocol import parse_portmap

PM = "com.docker.network.portmap"


def entry(**kw):
    return {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080, **kw}


# --- parse_portmap -----------------------------------------------------------------
def test_parse_portmap_defaults_and_duplicates():
    assert parse_portmap({}) == ()
    assert parse_portmap({PM: []}) == ()
    got = parse_portmap({PM: [entry(), entry(), entry(Proto=17, HostPort=0, HostPortEnd=0),
                              entry(HostIP="127.0.0.1", HostPort=9000, HostPortEnd=9010)]})
    assert got == (PortRequest("tcp", 80, "0.0.0.0", 8080, 8080), PortRequest("udp", 80, "0.0.0.0", 0, 0),
                   PortRequest("tcp", 80, "127.0.0.1", 9000, 9010))


def test_parse_portmap_uses_the_networks_host_binding_ipv4():
    assert parse_portmap({PM: [entry()]}, "198.18.50.1")[0].host_ip == "198.18.50.1"
    assert parse_portmap({PM: [entry(HostIP="127.0.0.1")]}, "198.18.50.1")[0].host_ip == "127.0.0.1"
    assert parse_portmap({PM: [entry(HostPortEnd=0)]})[0].host_port_end == 8080


@pytest.mark.parametrize("bad, fragment", [
    (entry(Proto=132), "sctp"),
    (entry(Proto=99), "unknown protocol"),
    (entry(Port=0), "Port must be"),
    (entry(HostPort=70000), "HostPort must be"),
    (entry(HostPort="80"), "HostPort must be"),
    (entry(HostPort=9000, HostPortEnd=8000), "reversed"),
    (entry(HostPort=0, HostPortEnd=10), "HostPortEnd without HostPort"),
    (entry(HostIP="::1"), "IPv6 loopback cannot be forwarded"),
    (entry(HostIP="::ffff:198.18.0.1"), "give the IPv4 address 198.18.0.1"),
    (entry(HostIP="localhost"), "not an IP address"),
    ("8080:80", "must be objects"),
])
def test_parse_portmap_refuses_with_a_reason(bad, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse_portmap({PM: [bad]})
    with pytest.raises(BadRequest, match="must be a list"):
        parse_portmap({PM: {"80": 8080}})


def test_binding_round_trip_and_overlap():
    b = PortBinding("tcp", "198.18.100.2", 80, "0.0.0.0", 8080, 0, 0)
    assert PortBinding.from_dict(b.to_dict()) == b
    assert b.overlaps("tcp", "127.0.0.1", 8080) and not b.overlaps("udp", "0.0.0.0", 8080)
    specific = PortBinding("tcp", "198.18.100.2", 80, "127.0.0.1", 8080, 0, 0)
    assert not specific.overlaps("tcp", "127.0.0.2", 8080) and specific.overlaps("tcp", "0.0.0.0", 8080)
    ep = EndpointRecord("n", "e", "h", "p", ("198.18.100.2/24",), "02:00:00:00:00:01", published=(b,))
    assert EndpointRecord.from_dict(ep.to_dict()) == ep
    assert EndpointRecord.from_dict({k: v for k, v in ep.to_dict().items() if k != "published"}).published == ()


# --- HostPorts on the real loopback ------------------------------------------------
def test_host_ports_hold_conflict_range_and_release():
    ports = HostPorts()
    try:
        any_port = ports.reserve("tcp", "127.0.0.1", 0, 0)
        assert any_port > 0 and ("tcp", "127.0.0.1", any_port) in ports.held()
        with pytest.raises(Conflict, match=f"{any_port}/tcp on 127.0.0.1 is already in use"):
            ports.reserve("tcp", "127.0.0.1", any_port, any_port)
        with pytest.raises(Conflict):
            ports.reserve("tcp", "0.0.0.0", any_port, any_port)  # overlaps the held one
        udp = ports.reserve("udp", "127.0.0.1", any_port, any_port)  # another protocol
        assert udp == any_port
        nxt = ports.reserve("tcp", "127.0.0.1", any_port, any_port + 50)
        assert any_port < nxt <= any_port + 50
        ports.hold("tcp", "127.0.0.1", nxt)  # idempotent
        ports.release("tcp", "127.0.0.1", any_port)
        assert ports.reserve("tcp", "127.0.0.1", any_port, any_port) == any_port
        with pytest.raises(BadRequest, match="not an address of this host"):
            ports.reserve("tcp", "198.18.255.254", 0, 0)
    finally:
        ports.release_all()
    assert ports.held() == set()


def test_host_port_range_all_in_use():
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    port = squatter.getsockname()[1]
    try:
        with pytest.raises(Conflict, match=f"every host port in {port}-{port}|{port}/tcp"):
            HostPorts().reserve("tcp", "127.0.0.1", port, port)
    finally:
        squatter.close()


# --- NftFirewall bookkeeping over stand-ins ----------------------------------------
class FakeNft:
    def __init__(self):
        self.docs, self.fail = [], False

    def apply(self, doc):
        if self.fail:
            raise FirewallError("nft refused pynet's rules: injected")
        self.docs.append(doc)


class FakeShim:
    def __init__(self):
        self.bridges = set()

    def network_added(self, n):
        self.bridges.add(n.bridge)

    def network_removed(self, n):
        self.bridges.discard(n.bridge)

    def sync(self, nets):
        self.bridges = {n.bridge for n in nets}

    def remove_all(self):
        self.bridges = set()


class FakeKnobs:
    def __init__(self):
        self.calls = []

    def ensure_ip_forward(self):
        self.calls.append("ip_forward")

    def ensure_route_localnet(self, bridge):
        self.calls.append(f"route_localnet {bridge}")

    def ensure_ipv6_forward(self):
        self.calls.append("ipv6_forward")

    def ensure_hairpin(self, port):
        self.calls.append(f"hairpin {port}")

    def uplinks(self):
        return set()


class FakePorts(HostPorts):
    """Real bookkeeping, no sockets; `busy` ports conflict."""
    def __init__(self, busy=()):
        self.busy, self.keys, self.next = set(busy), set(), 49153

    def held(self):
        return set(self.keys)

    def reserve(self, proto, host_ip, start, end):
        port = start or self.next
        if (proto, port) in self.busy or (proto, host_ip, port) in self.keys:
            raise Conflict(f"host port {port}/{proto} on {host_ip} is already in use")
        self.next += not start
        self.keys.add((proto, host_ip, port))
        return port

    def hold(self, proto, host_ip, port):
        self.reserve(proto, host_ip, port, port)

    def release(self, proto, host_ip, port):
        self.keys.discard((proto, host_ip, port))

    def release_all(self):
        self.keys = set()


def net(nid="a" * 64, kind="bridge", internal=False):
    opts = parse_network_options({"com.docker.network.generic": {} if kind == "bridge" else
                                  {"type": kind, "parent": "eth0"}, "com.docker.network.internal": internal})
    return NetworkRecord(id=nid, options=opts, bridge=f"pn-{nid[:12]}", bridge_created=True,
                         gateways=("198.18.100.1/24",), subnets=("198.18.100.0/24",))


def ep(eid="e" * 64, nid="a" * 64, published=()):
    return EndpointRecord(nid, eid, f"pnv{eid[:12]}", f"pnc{eid[:12]}", ("198.18.100.2/24", "fd00::2/64"),
                          "02:42:00:00:00:02", published=published)


@pytest.fixture
def fw():
    return NftFirewall(forward=FakeShim(), nft=FakeNft(), knobs=FakeKnobs(), ports=FakePorts(busy={("tcp", 8081)}))


def test_publish_is_all_or_nothing(fw):
    fw.network_added(net())
    applied = len(fw.nft.docs)
    with pytest.raises(Conflict, match="8081/tcp"):
        fw.publish(net(), ep(), [PortRequest("udp", 80, "0.0.0.0", 8081, 8081),
                                 PortRequest("tcp", 80, "0.0.0.0", 8081, 8081)])
    assert fw.ports.held() == set() and fw.published() == {} and len(fw.nft.docs) == applied
    fw.nft.fail = True
    with pytest.raises(FirewallError, match="injected"):
        fw.publish(net(), ep(), [PortRequest("tcp", 80, "0.0.0.0", 8080, 8080)])
    assert fw.ports.held() == set() and fw.published() == {}
    fw.nft.fail = False
    got = fw.publish(net(), ep(), [PortRequest("tcp", 80, "0.0.0.0", 0, 0)])
    assert got == (PortBinding("tcp", "198.18.100.2", 80, "0.0.0.0", 49153, 0, 0),)
    assert "hairpin pnveeeeeeeeeeee" in fw.knobs.calls
    with pytest.raises(FirewallError, match="already has published ports"):
        fw.publish(net(), ep(), [PortRequest("tcp", 80, "0.0.0.0", 0, 0)])
    fw.unpublish(net(), ep())
    fw.unpublish(net(), ep())  # absent is fine
    assert fw.ports.held() == set()


def test_publish_needs_the_network_and_an_ipv4_address(fw):
    with pytest.raises(FirewallError, match="no firewall rules"):
        fw.publish(net(), ep(), [])
    fw.network_added(net())
    v6only = EndpointRecord("a" * 64, "f" * 64, "h", "p", ("fd00::2/64",), "02:00:00:00:00:09")
    with pytest.raises(BadRequest, match="no IPv4 address"):
        fw.publish(net(), v6only, [PortRequest("tcp", 80, "0.0.0.0", 0, 0)])


def test_network_removed_takes_its_published_ports_along(fw):
    fw.network_added(net())
    fw.publish(net(), ep(), [PortRequest("tcp", 80, "0.0.0.0", 8080, 8080)])
    fw.network_removed(net())
    assert fw.ports.held() == set() and fw.published() == {} and fw.forward.bridges == set()
    assert fw.nft.docs[-1].splitlines()[-1] == "delete table inet pynet"


def test_only_bridge_networks_get_rules(fw):
    fw.network_added(net("m" * 64, kind="macvlan"))
    assert fw.nft.docs == [] and fw.forward.bridges == set()
    fw.sync([net("m" * 64, kind="macvlan")], [])
    assert fw.forward.bridges == set()


def test_internal_networks_leave_forwarding_and_route_localnet_alone(fw):
    fw.network_added(net(internal=True))
    assert fw.knobs.calls == []
    fw.network_added(net("b" * 64))
    assert fw.knobs.calls == ["ip_forward", "route_localnet pn-bbbbbbbbbbbb"]


def test_sync_retakes_recorded_ports_and_skips_the_ones_now_taken(fw):
    good = PortBinding("tcp", "198.18.100.2", 80, "0.0.0.0", 8080, 8080, 8080)
    lost = PortBinding("tcp", "198.18.100.3", 80, "0.0.0.0", 8081, 8081, 8081)  # busy meanwhile
    orphan = PortBinding("tcp", "198.18.100.4", 80, "0.0.0.0", 8082, 8082, 8082)
    fw.sync([net()], [ep(published=(good,)), ep("d" * 64, published=(lost,)),
                      ep("f" * 64, nid="z" * 64, published=(orphan,))])
    assert fw.published() == {"e" * 64: (good,)}
    assert fw.ports.held() == {("tcp", "0.0.0.0", 8080)}
    dnats = [line for line in fw.nft.docs[-1].splitlines() if "element inet pynet published" in line]
    assert dnats == ['add element inet pynet published_any { tcp . 8080 comment '
                     '"net aaaaaaaaaaaa endpoint eeeeeeeeeeee" : 198.18.100.2 . 80 }']
    fw.sync([], [])
    assert fw.ports.held() == set() and fw.published() == {}


def test_remove_all(fw):
    fw.network_added(net())
    fw.publish(net(), ep(), [PortRequest("tcp", 80, "0.0.0.0", 8080, 8080)])
    fw.remove_all()
    assert fw.ports.held() == set() and fw.forward.bridges == set()
    assert fw.nft.docs[-1].splitlines()[-1] == "delete table inet pynet"


def test_a_network_whose_rules_failed_leaves_no_state_behind(fw):
    """Issue 9, F: nft refused the first network's rules; a retry on the same bridge (another
    network ID, not internal) must not inherit the failed network's internal drops."""
    failed = replace(net("a" * 64, internal=True), bridge="pn-shared")
    refusals = [FirewallError("nft refused pynet's rules: a test")]

    def apply(doc):
        if refusals:
            raise refusals.pop()
        fw.nft.docs.append(doc)

    fw.nft.apply = apply
    with pytest.raises(FirewallError):
        fw.network_added(failed)
    assert fw.forward.bridges == set() and "pn-shared" not in fw.rules()
    retry = replace(net("b" * 64), bridge="pn-shared")
    fw.network_added(retry)
    assert [p.id for p in [NetworkPolicy.of(n) for n in fw._networks.values()]] == [retry.id]
    assert not NetworkPolicy.of(retry).internal


def test_restore_never_sleeps_on_busy_ports_and_retakes_them_later(fw, monkeypatch):
    """Issue 9, I: 45 endpoints whose recorded ports are still busy at restore (an exiting
    plugin holds them) cost no sleep before the plugin answers; they are published once free."""
    import driver.firewall.nft_firewall as module
    from tests.harness.wait import wait_until

    slept: list[float] = []
    real_sleep = module.time.sleep
    monkeypatch.setattr(module, "RETAKE_INTERVAL", 0.01)
    monkeypatch.setattr(module.time, "sleep", lambda s: (slept.append(s), real_sleep(s)))
    endpoints = [ep(eid=f"{i:064x}", published=(
        PortBinding("tcp", "198.18.100.2", 80, "0.0.0.0", 9000 + i, 9000 + i, 9000 + i),))
        for i in range(45)]
    fw.ports.busy = {("tcp", 9000 + i) for i in range(45)}
    fw.sync([net()], endpoints)
    assert fw.published() == {}
    assert [s for s in slept if s >= 0.05] == []  # sync itself did not wait
    fw.ports.busy = set()
    wait_until(lambda: len(fw.published()) == 45, 10, "the busy ports to be re-taken", interval=0.02)
    fw.unpublish(net(), endpoints[0])
    assert endpoints[0].id not in fw.published()


def test_each_change_is_one_transaction_of_its_own_elements(fw):
    fw.network_added(net())
    assert fw.nft.docs[-1].startswith("add table inet pynet\ndelete table inet pynet\n")  # the first builds it
    fw.network_added(net("b" * 64))
    assert "table" not in fw.nft.docs[-1] and '"pn-bbbbbbbbbbbb"' in fw.nft.docs[-1]
    fw.publish(net(), ep(), [PortRequest("tcp", 80, "0.0.0.0", 8080, 8080)])
    assert fw.nft.docs[-1] == ('add element inet pynet published_any { tcp . 8080 comment '
                               '"net aaaaaaaaaaaa endpoint eeeeeeeeeeee" : 198.18.100.2 . 80 }\n')
    fw.unpublish(net(), ep())
    assert fw.nft.docs[-1] == "delete element inet pynet published_any { tcp . 8080 }\n"


def test_a_refused_change_rebuilds_the_table_once_and_fails_only_if_that_fails_too(fw):
    fw.network_added(net())
    refusals = [FirewallError("nft refused pynet's rules: No such file or directory")]
    real = fw.nft.apply

    def apply(script):
        if refusals:
            raise refusals.pop()
        real(script)

    fw.nft.apply = apply
    fw.publish(net(), ep(), [PortRequest("tcp", 80, "0.0.0.0", 8080, 8080)])
    # The incremental line was refused (the table was gone): the whole table, with the port.
    assert fw.nft.docs[-1].startswith("add table inet pynet\ndelete table inet pynet\n")
    assert "tcp . 8080" in fw.nft.docs[-1]
    refusals[:] = [FirewallError("nft refused pynet's rules: b"), FirewallError("nft refused pynet's rules: a")]
    applied = len(fw.nft.docs)
    with pytest.raises(FirewallError):
        fw.publish(net(), ep("d" * 64), [PortRequest("tcp", 80, "0.0.0.0", 8090, 8090)])
    assert len(fw.nft.docs) == applied and set(fw.published()) == {"e" * 64}
    assert ("tcp", "0.0.0.0", 8090) not in fw.ports.held()


# --- IPv6 and Docker's routed gateway mode (real kernel: tests/kernel/test_firewall_ipv6.py) --
A6, E6 = "a" * 64, "e" * 64


@pytest.fixture
def fw6():
    return NftFirewall(forward=FakeShim(), nft=FakeNft(), knobs=FakeKnobs(), ports=FakePorts())



def req(host_ip: str = "", start: int = 8080, end: int | None = None, proto: str = "tcp") -> PortRequest:
    return PortRequest(proto, 80, host_ip, start, start if end is None else end)


@pytest.mark.parametrize("host_ip, default, families, expect", [
    ("", None, {4, 6}, ["0.0.0.0", "::"]),              # Docker 27+: both families
    ("0.0.0.0", None, {4, 6}, ["0.0.0.0", "::"]),
    ("", None, {4}, ["0.0.0.0"]),                       # no IPv6 address: IPv4 only
    ("", None, {6}, ["::"]),                            # IPv6-only network
    ("", "198.18.50.1", {4, 6}, ["198.18.50.1"]),       # host_binding_ipv4 given: that address
    ("::", None, {4, 6}, ["::"]),
    ("fd18:50::1", None, {4, 6}, ["fd18:50::1"]),
])
def test_host_addresses_become_one_request_per_family(host_ip, default, families, expect):
    assert [r.host_ip for r in resolve_host_ips((req(host_ip),), default, families)] == expect


def test_an_address_of_a_family_the_container_lacks_is_refused():
    with pytest.raises(BadRequest, match="no IPv6 address"):
        resolve_host_ips((req("fd18:50::1"),), None, {4})
    with pytest.raises(BadRequest, match="no IPv4 address"):
        resolve_host_ips((req("198.18.50.1"),), None, {6})
    with pytest.raises(BadRequest, match="no IPv4 address"):
        resolve_host_ips((req(""),), "198.18.50.1", {6})


def net6(**generic: str) -> NetworkRecord:
    return NetworkRecord(id=A6, options=parse_network_options({"com.docker.network.generic": generic}),
                         bridge="pn-aaaaaaaaaaaa", bridge_created=True,
                         gateways=("198.18.100.1/24", "fd18:100::1/64"),
                         subnets=("198.18.100.0/24", "fd18:100::/64"))


EP = EndpointRecord(A6, E6, "pnveeeeeeeeeeee", "pnceeeeeeeeeeee", ("198.18.100.2/24", "fd18:100::2/64"),
                    "02:42:00:00:00:02")


def test_zero_and_ranges_take_one_host_port_for_both_families(fw6):
    fw6.network_added(net6())
    assert "ipv6_forward" in fw6.knobs.calls
    requests = resolve_host_ips((req(start=0), req(start=9000, end=9010)), None, {4, 6})
    got = fw6.publish(net6(), EP, requests)
    assert [(b.host_ip, b.host_port, b.container_ip) for b in got] == [
        ("0.0.0.0", 49153, "198.18.100.2"), ("::", 49153, "fd18:100::2"),
        ("0.0.0.0", 9000, "198.18.100.2"), ("::", 9000, "fd18:100::2")]
    assert fw6.nft.docs[-1].splitlines() == [
        'add element inet pynet published_any { tcp . 49153 comment "net aaaaaaaaaaaa endpoint '
        'eeeeeeeeeeee" : 198.18.100.2 . 80, tcp . 9000 comment "net aaaaaaaaaaaa endpoint '
        'eeeeeeeeeeee" : 198.18.100.2 . 80 }',
        'add element inet pynet published_any6 { tcp . 49153 comment "net aaaaaaaaaaaa endpoint '
        'eeeeeeeeeeee" : fd18:100::2 . 80, tcp . 9000 comment "net aaaaaaaaaaaa endpoint '
        'eeeeeeeeeeee" : fd18:100::2 . 80 }']


def test_routed_mode_holds_no_host_port_and_opens_the_container_port(fw6):
    routed = net6(**{"com.docker.network.bridge.gateway_mode_ipv6": "routed"})
    fw6.network_added(routed)
    got = fw6.publish(routed, EP, resolve_host_ips((req(), req("", 8081)), None, {4, 6}))
    assert [(b.host_ip, b.host_port, b.routed) for b in got] == [
        ("0.0.0.0", 8080, False), ("::", 80, True), ("0.0.0.0", 8081, False), ("::", 80, True)]
    assert fw6.ports.held() == {("tcp", "0.0.0.0", 8080), ("tcp", "0.0.0.0", 8081)}
    # Two mappings of one container port are one open element, added and deleted once.
    assert 'add element inet pynet open6 { fd18:100::2 . tcp . 80 comment "net aaaaaaaaaaaa endpoint ' \
           'eeeeeeeeeeee" }' in fw6.nft.docs[-1].splitlines()
    fw6.unpublish(routed, EP)
    assert "delete element inet pynet open6 { fd18:100::2 . tcp . 80 }" in fw6.nft.docs[-1].splitlines()
    assert fw6.ports.held() == set()


def test_routed_mode_has_no_masquerade_and_lets_icmp_in():
    sets = {e.set for e in network_elements(NetworkPolicy.of(
        net6(**{"com.docker.network.bridge.gateway_mode_ipv6": "routed"})))}
    assert {"nat4", "own6", "routed6"} <= sets and "nat6" not in sets and "routed4" not in sets
    sets = {e.set for e in network_elements(NetworkPolicy.of(net6()))}
    assert {"nat4", "nat6", "own4", "own6"} <= sets and not sets & {"routed4", "routed6"}


def test_a_routed_binding_is_recorded_as_routed_and_a_nat_one_as_before():
    nat = PortBinding("tcp", "fd18:100::2", 80, "::", 8080, 8080, 8080)
    routed = PortBinding("tcp", "fd18:100::2", 80, "::", 80, 8080, 8080, routed=True)
    assert "routed" not in nat.to_dict() and PortBinding.from_dict(nat.to_dict()) == nat
    assert PortBinding.from_dict(routed.to_dict()) == routed
    assert port_element(Published(A6, E6, nat)).key == "tcp . 8080"
    assert port_element(Published(A6, E6, PortBinding("udp", "fd18:100::2", 53, "fd18:50::1", 53, 53, 53))).key \
        == "fd18:50::1 . udp . 53"
