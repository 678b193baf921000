"""A restarted plugin re-creates what is missing, finishes what a crash interrupted, and
touches nothing no record names, on a real kernel."""
import os

from pynet.app import Deps
from driver.netlink.pyroute2_netlink import Pyroute2Netlink
from pynet_core.store.local import LocalStore
from tests.fakes.firewall import RecordingFirewall
from tests.harness.app_client import app_client

NID = "1" * 64
EID = "2" * 64


def start(ns, db):
    deps = Deps(store=LocalStore(db), netlink=Pyroute2Netlink(ns), firewall=RecordingFirewall())
    return deps, app_client(deps, host_id="k")


def test_restart_recreates_bridge_reattaches_veth_and_leaves_unrecorded_links(ns, tmp_path):
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
    # Named like pynet's, but no record names it: perhaps another pynet's (issue 9, E).
    assert nl.link("pn-deadbeef0000") is not None
    nl.remove_link("pn-deadbeef0000")
    assert set(deps.firewall.networks) == {NID}

    assert call("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})[0] == 200
    assert call("NetworkDriver.DeleteNetwork", {"NetworkID": NID})[0] == 200
    assert [l.name for l in nl.links() if l.name.startswith("pn")] == []


GENERIC = "com.docker.network.generic"


def _network(nid: str, pool: str, **generic) -> dict:
    return {"NetworkID": nid, "Options": {GENERIC: generic},
            "IPv4Data": [{"Pool": pool, "Gateway": pool.replace("0/24", "1/24")}]}


def test_restart_finishes_creates_and_deletes_a_crash_interrupted(ns, tmp_path):
    """kill -9 inside CreateNetwork (after the kernel work, before the record is ready) and
    inside DeleteNetwork (after the intent, before the kernel work) with custom bridge names:
    the restarted plugin removes both bridges and every record (issue 9, E)."""
    from contextlib import ExitStack

    from driver.models import CREATING, DELETING, NetworkRecord
    from driver.options import parse_network_options

    db = os.path.join(tmp_path, "pynet.db")
    deps, call = start(ns, db)
    nl, svc = deps.netlink, call.network
    kind = svc.kinds["bridge"]
    draft = NetworkRecord(id="3" * 64, options=parse_network_options({GENERIC: {"bridge_name": "crashbr0"}}),
                          gateways=("10.4.0.1/24",), subnets=("10.4.0.0/24",), state=CREATING)
    net = svc.ledger.begin_network(kind.plan_network(draft, []))
    kind.create_network(net, ExitStack())  # the process dies here: no undo runs
    assert nl.link("crashbr0") is not None
    assert call("NetworkDriver.CreateNetwork", _network("4" * 64, "10.5.0.0/24", bridge_name="crashbr1"))[0] == 200
    svc.ledger.set_network_state(svc.network("4" * 64), DELETING)  # ...and here, in DeleteNetwork
    deps.store.close()

    deps, call = start(ns, db)
    assert nl.link("crashbr0") is None and nl.link("crashbr1") is None
    assert deps.store.list("v1/hosts/") == []
    assert call("NetworkDriver.CreateNetwork", _network("3" * 64, "10.4.0.0/24", bridge_name="crashbr0"))[0] == 200
    assert call("NetworkDriver.DeleteNetwork", {"NetworkID": "3" * 64})[0] == 200
    assert nl.link("crashbr0") is None


def test_a_users_bridge_named_like_pynets_survives_restarts_and_delete(ns, tmp_path):
    db = os.path.join(tmp_path, "pynet.db")
    deps, call = start(ns, db)
    nl = deps.netlink
    nl.ensure_bridge("pn-users0", 1500, [])
    assert call("NetworkDriver.CreateNetwork", _network(NID, "10.6.0.0/24", bridge_name="pn-users0"))[0] == 200
    deps.store.close()
    deps, call = start(ns, db)
    assert nl.link("pn-users0") is not None
    assert call("NetworkDriver.DeleteNetwork", {"NetworkID": NID})[0] == 200
    assert nl.link("pn-users0") is not None  # found, not made: never pynet's to delete
    nl.remove_link("pn-users0")
