"""The whole key schema in one place. Keys are relative to the store's own prefix.

v1/ipam/spaces/<space>                       the pools of an address space (one CAS'd record)
v1/ipam/addrs/<space>/<pool>/<ip>            one claimed address (create-if-absent)
v1/ipam/blocks/<space>/<pool>/<block>        a host's address block in a pool: a hint only
v1/ipam/fences/<host>                        the host's write fence (pynet_core/store/fenced.py)
v1/hosts/<host>/networks/<nid>               a network as this host's driver made it
v1/hosts/<host>/endpoints/<nid>/<eid>        an endpoint on this host
v1/hosts/<host>/names/<space>/<name>         a kernel name a network or endpoint holds
v1/hosts/<host>/fence                        the network driver's write fence
v1/hosts/<host>/docker                       the engine ID of the dockerd proven this host's
v1/hosts/<host>/overlay-fence                the overlay's write fence
v1/hosts/<host>/seen                         the host's last-seen report (--store consul)
v1/overlay/nets/<space>/<subnet>/def         an overlay's definition (VNI, MTU, UDP port)
v1/overlay/vnis/<vni>                        a VNI taken cluster-wide (create-if-absent)
v1/overlay/hosts/<host>/members/<space>/<subnet>        <host> has the overlay: its VTEP
v1/overlay/hosts/<host>/peers/<space>/<subnet>/<eid>    an endpoint of <host> on it (IP, MAC)
v1/overlay/hosts/<host>/wireguard           <host>'s WireGuard public key, endpoint, tunnel address
v1/overlay/tunnels/<ip>                      a WireGuard tunnel address taken cluster-wide (create-if-absent)
v1/overlay-alive/<host>                      a host's heartbeat (outside the watched prefix)
v1/names/hosts/<host>/<eid>                  a container's names on a pynet network, one
                                             endpoint of <host> (--dns-addr; driver/names/)

(<subnet> is the CIDR with "/" as "_".) Everything one host writes alone sits under a prefix
naming that host, so a Consul ACL per host can be a handful of prefixes
(docs/consul-policy-host.hcl): v1/hosts/<host>/, v1/ipam/fences/<host>,
v1/overlay/hosts/<host>/, v1/overlay-alive/<host>, v1/names/hosts/<host>/. The rest is shared: IPAM pools and
claims, overlay definitions and VNI claims. A record under v1/overlay/hosts/<host>/ speaks
for <host> only: a "host" field naming another is rejected (driver/kinds/overlay/model.py).

Before this layout a host's overlay records were v1/overlay/nets/<space>/<subnet>/members/<host>
and .../peers/<host>/<eid>; a restarted pynet re-publishes its own and deletes those
(legacy_overlay_member/legacy_overlay_peer, parse_overlay_key's LEGACY_* kinds).
"""
from __future__ import annotations

from dataclasses import dataclass

VERSION = "v1"


def _cidr(text: str) -> str:
    # '/' separates key levels; a CIDR keeps its meaning with '_' instead.
    return text.replace("/", "_")


def ipam_space(space: str) -> str:
    return f"{VERSION}/ipam/spaces/{space}"


def ipam_addrs_all() -> str:
    """The prefix of every claimed address, in every space and pool."""
    return f"{VERSION}/ipam/addrs/"


def ipam_addrs(space: str, pool: str) -> str:
    return f"{VERSION}/ipam/addrs/{space}/{_cidr(pool)}/"


def ipam_addr(space: str, pool: str, ip: str) -> str:
    return ipam_addrs(space, pool) + ip


def claimed_address(key: str) -> str:
    """The address an ipam_addr key names (the inverse of ipam_addr's last level)."""
    return key.rsplit("/", 1)[1]


def claimed_address_parts(key: str) -> tuple[str, str, str]:
    """(space, pool CIDR, address) of an ipam_addr key."""
    space, pool, ip = key[len(ipam_addrs_all()):].split("/")
    return space, pool.replace("_", "/"), ip


def ipam_blocks(space: str, pool: str) -> str:
    return f"{VERSION}/ipam/blocks/{space}/{_cidr(pool)}/"


def ipam_block(space: str, pool: str, block: str) -> str:
    return ipam_blocks(space, pool) + _cidr(block)


def ipam_fence(host: str) -> str:
    """The host's write fence (pynet_core/store/fenced.py); at its historical path."""
    return f"{VERSION}/ipam/fences/{host}"


def networks(host: str) -> str:
    return f"{VERSION}/hosts/{host}/networks/"


def network(host: str, nid: str) -> str:
    return networks(host) + nid


def endpoints(host: str, nid: str | None = None) -> str:
    base = f"{VERSION}/hosts/{host}/endpoints/"
    return base + f"{nid}/" if nid else base


def endpoint(host: str, nid: str, eid: str) -> str:
    return endpoints(host, nid) + eid


def host_name(host: str, space: str, name: str) -> str:
    """A kernel name held on `host`: spaces "network" and "endpoint" (the ID characters
    link names are made of), "bridge" (a bridge's whole name)."""
    return f"{VERSION}/hosts/{host}/names/{space}/{name}"


def host_names(host: str) -> str:
    return f"{VERSION}/hosts/{host}/names/"


def driver_fence(host: str) -> str:
    return f"{VERSION}/hosts/{host}/fence"


def docker_engine(host: str) -> str:
    """The dockerd seen knowing this host's networks (driver/leaks.py)."""
    return f"{VERSION}/hosts/{host}/docker"


def host_seen(host: str) -> str:
    """The host's last-seen report (pynet/last_seen.py)."""
    return f"{VERSION}/hosts/{host}/seen"


def hosts_all() -> str:
    """The prefix of every host's records."""
    return f"{VERSION}/hosts/"


def host_of(key: str) -> str | None:
    """The host a key under hosts_all() belongs to."""
    if not key.startswith(hosts_all()):
        return None
    return key[len(hosts_all()):].split("/", 1)[0] or None


def overlay_fence(host: str) -> str:
    return f"{VERSION}/hosts/{host}/overlay-fence"


def overlay_all() -> str:
    """The prefix every host's overlay watcher watches: definitions, VNI claims, and every
    host's members and peers (the heartbeats are outside: a beat wakes nobody)."""
    return f"{VERSION}/overlay/"


def overlay_nets() -> str:
    """The prefix of every overlay's definition."""
    return f"{VERSION}/overlay/nets/"


def overlay_net(space: str, subnet: str) -> str:
    return f"{overlay_nets()}{space}/{_cidr(subnet)}/"


def overlay_def(space: str, subnet: str) -> str:
    return overlay_net(space, subnet) + "def"


def overlay_hosts() -> str:
    """The prefix of every host's own overlay records."""
    return f"{VERSION}/overlay/hosts/"


def overlay_host(host: str) -> str:
    """The prefix only `host` writes (its per-host ACL covers it)."""
    return f"{overlay_hosts()}{host}/"


def overlay_member(space: str, subnet: str, host: str) -> str:
    return f"{overlay_host(host)}members/{space}/{_cidr(subnet)}"


def overlay_peers(space: str, subnet: str, host: str) -> str:
    return f"{overlay_host(host)}peers/{space}/{_cidr(subnet)}/"


def overlay_peer(space: str, subnet: str, host: str, eid: str) -> str:
    return overlay_peers(space, subnet, host) + eid


def legacy_overlay_member(space: str, subnet: str, host: str) -> str:
    """Where a member record was before the host-owned layout (migration only)."""
    return overlay_net(space, subnet) + f"members/{host}"


def legacy_overlay_peer(space: str, subnet: str, host: str, eid: str) -> str:
    """Where a peer record was before the host-owned layout (migration only)."""
    return overlay_net(space, subnet) + f"peers/{host}/{eid}"


DEF, MEMBER, PEER, LEGACY_MEMBER, LEGACY_PEER = "def", "member", "peer", "legacy-member", "legacy-peer"


@dataclass(frozen=True, slots=True)
class OverlayKey:
    """What a key under overlay_all() names. `host` is the host the key belongs to (its
    prefix), not what the record says; `endpoint` is set for peers."""
    kind: str
    space: str
    subnet: str  # CIDR, with its "/"
    host: str = ""
    endpoint: str = ""


def _subnet(level: str) -> str | None:
    # One "_" (the CIDR's "/"), and something on both sides of it.
    address, sep, length = level.partition("_")
    return f"{address}/{length}" if sep and address and length and "_" not in length else None


def parse_overlay_key(key: str) -> OverlayKey | None:
    """The OverlayKey of a definition, member or peer key (either layout); None for anything
    else (a VNI claim, a key with levels missing or extra, empty levels)."""
    if not key.startswith(overlay_all()):
        return None
    parts = key[len(overlay_all()):].split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    if parts[0] == "nets" and len(parts) >= 4:
        subnet = _subnet(parts[2])
        if subnet is None:
            return None
        rest = parts[3:]
        if rest == ["def"]:
            return OverlayKey(DEF, parts[1], subnet)
        if len(rest) == 2 and rest[0] == "members":
            return OverlayKey(LEGACY_MEMBER, parts[1], subnet, rest[1])
        if len(rest) == 3 and rest[0] == "peers":
            return OverlayKey(LEGACY_PEER, parts[1], subnet, rest[1], rest[2])
        return None
    if parts[0] == "hosts" and len(parts) >= 5:
        host, what, space, subnet = parts[1], parts[2], parts[3], _subnet(parts[4])
        if subnet is None:
            return None
        if what == "members" and len(parts) == 5:
            return OverlayKey(MEMBER, space, subnet, host)
        if what == "peers" and len(parts) == 6:
            return OverlayKey(PEER, space, subnet, host, parts[5])
    return None


def overlay_wireguard(host: str) -> str:
    """`host`'s WireGuard record (encrypted overlays): under its own prefix, written by it alone."""
    return overlay_host(host) + "wireguard"


def wireguard_host_of(key: str) -> str | None:
    """The host whose WireGuard record `key` is, or None when it is not one."""
    if not key.startswith(overlay_hosts()) or not key.endswith("/wireguard"):
        return None
    host = key[len(overlay_hosts()):-len("/wireguard")]
    return host if host and "/" not in host and host not in (".", "..") else None


def overlay_tunnels() -> str:
    return f"{VERSION}/overlay/tunnels/"


def overlay_tunnel(address: str) -> str:
    """The claim of a WireGuard tunnel address: create-if-absent, so no two hosts hold one."""
    return overlay_tunnels() + address


def overlay_vnis() -> str:
    return f"{VERSION}/overlay/vnis/"


def overlay_vni(vni: int) -> str:
    return f"{overlay_vnis()}{vni}"


def overlay_alive_all() -> str:
    return f"{VERSION}/overlay-alive/"


def overlay_alive(host: str) -> str:
    return overlay_alive_all() + host


def names_all() -> str:
    """The prefix every host's DNS name watcher watches: every host's name records."""
    return f"{VERSION}/names/"


def names_hosts() -> str:
    return f"{VERSION}/names/hosts/"


def names_host(host: str) -> str:
    """The prefix only `host` writes its containers' names under (its per-host ACL)."""
    return f"{names_hosts()}{host}/"


def name_record(host: str, eid: str) -> str:
    """The names of endpoint `eid` (a container on a pynet network) of `host`."""
    return names_host(host) + eid


def parse_name_key(key: str) -> tuple[str, str] | None:
    """(host, endpoint id) of a name_record key; None for any other shape."""
    if not key.startswith(names_hosts()):
        return None
    parts = key[len(names_hosts()):].split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
        return None
    return parts[0], parts[1]
