"""What only the real adapter shows. Every Netlink method is proven against Pyroute2Netlink
(and the fake) by the contract suite, tests/contract/test_netlink_contract.py; here, what the
kernel holds beyond the API: the bridge's own static entry beside each unicast FDB entry of
a VXLAN device, which neighbour suppression needs (it answers ARP only for MACs it has an
entry for behind a suppressing port); and a namespace removed under a handle into it (the
fake's handles do not notice)."""
import secrets
import subprocess

import pytest
from pyroute2 import IPRoute

from driver.netlink.api import FdbEntry, NoSuchNamespace
from driver.netlink.pyroute2_netlink import Pyroute2Netlink


def bridge_entries(netns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "bridge", "fdb", "show", "br", "br0"],
                          capture_output=True, text=True, check=True).stdout


def test_a_unicast_entry_has_the_bridges_static_entry_beside_it(ns):
    nl = Pyroute2Netlink(ns)
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("add", ifname="ul0", kind="veth", peer={"ifname": "ul1"})
        ipr.addr("add", index=ipr.link_lookup(ifname="ul0")[0], address="198.18.0.11", prefixlen=24)
        ipr.link("set", index=ipr.link_lookup(ifname="ul0")[0], state="up")
    inner_name = f"pnt-ov{secrets.token_hex(4)}"
    try:
        nl.ensure_netns(inner_name)
        inner = nl.within(inner_name)
        inner.ensure_bridge("br0", 1450, [])
        nl.add_vxlan("pnxtest", 4242, "198.18.0.11", 4789, 1450, "br0", netns=inner_name)
        one, two, bad = "02:42:0a:00:00:03", "02:42:0a:00:00:04", "01:00:5e:00:00:05"
        inner.ensure_fdb("pnxtest", one, "198.18.0.12")
        assert f"{one} dev pnxtest master br0 static" in bridge_entries(inner_name)
        assert inner.remove_fdb("pnxtest", one, "198.18.0.12") is True
        assert f"{one} dev pnxtest" not in bridge_entries(inner_name)
        with inner.session() as batch:
            batch.change_peers("pnxtest", "br0", fdb_add=[FdbEntry(two, "198.18.0.12"),
                                                          FdbEntry(bad, "198.18.0.12")])
            shown = bridge_entries(inner_name)
            assert f"{two} dev pnxtest master br0 static" in shown and bad not in shown
            assert batch.change_peers("pnxtest", "br0", fdb_remove=[FdbEntry(two, "198.18.0.12")]) == []
        assert f"{two} dev pnxtest" not in bridge_entries(inner_name)
    finally:
        nl.remove_netns(inner_name)


def test_a_handle_into_a_namespace_removed_since_says_so(ns):
    """within() checks the namespace once; each later call enters it again, and one removed
    meanwhile is NoSuchNamespace (what the callers pass over), not a bare OSError."""
    nl = Pyroute2Netlink(ns)
    name = f"pnt-gone{secrets.token_hex(4)}"
    nl.ensure_netns(name)
    try:
        inside = nl.within(name)
        assert inside.remove_link("pn-none") is False
    finally:
        nl.remove_netns(name)
    with pytest.raises(NoSuchNamespace, match=name):
        inside.remove_link("pn-none")
