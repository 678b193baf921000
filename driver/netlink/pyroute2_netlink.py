"""The only module that imports pyroute2."""
from __future__ import annotations

import errno
import ipaddress
import logging

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pynet.errors import BadRequest, Conflict, PynetError

from .api import Interface, Link, NotSupported

log = logging.getLogger(__name__)

_MAIN_TABLE = 254


class KernelError(PynetError):
    status = 500


class Pyroute2Netlink:
    """Netlink through pyroute2. A fresh IPRoute per operation: sockets are cheap, and
    sharing one between gunicorn threads would interleave replies."""

    def __init__(self, netns: str | None = None) -> None:
        # netns is for tests: run the whole driver against a throwaway namespace.
        self._netns = netns

    def _ipr(self) -> IPRoute:
        # flags=0: never create a namespace that is missing (pyroute2 defaults to O_CREAT).
        return IPRoute(netns=self._netns, flags=0) if self._netns else IPRoute()

    # --- reading ---------------------------------------------------------------------
    def links(self) -> list[Link]:
        with self._ipr() as ipr:
            msgs = ipr.link("dump")
            names = {m["index"]: m.get("ifname") for m in msgs}
            return [_to_link(m, names) for m in msgs]

    def link(self, name: str) -> Link | None:
        with self._ipr() as ipr:
            return self._link(ipr, name)

    def _link(self, ipr: IPRoute, name: str) -> Link | None:
        try:
            msg = ipr.link("get", ifname=name)[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise
        names = {}
        for attr in ("IFLA_MASTER", "IFLA_LINK"):
            idx = msg.get(attr)
            if idx:
                names[idx] = _name_of(ipr, idx)
        return _to_link(msg, names)

    def routes(self):
        with self._ipr() as ipr:
            found = []
            for family in (2, 10):
                for msg in ipr.route("dump", family=family):
                    if msg.get("RTA_TABLE", msg["table"]) != _MAIN_TABLE or msg["dst_len"] == 0:
                        continue
                    dst = msg.get("RTA_DST")
                    if dst:
                        found.append(ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False))
            return found

    # --- bridges and ports -------------------------------------------------------------
    def ensure_bridge(self, name: str, mtu: int, addresses: list[Interface]) -> bool:
        with self._ipr() as ipr:
            created = False
            existing = self._link(ipr, name)
            if existing is None:
                try:
                    ipr.link("add", ifname=name, kind="bridge")
                    created = True
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise _kernel(exc, f"creating bridge {name}")
                existing = self._link(ipr, name)
            if existing is None or existing.kind != "bridge":
                kind = existing.kind if existing else "gone"
                raise Conflict(f"interface {name} exists and is not a bridge (it is {kind}); "
                               "choose another bridge name")
            idx = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=idx, mtu=mtu)
            have = {(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx)}
            for iface in addresses:
                if (str(iface.ip), iface.network.prefixlen) in have:
                    continue
                try:
                    ipr.addr("add", index=idx, address=str(iface.ip),
                             prefixlen=iface.network.prefixlen)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise _kernel(exc, f"adding {iface} to {name}")
            ipr.link("set", index=idx, state="up")
            return created

    def add_veth(self, host: str, peer: str, mtu: int, master: str, peer_mac: str | None) -> None:
        with self._ipr() as ipr:
            master_idx = _index(ipr, master)
            try:
                ipr.link("add", ifname=host, kind="veth", mtu=mtu,
                         peer={"ifname": peer, "mtu": mtu, **({"address": peer_mac} if peer_mac else {})})
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise Conflict(f"interface {host} or {peer} already exists") from None
                raise _kernel(exc, f"creating veth pair {host}/{peer}")
            try:
                ipr.link("set", index=_index(ipr, host), master=master_idx, state="up")
            except NetlinkError as exc:
                ipr.link("del", ifname=host)
                raise _kernel(exc, f"attaching {host} to bridge {master}")

    def ensure_port(self, name: str, master: str) -> None:
        with self._ipr() as ipr:
            ipr.link("set", index=_index(ipr, name), master=_index(ipr, master), state="up")

    # --- macvlan -----------------------------------------------------------------------
    def add_macvlan(self, name: str, parent: str, mode: str, mtu: int, mac: str | None) -> None:
        with self._ipr() as ipr:
            spec = {"ifname": name, "kind": "macvlan", "link": _index(ipr, parent),
                    "macvlan_mode": mode, "mtu": mtu}
            if mac:
                spec["address"] = mac
            try:
                ipr.link("add", **spec)
            except NetlinkError as exc:
                raise _kernel(exc, f"creating macvlan {name} on {parent} (mode {mode})")

    def add_vlan(self, name: str, base: str, vlan_id: int) -> None:
        with self._ipr() as ipr:
            try:
                ipr.link("add", ifname=name, kind="vlan", link=_index(ipr, base), vlan_id=vlan_id)
            except NetlinkError as exc:
                if exc.code == errno.EOPNOTSUPP:  # `ip link add ... type vlan`: "Unknown device type"
                    raise NotSupported(
                        f"this kernel has no 802.1q VLAN support (8021q), so VLAN sub-interface "
                        f"{name} cannot be created on {base}") from None
                if exc.code == errno.EEXIST:
                    raise Conflict(f"interface {name} already exists") from None
                raise _kernel(exc, f"creating VLAN {vlan_id} sub-interface {name} on {base}")
            try:
                ipr.link("set", index=_index(ipr, name), state="up")
            except NetlinkError as exc:
                ipr.link("del", ifname=name)
                raise _kernel(exc, f"bringing up {name}")

    # --- removal -----------------------------------------------------------------------
    def remove_link(self, name: str) -> bool:
        with self._ipr() as ipr:
            try:
                ipr.link("del", ifname=name)
                return True
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return False
                raise _kernel(exc, f"deleting {name}")


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise BadRequest(f"interface {name} does not exist on this host")
    return found[0]


def _name_of(ipr: IPRoute, index: int) -> str | None:
    try:
        return ipr.link("get", index=index)[0].get("IFLA_IFNAME")
    except NetlinkError:
        return None


def _to_link(msg, names: dict) -> Link:
    return Link(
        name=msg.get("IFLA_IFNAME"),
        kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
        up=bool(msg["flags"] & 1),
        mtu=msg.get("IFLA_MTU"),
        master=names.get(msg.get("IFLA_MASTER")),
        parent=names.get(msg.get("IFLA_LINK")) if msg.get("IFLA_LINK") != msg["index"] else None,
        mac=msg.get("IFLA_ADDRESS"),
        loopback=bool(msg["flags"] & 0x8),  # IFF_LOOPBACK
    )


def _kernel(exc: NetlinkError, doing: str) -> KernelError:
    return KernelError(f"kernel refused {doing}: {exc.args[1] if len(exc.args) > 1 else exc} "
                       f"(errno {exc.code})")
