"""Per-bridge netfilter (IFLA_BR_NF_CALL_*): icc=false bridges ask for it, icc=true bridges
pynet made let intra-network frames skip it where the host's global bridge-nf-call-* are
off; and with the global sysctls on (as Docker sets them) or off, isolation, icc=false,
--internal, published ports and hairpin (to the container itself and to another container
of the same network) all still hold. Real kernel, the plugin's app in a throwaway "host"
namespace (firewall_topology.py); the global sysctls are per network namespace."""
from __future__ import annotations

from pathlib import Path

import pytest

from driver.netlink.pyroute2_netlink import Pyroute2Netlink
from tests.kernel.firewall_topology import OUTSIDE_HOST_IP, OUTSIDE_IP, Topology, sh

NID_A, NID_B, NID_C = "a" * 64, "b" * 64, "c" * 64
BRIDGE_A, BRIDGE_B = "pn-" + NID_A[:12], "pn-" + NID_B[:12]
TCP80 = {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}
GLOBALS = [f"/proc/sys/net/bridge/bridge-nf-call-{t}" for t in ("iptables", "ip6tables", "arptables")]
PROBE = """table inet pnprobe {
 chain intra {
  type filter hook forward priority -400;
  iifname "%s" oifname "%s" counter
 }
}
"""


@pytest.fixture(params=["global-on", "global-off"])
def topo(request, tmp_path: Path):
    t = Topology(tmp_path)
    try:
        value = "1" if request.param == "global-on" else "0"
        for path in GLOBALS:
            sh("sh", "-c", f"echo {value} > {path}", ns=t.host)
        t.start_plugin()
        t.global_on = value == "1"  # type: ignore[attr-defined]
        yield t
    finally:
        t.close()


def intra_packets(topo: Topology) -> int:
    out = sh("nft", "list", "chain", "inet", "pnprobe", "intra", ns=topo.host).stdout
    return int(out.split("counter packets ")[1].split()[0])


def test_the_knob_follows_icc(topo):
    topo.network(NID_A, "198.18.100.0/24")
    topo.network(NID_B, "198.18.101.0/24", icc="false")
    nl = Pyroute2Netlink(topo.host)
    assert nl.bridge_netfilter(BRIDGE_A) is False
    assert nl.bridge_netfilter(BRIDGE_B) is True
    # Restart (restore) re-applies it, e.g. after someone flipped it by hand.
    nl.set_bridge_netfilter(BRIDGE_B, False)
    topo.start_plugin()
    assert nl.bridge_netfilter(BRIDGE_B) is True


def test_frames_inside_an_icc_network_skip_netfilter_only_where_the_host_allows(topo):
    gw = topo.network(NID_A, "198.18.100.0/24")
    one = topo.container(NID_A, "1" * 64, "198.18.100.2/24", gw)
    two = topo.container(NID_A, "2" * 64, "198.18.100.3/24", gw)
    topo.serve(two, 80)
    probe = topo.tmp / "probe.nft"
    probe.write_text(PROBE % (BRIDGE_A, BRIDGE_A))
    sh("nft", "-f", str(probe), ns=topo.host)
    assert topo.ask(one, "tcp", "198.18.100.3", 80) == "tcp 198.18.100.2"
    seen = intra_packets(topo)
    if topo.global_on:
        assert seen > 0  # the kernel ORs the bridge's knob with the global sysctl
    else:
        assert seen == 0


def test_isolation_icc_internal_published_ports_and_hairpin_hold(topo):
    gw_a = topo.network(NID_A, "198.18.100.0/24")
    client = topo.container(NID_A, "1" * 64, "198.18.100.2/24", gw_a)
    server = topo.container(NID_A, "2" * 64, "198.18.100.3/24", gw_a, [TCP80])
    topo.serve(server, 80)
    topo.serve(topo.outside, 7000)
    # Inside the network (icc on), directly.
    assert topo.ask(client, "tcp", "198.18.100.3", 80) == "tcp 198.18.100.2"
    # Published port from outside, from the host, and hairpin: from another container of
    # the same network and from the container itself, through the host's address.
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP, 8080) == f"tcp {OUTSIDE_IP}"
    assert topo.ask(topo.host, "tcp", "127.0.0.1", 8080) == f"tcp {gw_a}"
    assert topo.ask(client, "tcp", OUTSIDE_HOST_IP, 8080) == f"tcp {gw_a}"
    assert topo.ask(server, "tcp", OUTSIDE_HOST_IP, 8080) == f"tcp {gw_a}"
    assert topo.ask(server, "tcp", gw_a, 8080) == f"tcp {gw_a}"

    # icc=false: the two containers cannot reach each other, but reach out.
    gw_b = topo.network(NID_B, "198.18.101.0/24", icc="false")
    b1 = topo.container(NID_B, "3" * 64, "198.18.101.2/24", gw_b)
    b2 = topo.container(NID_B, "4" * 64, "198.18.101.3/24", gw_b)
    topo.serve(b2, 80)
    assert topo.ask(b1, "tcp", "198.18.101.3", 80).startswith("fail")
    assert topo.ask(b1, "tcp", OUTSIDE_IP, 7000) == f"tcp {OUTSIDE_HOST_IP}"
    # Isolation between networks, both ways.
    assert topo.ask(client, "tcp", "198.18.101.3", 80).startswith("fail")
    assert topo.ask(b1, "tcp", "198.18.100.3", 80).startswith("fail")

    # --internal: no way out, even with a route; inside it containers still talk (icc on).
    gw_c = topo.network(NID_C, "198.18.103.0/24", internal=True)
    c1 = topo.container(NID_C, "5" * 64, "198.18.103.2/24", gateway=None)
    c2 = topo.container(NID_C, "6" * 64, "198.18.103.3/24", gateway=None)
    topo.serve(c2, 80)
    sh("ip", "route", "add", "198.18.50.0/24", "via", gw_c, ns=c1)
    assert topo.ask(c1, "tcp", OUTSIDE_IP, 7000).startswith("fail")
    assert topo.ask(c1, "tcp", "198.18.103.3", 80) == "tcp 198.18.103.2"
