"""A user's own bridge is left exactly as found, and a bridge re-made after it was deleted by
hand gets every setting the original had (issue 17, item 6). Real kernel, the plugin's app
with its real firewall in a throwaway "host" namespace (firewall_topology.py)."""
from __future__ import annotations

from driver.netlink.pyroute2_netlink import Pyroute2Netlink
from tests.kernel.firewall_topology import Topology, sh

NID, NID2 = "d" * 64, "e" * 64
EID_A, EID_B = "1" * 64, "2" * 64
USER_BRIDGE = "usrbr0"
USER_ADDRESS = "198.18.123.1/24"  # the user's own, outside the network's subnet
TCP80 = {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}


def route_localnet(topo: Topology, bridge: str) -> str:
    return sh("cat", f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet", ns=topo.host).stdout.strip()


def user_bridge(topo: Topology, *, up: bool = True, addresses: tuple[str, ...] = (USER_ADDRESS,)):
    sh("ip", "link", "add", USER_BRIDGE, "mtu", "9000", "type", "bridge", ns=topo.host)
    for address in addresses:
        sh("ip", "addr", "add", address, "dev", USER_BRIDGE, ns=topo.host)
    if up:
        sh("ip", "link", "set", USER_BRIDGE, "up", ns=topo.host)
    return Pyroute2Netlink(topo.host)


def test_a_users_bridge_keeps_its_mtu_and_address_and_loses_pynets_gateway(topo):
    nl = user_bridge(topo)
    before = nl.found_link(USER_BRIDGE)
    assert before.mtu == 9000 and before.route_localnet is False

    gw = topo.network(NID, "198.18.124.0/24", bridge_name=USER_BRIDGE)
    c = topo.container(NID, EID_A, "198.18.124.2/24", gw, [TCP80])
    topo.serve(c, 80)
    topo.container(NID, EID_B, "198.18.124.3/24", gw)
    during = nl.found_link(USER_BRIDGE)
    # In use, with two ports: no MTU asked for, so none changed (the ports take the bridge's).
    assert during.mtu == 9000 and during.up
    assert set(during.addresses) == {USER_ADDRESS, "198.18.124.1/24"}
    assert nl.link("pnv" + EID_A[:12]).mtu == 9000
    assert topo.ask(topo.host, "tcp", "127.0.0.1", 8080) == f"tcp {gw}"

    for eid in (EID_A, EID_B):
        assert topo.call("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": eid})[0] == 200
    # The kernel drops a bridge made with an MTU to 1500 when its last port leaves; the next
    # container's port brings it back to what the user made it with.
    topo.container(NID, EID_A, "198.18.124.2/24", gw)
    assert nl.found_link(USER_BRIDGE).mtu == 9000
    assert topo.call("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID_A})[0] == 200
    assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID})[0] == 200
    after = nl.found_link(USER_BRIDGE)
    assert after == before  # MTU, up, exactly its own address, route_localnet off again
    assert after.addresses == (USER_ADDRESS,)


def test_a_users_bridge_is_put_back_after_an_mtu_option_and_keeps_an_address_it_had(topo):
    """Down, with the gateway address already its own: the `mtu` option is applied while the
    network lives, and the MTU, the address and the link state are the user's again after."""
    nl = user_bridge(topo, up=False, addresses=(USER_ADDRESS, "198.18.125.1/24"))
    before = nl.found_link(USER_BRIDGE)
    topo.network(NID, "198.18.125.0/24", bridge_name=USER_BRIDGE, mtu="1400")
    during = nl.found_link(USER_BRIDGE)
    assert during.mtu == 1400 and during.up
    assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID})[0] == 200
    after = nl.found_link(USER_BRIDGE)
    assert after == before and not after.up
    assert set(after.addresses) == {USER_ADDRESS, "198.18.125.1/24"}


def test_a_users_bridge_is_put_back_when_create_network_fails(topo):
    nl = user_bridge(topo)
    before = nl.found_link(USER_BRIDGE)
    # The firewall refuses its part, after the bridge got its gateway and the MTU asked for.
    topo.deps.firewall.knobs.ensure_ip_forward = _refuse  # type: ignore[method-assign]
    status, answer = topo.call("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {"com.docker.network.generic": {"bridge_name": USER_BRIDGE,
                                                                     "mtu": "1400"}},
        "IPv4Data": [{"Pool": "198.18.126.0/24", "Gateway": "198.18.126.1/24"}]})
    assert status != 200 and "Err" in answer
    assert nl.found_link(USER_BRIDGE) == before


def _refuse() -> None:
    from driver.firewall.forward_accept import FirewallError
    raise FirewallError("refused by the test")


def test_a_bridge_remade_by_create_endpoint_serves_published_ports_on_loopback(topo):
    """Deleted by hand while the plugin runs: the next CreateEndpoint makes it again, with
    the MTU, the gateway, br_netfilter, route_localnet and the rule set it had, so
    127.0.0.1:PORT reaches the new container at once."""
    nl = Pyroute2Netlink(topo.host)
    bridge = "pn-" + NID[:12]
    gw = topo.network(NID, "198.18.127.0/24", mtu="1400", icc="false")
    original = (nl.found_link(bridge), nl.bridge_netfilter(bridge))
    assert original[0].route_localnet and original[1] is True
    rules = topo.nft_text()

    sh("ip", "link", "del", bridge, ns=topo.host)
    c = topo.container(NID, EID_A, "198.18.127.2/24", gw, [TCP80])
    assert (nl.found_link(bridge), nl.bridge_netfilter(bridge)) == original
    assert nl.link("pnv" + EID_A[:12]).master == bridge
    topo.serve(c, 80)
    assert topo.ask(topo.host, "tcp", "127.0.0.1", 8080) == f"tcp {gw}"
    assert topo.ask(topo.outside, "tcp", "198.18.50.1", 8080) == "tcp 198.18.50.2"
    assert bridge in rules and bridge in topo.nft_text()
