"""AllocateNetwork and FreeNetwork: what a Swarm manager asks of a global-scope driver.

The leader manager calls AllocateNetwork once per Swarm network (again after a leader change,
with the options it got the first time merged in) and keeps the options answered as the
network's driver state; every node that gets a task on the network then receives them as
CreateNetwork's generic options, with the manager's NetworkID. So the answer carries the
user's options back (Swarm passes on nothing else) plus, for an overlay, the VNI allocated
cluster-wide here, as Docker's overlay manager does. FreeNetwork gives that VNI back.
Nothing is made in the kernel: nodes do that in CreateNetwork. docs/swarm.md.
"""
from __future__ import annotations

import ipaddress
import logging
import re

from pynet_core.errors import BadRequest

from .options import GENERIC, parse_network_options
from .kinds.overlay.model import OverlayId
from .kinds.overlay.runtime import OverlayRuntime
from .protocol import AllocateNetwork, AllocateNetworkAnswer, NetworkCall

log = logging.getLogger(__name__)

VXLANID_LIST = "com.docker.network.driver.kinds.overlay.vxlanid_list"
# A global-scope network's pools are in the IPAM's global address space; Swarm's
# AllocateNetwork does not name it.
GLOBAL_SPACE = "GlobalDefault"


# Swarm names its objects with 25 lowercase letters and digits (swarmkit's identity.NewID);
# a network dockerd makes itself has 64 hex digits.
_SWARM_ID = re.compile(r"[0-9a-z]{25}")


def is_swarm_network(network_id: str) -> bool:
    return bool(_SWARM_ID.fullmatch(network_id))


def refuse_swarm_network_on_local_scope(network_id: str) -> None:
    """A --scope swarm network reaching a local-scope pynet: Swarm did not allocate it
    (AllocateNetwork is for global-scope drivers), so each node got neither its options nor
    its pools and would make a node-local network with Docker's own IPAM and a subnet of
    its own, whose tasks cannot reach the other nodes' (issue 18). Refused, naming the fix."""
    if is_swarm_network(network_id):
        raise BadRequest(
            f"network {network_id} is a swarm network (--scope swarm), but this pynet serves the "
            "local scope, so Swarm gave this node neither its options nor its IPAM: it would be a "
            "node-local network that tasks on other nodes cannot reach. Set PYNET_SCOPE=global on "
            "every node (docker plugin disable pynet:latest; docker plugin set pynet:latest "
            "PYNET_SCOPE=global; docker plugin enable pynet:latest), then create the network "
            "again (docs/swarm.md)")


class SwarmNetworks:
    def __init__(self, available: tuple[str, ...], overlay: OverlayRuntime | None) -> None:
        self.available = available
        self.overlay = overlay

    def allocate(self, req: AllocateNetwork) -> AllocateNetworkAnswer:
        # The options are checked as CreateNetwork will check them on every node: a typo
        # fails `docker network create` on the manager, not each task later.
        options = parse_network_options({GENERIC: req.options}, self.available)
        if options.type != "overlay":
            return AllocateNetworkAnswer(dict(req.options))
        if self.overlay is None:
            raise BadRequest("overlay networks are not served by this plugin")
        self.overlay.require_shared_store()
        v4 = [s for s in req.subnets if ipaddress.ip_network(s).version == 4]
        if len(v4) != 1:
            raise BadRequest("an overlay network needs exactly one IPv4 --subnet"
                             + (f" (got {', '.join(v4)})" if v4 else ""))
        oid = OverlayId(req.address_space or GLOBAL_SPACE, v4[0])
        vni = self.overlay.registry.allocate_swarm_vni(req.network_id, oid, options.vni)
        answer = dict(req.options)
        if options.vni is None:
            answer[VXLANID_LIST] = str(vni)
        log.info("swarm network %s: overlay %s, VNI %d", req.network_id[:12], oid, vni)
        return AllocateNetworkAnswer(answer)

    def free(self, req: NetworkCall) -> None:
        if self.overlay is None:
            return
        vni = self.overlay.registry.free_swarm_vni(req.network_id)
        if vni is not None:
            log.info("swarm network %s: VNI %d freed", req.network_id[:12], vni)
