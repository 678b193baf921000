"""A restarted plugin re-creates what is missing and removes what nobody owns, on a real kernel."""
import os

from pynet.app import Deps
from driver.netlink.pyroute2_netlink import Pyroute2Netlink
from pynet.store.local import LocalStore
from tests.fakes.firewall import RecordingFirewall
from tests.harness.app_client import app_client

NID = "1" * 64
EID = "2" * 64


def start(ns, db):
    deps = Deps(store=LocalStore(db), netlink=Pyroute2Netlink(ns), firewall=RecordingFirewall())
    return deps, app_client(deps, host_id="k")


def test_restart_recreates_bridge_reattaches_veth_and_removes_orphans(ns, tmp_path):
    db = os.path.join(tmp_path, "pynet.db")
    deps, call = start(ns, db)
    assert call("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {"com.docker.network.generic": {"mtu": "1400"}},
        "IPv4Data": [{"Pool": "10.3.0.0/24", "Gateway": "10.3.0.1/24"}]})[0] == 200
    assert call("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.3.0.2/24"}})[0] == 200
    nl = deps.netlink
    bridge, host_if = "pn-" + NID[:12], "pnv" + EID[:12]
    # Damage: the bridge deleted by hand, and a stray pynet link nobody records.
    nl.remove_link(bridge)
    nl.ensure_bridge("pn-deadbeef0000", 1500, [])
    deps.store.close()

    deps, call = start(ns, db)
    link = nl.link(bridge)
    assert link is not None and link.mtu == 1400 and link.up
    assert nl.link(host_if).master == bridge
    assert nl.link("pn-deadbeef0000") is None
    assert set(deps.firewall.networks) == {NID}

    assert call("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})[0] == 200
    assert call("NetworkDriver.DeleteNetwork", {"NetworkID": NID})[0] == 200
    assert [l.name for l in nl.links() if l.name.startswith("pn")] == []
