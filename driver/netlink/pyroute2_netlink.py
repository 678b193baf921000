"""The only module that imports pyroute2."""
from __future__ import annotations

import errno
import os
import ipaddress
import logging
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import flags as ND_FLAGS
from pyroute2.netlink.rtnl.ndmsg import states as NUD

from pynet_core.errors import PynetError

from .api import (FLOOD_MAC, FdbEntry, FoundLink, Interface, KernelError, Link, LinkExists, Neighbour,
                  NoSuchLink, NoSuchNamespace, NotSupported, PeerEntries, Vxlan)

log = logging.getLogger(__name__)

_MAIN_TABLE = 254
_NETNS_DIR = "/run/netns"
# txqueuelen of the bridges and veths pynet makes: 0, as Docker's bridge driver sets. Both
# kinds are IFF_NO_QUEUE devices (noqueue qdisc) either way; 0 keeps them like Docker's if a
# qdisc is ever attached, and makes the two drivers' links compare equal.
NO_QUEUE = 0
IFA_F_NODAD = 0x02  # linux/if_addr.h


class Pyroute2Netlink:
    """Netlink through pyroute2. A fresh IPRoute per operation: sockets are cheap, and
    sharing one between gunicorn threads would interleave replies. A session() shares one
    socket between the calls of one thread (a batch of peers: one helper forked, not one
    per entry)."""

    def __init__(self, netns: str | None = None, shared: IPRoute | None = None) -> None:
        # netns is for tests: run the whole driver against a throwaway namespace.
        self._netns = netns
        self._shared = shared

    @contextmanager
    def _ipr(self) -> Iterator[IPRoute]:
        """The socket of one call (or of the session); a refusal no method turned into a
        named error leaves as KernelError, never as pyroute2's own exception."""
        try:
            with self._open() as ipr:
                yield ipr
        except NetlinkError as exc:
            raise _kernel(exc, "a netlink request") from None

    def _open(self):
        if self._shared is not None:
            return nullcontext(self._shared)  # the session closes it, not each call
        if not self._netns:
            return IPRoute()
        try:
            # flags=0: never create a namespace that is missing (pyroute2 defaults to O_CREAT).
            return IPRoute(netns=self._netns, flags=0)
        except OSError as exc:
            # Gone since it was listed (ENOENT), or listed before it was mounted (EINVAL:
            # another thread is creating it: pyroute2 makes the file, then mounts on it).
            error = NoSuchNamespace if exc.errno in (errno.ENOENT, errno.EINVAL) else KernelError
            raise error(f"cannot enter network namespace {self._netns}: {exc}") from None

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
        msg = _get_link(ipr, name)
        if msg is None:
            return None
        names = {}
        # (_to_link ignores the lower end of a link whose lower end is in another namespace.)
        own_lower = msg.get("IFLA_LINK_NETNSID") is None
        for attr in ("IFLA_MASTER", "IFLA_LINK") if own_lower else ("IFLA_MASTER",):
            idx = msg.get(attr)
            if idx:
                names[idx] = _name_of(ipr, idx)
        return _to_link(msg, names)

    def routes(self):
        with self._ipr() as ipr:
            found = []
            for family in (2, 10):
                for msg in ipr.route("dump", family=family):
                    if _table(msg) != _MAIN_TABLE or msg["dst_len"] == 0:
                        continue
                    dst = msg.get("RTA_DST")
                    if dst:
                        found.append(ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False))
            return found

    # --- bridges and ports -------------------------------------------------------------
    def ensure_bridge(self, name: str, mtu: int | None, addresses: list[Interface]) -> bool:
        with self._ipr() as ipr:
            created = False
            existing = self._link(ipr, name)
            if existing is None:
                try:
                    ipr.link("add", ifname=name, kind="bridge", txqlen=NO_QUEUE)
                    created = True
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise _kernel(exc, f"creating bridge {name}")
                existing = self._link(ipr, name)
            if existing is None or existing.kind != "bridge":
                kind = existing.kind if existing else "gone"
                raise LinkExists(f"interface {name} exists and is not a bridge (it is {kind}); "
                                 "choose another bridge name")
            idx = ipr.link_lookup(ifname=name)[0]
            if mtu is not None:
                ipr.link("set", index=idx, mtu=mtu)
            # Each gateway added, one already there answered EEXIST: no dump of the host's
            # addresses (pyroute2 filters a dump in Python, which made every CreateNetwork
            # grow with the number of bridges on the host, issue 22).
            for iface in addresses:
                # IPv6: no duplicate address detection (the IPAM made the gateway unique),
                # else the gateway is unusable ("tentative") for a second after each start.
                extra = {"flags": IFA_F_NODAD} if iface.version == 6 else {}
                try:
                    ipr.addr("add", index=idx, address=str(iface.ip),
                             prefixlen=iface.network.prefixlen, **extra)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise _kernel(exc, f"adding {iface} to {name}")
            ipr.link("set", index=idx, state="up")
            return created

    def found_link(self, name: str) -> FoundLink | None:
        with self._ipr() as ipr:
            msg = _get_link(ipr, name)
            if msg is None:
                return None
            inet = msg.get_nested("IFLA_AF_SPEC", "AF_INET") or {}
            # Not IPv6 link-local ones: the kernel's own, which come and go with the carrier.
            addresses = tuple(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                              for a in ipr.get_addr(index=msg["index"])
                              if not _ipv6_link_local(a.get("IFA_ADDRESS")))
            return FoundLink(mtu=msg.get("IFLA_MTU"), up=bool(msg["flags"] & 1),
                             addresses=addresses, route_localnet=bool(inet.get("route_localnet")))

    def put_back(self, name: str, found: FoundLink, remove: list[Interface]) -> None:
        with self._ipr() as ipr:
            msg = _get_link(ipr, name)
            if msg is None:
                return
            idx = msg["index"]
            for iface in remove:
                try:
                    ipr.addr("del", index=idx, address=str(iface.ip),
                             prefixlen=iface.network.prefixlen)
                except NetlinkError as exc:
                    if exc.code != errno.EADDRNOTAVAIL:  # already gone
                        raise _kernel(exc, f"removing {iface} from {name}")
            if msg.get("IFLA_MTU") != found.mtu:
                ipr.link("set", index=idx, mtu=found.mtu)
            if not found.up and msg["flags"] & 1:
                ipr.link("set", index=idx, state="down")

    def set_bridge_netfilter(self, name: str, on: bool) -> None:
        value = 1 if on else 0
        with self._ipr() as ipr:
            try:
                ipr.link("set", index=_index(ipr, name), kind="bridge", br_nf_call_iptables=value,
                         br_nf_call_ip6tables=value, br_nf_call_arptables=value)
            except NetlinkError as exc:
                raise _kernel(exc, f"setting nf_call_iptables={value} on bridge {name}")

    def bridge_netfilter(self, name: str) -> bool | None:
        with self._ipr() as ipr:
            msg = _get_link(ipr, name)
            if msg is None or msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "bridge":
                return None
            value = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_BR_NF_CALL_IPTABLES")
            return None if value is None else bool(value)

    def add_veth(self, host: str, peer: str, mtu: int, master: str, peer_mac: str | None,
                 netns: str | None = None) -> None:
        if netns is not None:
            return self._add_veth_into(host, peer, mtu, master, peer_mac, netns)
        with self._ipr() as ipr:
            master_idx = _index(ipr, master)
            try:
                ipr.link("add", ifname=host, kind="veth", mtu=mtu, txqlen=NO_QUEUE,
                         peer={"ifname": peer, "mtu": mtu, "txqlen": NO_QUEUE,
                               **({"address": peer_mac} if peer_mac else {})})
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise LinkExists(f"interface {host} or {peer} already exists") from None
                raise _kernel(exc, f"creating veth pair {host}/{peer}")
            try:
                ipr.link("set", index=_index(ipr, host), master=master_idx, state="up")
            except NetlinkError as exc:
                ipr.link("del", ifname=host)
                raise _kernel(exc, f"attaching {host} to bridge {master}")

    def _add_veth_into(self, host: str, peer: str, mtu: int, master: str,
                       peer_mac: str | None, netns: str) -> None:
        """The pair made here with its `host` end created right inside `netns` (the kernel
        does both in one request), then that end put on `master` there."""
        inside = self.within(netns)
        if inside.link(master) is None:
            raise NoSuchLink(f"bridge {master} does not exist in namespace {netns}")
        with self._ipr() as ipr:
            spec = {"ifname": peer, "kind": "veth", "mtu": mtu, "txqlen": NO_QUEUE,
                    "peer": {"ifname": host, "mtu": mtu, "txqlen": NO_QUEUE,
                             "net_ns_fd": _netns_path(netns)}}
            if peer_mac:
                spec["address"] = peer_mac
            try:
                ipr.link("add", **spec)
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise LinkExists(f"interface {host} or {peer} already exists") from None
                raise _kernel(exc, f"creating veth pair {host}/{peer} into {netns}")
        try:
            inside.ensure_port(host, master)
        except PynetError:
            self.remove_link(peer)
            raise

    def ensure_port(self, name: str, master: str) -> None:
        with self._ipr() as ipr:
            index, master_index = _index(ipr, name), _index(ipr, master)
            try:
                ipr.link("set", index=index, master=master_index, state="up")
            except NetlinkError as exc:
                raise _kernel(exc, f"making {name} an up port of {master}") from None

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
                if exc.code == errno.EEXIST:
                    raise LinkExists(f"interface {name} already exists") from None
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
                    raise LinkExists(f"interface {name} already exists") from None
                raise _kernel(exc, f"creating VLAN {vlan_id} sub-interface {name} on {base}")
            try:
                ipr.link("set", index=_index(ipr, name), state="up")
            except NetlinkError as exc:
                ipr.link("del", ifname=name)
                raise _kernel(exc, f"bringing up {name}")

    # --- the underlay ------------------------------------------------------------------
    def local_addresses(self) -> list[tuple[str, Interface]]:
        with self._ipr() as ipr:
            names = {m["index"]: m.get("IFLA_IFNAME") for m in ipr.link("dump")}
            return [(names.get(a["index"], "?"), ipaddress.ip_interface(
                f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}")) for a in ipr.get_addr()]

    def default_route_links(self) -> list[str]:
        with self._ipr() as ipr:
            names = {m["index"]: m.get("IFLA_IFNAME") for m in ipr.link("dump")}
            return [names[m.get("RTA_OIF")] for m in ipr.route("dump", family=socket.AF_INET)
                    if _table(m) == _MAIN_TABLE and m["dst_len"] == 0 and m.get("RTA_OIF") in names]

    # --- namespaces --------------------------------------------------------------------
    def ensure_netns(self, name: str) -> bool:
        if name in pr_netns.listnetns():
            return False
        # A fresh root filesystem (the managed plugin's) may lack the directory of the
        # namespace files; pyroute2 expects it.
        os.makedirs(pr_netns.NETNS_RUN_DIR, exist_ok=True)
        return self._netns_op(pr_netns.create, name, errno.EEXIST, "create")

    def remove_netns(self, name: str) -> bool:
        return self._netns_op(pr_netns.remove, name, errno.ENOENT, "remove") \
            if name in pr_netns.listnetns() else False

    @staticmethod
    def _netns_op(op, name: str, raced: int, doing: str) -> bool:
        try:
            op(name)
            return True
        except OSError as exc:
            if exc.errno == raced:  # another caller got there first
                return False
            raise KernelError(f"cannot {doing} network namespace {name}: {exc}") from None

    def within(self, netns: str) -> "Pyroute2Netlink":
        if netns not in pr_netns.listnetns():
            raise NoSuchNamespace(f"network namespace {netns} does not exist")
        return Pyroute2Netlink(netns)

    @contextmanager
    def session(self) -> Iterator["Pyroute2Netlink"]:
        if self._shared is not None:
            yield self
            return
        with self._ipr() as ipr:
            yield Pyroute2Netlink(self._netns, shared=ipr)

    # --- VXLAN -------------------------------------------------------------------------
    def add_vxlan(self, name: str, vni: int, local: str, port: int, mtu: int, master: str,
                  netns: str | None = None) -> None:
        target = self.within(netns) if netns else self
        if target.link(master) is None:
            raise NoSuchLink(f"bridge {master} does not exist" + (f" in namespace {netns}" if netns else ""))
        with self._ipr() as ipr:
            try:
                # No group and learning off: remote MACs are only ever what pynet programs,
                # never learnt from whoever sends to UDP 4789. No VXLAN proxy: it would drop
                # every ARP request it cannot answer (see neigh_suppress below instead).
                ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local,
                         vxlan_port=port, vxlan_learning=0, vxlan_proxy=0, mtu=mtu)
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise LinkExists(f"cannot create VXLAN device {name}: the name exists, or "
                                   f"another VXLAN device on this host already carries VNI "
                                   f"{vni} on UDP port {port}") from None
                raise _kernel(exc, f"creating VXLAN device {name} (VNI {vni})")
            if netns:
                try:
                    # The UDP socket stays in this namespace, on the underlay.
                    ipr.link("set", index=_index(ipr, name), net_ns_fd=_netns_path(netns))
                except NetlinkError as exc:
                    ipr.link("del", ifname=name)
                    if exc.code == errno.EEXIST:
                        raise LinkExists(f"cannot create VXLAN device {name}: the name exists "
                                         f"in namespace {netns}") from None
                    raise _kernel(exc, f"moving VXLAN device {name} into {netns}")
        try:
            target.ensure_port(name, master)
            # ARP suppression (EVPN's): a request for an address the bridge has a neighbour
            # entry for is answered by the bridge and not sent out of this port; any other
            # request still floods out of it, to every remote VTEP.
            with target._ipr() as ipr:
                try:
                    ipr.brport("set", index=_index(ipr, name), neigh_suppress=1)
                except NetlinkError as exc:
                    raise _kernel(exc, f"turning on neighbour suppression on {name}") from None
        except PynetError:
            target.remove_link(name)
            raise

    def vxlan(self, name: str) -> Vxlan | None:
        with self._ipr() as ipr:
            link = self._link(ipr, name)
            if link is None or link.kind != "vxlan":
                return None
            data = ipr.link("get", ifname=name)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
            port = ipr.brport("show", index=_index(ipr, name))
            suppress = bool(port and port[0].get_nested("IFLA_PROTINFO", "IFLA_BRPORT_NEIGH_SUPPRESS"))
            return Vxlan(name, data.get("IFLA_VXLAN_ID"), data.get("IFLA_VXLAN_LOCAL"),
                         data.get("IFLA_VXLAN_PORT"), bool(data.get("IFLA_VXLAN_LEARNING")),
                         suppress, link.mtu, link.master)

    # --- peers on a VXLAN device -------------------------------------------------------
    def fdb_entries(self, dev: str) -> list[FdbEntry]:
        with self._ipr() as ipr:
            return sorted(self._fdb(ipr, _index(ipr, dev), whole=False))

    def ensure_fdb(self, dev: str, mac: str, dst: str) -> None:
        with self._ipr() as ipr:
            idx = _index(ipr, dev)
            if mac == FLOOD_MAC:
                # One entry per remote VTEP under the all-zero MAC: head-end replication.
                if FdbEntry(mac, dst) in self._fdb(ipr, idx):
                    return
                command, extra = "append", {}
            else:
                command = "replace"
                extra = {"state": NUD["permanent"] | NUD["noarp"], "flags": ND_FLAGS["self"]}
            try:
                ipr.fdb(command, ifindex=idx, lladdr=mac, dst=dst, **extra)
                if mac != FLOOD_MAC:
                    # The bridge's own static entry for the MAC, on this port: unicast goes
                    # straight here (no flood), and neighbour suppression can answer ARP for
                    # it (it answers only for MACs behind a suppressing port).
                    ipr.fdb("replace", ifindex=idx, lladdr=mac, state=NUD["noarp"],
                            flags=ND_FLAGS["master"])
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise _kernel(exc, f"adding FDB entry {mac} -> {dst} on {dev}")

    def _fdb(self, ipr: IPRoute, idx: int, whole: bool = True) -> set[FdbEntry]:
        """The device's remote entries. Unless `whole`, a unicast one counts only with the
        bridge's entry beside it (ensure_fdb makes both), so a half-made pair is made again."""
        msgs = [m for m in ipr.fdb("dump") if m["ifindex"] == idx]
        bridged = {m.get("NDA_LLADDR") for m in msgs if m.get("NDA_MASTER") and not m.get("NDA_DST")}
        return {FdbEntry(m.get("NDA_LLADDR"), m.get("NDA_DST")) for m in msgs if m.get("NDA_DST") and
                (whole or m.get("NDA_LLADDR") == FLOOD_MAC or m.get("NDA_LLADDR") in bridged)}

    def remove_fdb(self, dev: str, mac: str, dst: str) -> bool:
        with self._ipr() as ipr:
            idx = _index(ipr, dev)
            # The kernel answers a delete of an absent remote with success: look first.
            if FdbEntry(mac, dst) not in self._fdb(ipr, idx):
                return False
            try:
                ipr.fdb("del", ifindex=idx, lladdr=mac, dst=dst)
                if mac != FLOOD_MAC:
                    self._remove_bridge_entry(ipr, idx, mac)
                return True
            except NetlinkError as exc:
                if exc.code in (errno.ENOENT, errno.ENODEV):
                    return False
                raise _kernel(exc, f"removing FDB entry {mac} -> {dst} on {dev}")

    def _remove_bridge_entry(self, ipr: IPRoute, idx: int, mac: str) -> None:
        try:
            ipr.fdb("del", ifindex=idx, lladdr=mac, state=NUD["noarp"], flags=ND_FLAGS["master"])
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ENODEV):
                raise _kernel(exc, f"removing the bridge's FDB entry {mac}")

    def neighbours(self, dev: str) -> list[Neighbour]:
        with self._ipr() as ipr:
            return self._neighbours(ipr, _index(ipr, dev))

    @staticmethod
    def _neighbours(ipr: IPRoute, idx: int) -> list[Neighbour]:
        return sorted(Neighbour(m.get("NDA_DST"), m.get("NDA_LLADDR"))
                      for m in ipr.neigh("dump", ifindex=idx, family=socket.AF_INET)
                      if m["ifindex"] == idx and m["state"] & NUD["permanent"])

    def ensure_neighbour(self, dev: str, ip: str, mac: str) -> None:
        with self._ipr() as ipr:
            try:
                ipr.neigh("replace", ifindex=_index(ipr, dev), dst=ip, lladdr=mac,
                          state=NUD["permanent"], family=socket.AF_INET)
            except NetlinkError as exc:
                raise _kernel(exc, f"adding neighbour {ip} at {mac} on {dev}")

    def remove_neighbour(self, dev: str, ip: str) -> bool:
        with self._ipr() as ipr:
            try:
                ipr.neigh("del", ifindex=_index(ipr, dev), dst=ip, family=socket.AF_INET)
            except NetlinkError as exc:
                if exc.code not in (errno.ENOENT, errno.ENODEV):
                    raise _kernel(exc, f"removing neighbour {ip} on {dev}")
                return False
            return True

    # --- peers in bulk -----------------------------------------------------------------
    def peer_entries(self, dev: str, bridge: str) -> PeerEntries:
        with self._ipr() as ipr:
            idx, bridge_idx = _index(ipr, dev), _index(ipr, bridge)
            return PeerEntries(sorted(self._fdb(ipr, idx, whole=False)), self._neighbours(ipr, bridge_idx))

    def change_peers(self, dev: str, bridge: str, *, fdb_remove: Iterable[FdbEntry] = (),
                     neigh_remove: Iterable[Neighbour] = (), fdb_add: Iterable[FdbEntry] = (),
                     neigh_add: Iterable[Neighbour] = ()) -> list[str]:
        failed: list[str] = []
        with self._ipr() as ipr:
            idx, bridge_idx = _index(ipr, dev), _index(ipr, bridge)

            def each(entries, doing, call, gone_ok: bool) -> None:
                for entry in entries:
                    try:
                        call(entry)
                    except NetlinkError as exc:
                        if gone_ok and exc.code in (errno.ENOENT, errno.ENODEV):
                            continue  # already gone: what was asked
                        failed.append(_kernel(exc, doing(entry)).message)

            each(fdb_remove, lambda e: f"removing FDB entry {e.mac} -> {e.dst} on {dev}",
                 lambda e: self._del_fdb(ipr, idx, e), gone_ok=True)
            each(neigh_remove, lambda n: f"removing neighbour {n.ip} on {bridge}",
                 lambda n: ipr.neigh("del", ifindex=bridge_idx, dst=n.ip, family=socket.AF_INET),
                 gone_ok=True)
            each(fdb_add, lambda e: f"adding FDB entry {e.mac} -> {e.dst} on {dev}",
                 lambda e: self._add_fdb(ipr, idx, e), gone_ok=False)
            each(neigh_add, lambda n: f"adding neighbour {n.ip} at {n.mac} on {bridge}",
                 lambda n: ipr.neigh("replace", ifindex=bridge_idx, dst=n.ip, lladdr=n.mac,
                                     state=NUD["permanent"], family=socket.AF_INET),
                 gone_ok=False)
        return failed

    @staticmethod
    def _del_fdb(ipr: IPRoute, idx: int, entry: FdbEntry) -> None:
        """The remote entry, and for a unicast MAC the bridge's entry beside it. Both in one
        request (the bridge ignores the VTEP; the kernel stops at the first that is
        missing), then one by one when one of the pair is gone already (half made)."""
        gone = (errno.ENOENT, errno.ENODEV)
        if entry.mac != FLOOD_MAC:
            try:
                ipr.fdb("del", ifindex=idx, lladdr=entry.mac, dst=entry.dst, state=NUD["noarp"],
                        flags=ND_FLAGS["self"] | ND_FLAGS["master"])
                return
            except NetlinkError as exc:
                if exc.code not in gone:
                    raise
        calls = [{"dst": entry.dst}]
        if entry.mac != FLOOD_MAC:
            calls.append({"state": NUD["noarp"], "flags": ND_FLAGS["master"]})
        for extra in calls:
            try:
                ipr.fdb("del", ifindex=idx, lladdr=entry.mac, **extra)
            except NetlinkError as exc:
                if exc.code not in gone:
                    raise

    @staticmethod
    def _add_fdb(ipr: IPRoute, idx: int, entry: FdbEntry) -> None:
        if entry.mac == FLOOD_MAC:
            try:
                ipr.fdb("append", ifindex=idx, lladdr=entry.mac, dst=entry.dst)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            return
        ipr.fdb("replace", ifindex=idx, lladdr=entry.mac, dst=entry.dst,
                state=NUD["permanent"] | NUD["noarp"], flags=ND_FLAGS["self"])
        ipr.fdb("replace", ifindex=idx, lladdr=entry.mac, state=NUD["noarp"], flags=ND_FLAGS["master"])

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


def _ipv6_link_local(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.version == 6 and ip.is_link_local


def _netns_path(name: str) -> str:
    return f"{_NETNS_DIR}/{name}"


def _table(msg) -> int:
    return msg.get("RTA_TABLE", msg["table"])


def _get_link(ipr: IPRoute, name: str):
    """The kernel's message for link NAME, or None when there is no such link."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NoSuchLink(f"interface {name} does not exist on this host")
    return found[0]


def _name_of(ipr: IPRoute, index: int) -> str | None:
    try:
        return ipr.link("get", index=index)[0].get("IFLA_IFNAME")
    except NetlinkError:
        return None


def _to_link(msg, names: dict) -> Link:
    # A link whose lower end is in another namespace (a veth with its peer moved away)
    # names an index of that namespace: not one of ours.
    lower = msg.get("IFLA_LINK") if msg.get("IFLA_LINK_NETNSID") is None else None
    return Link(
        name=msg.get("IFLA_IFNAME"),
        kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
        up=bool(msg["flags"] & 1),
        mtu=msg.get("IFLA_MTU"),
        master=names.get(msg.get("IFLA_MASTER")),
        parent=names.get(lower) if lower != msg["index"] else None,
        mac=msg.get("IFLA_ADDRESS"),
        loopback=bool(msg["flags"] & 0x8),  # IFF_LOOPBACK
    )


def _kernel(exc: NetlinkError, doing: str) -> KernelError:
    return KernelError(f"kernel refused {doing}: {exc.args[1] if len(exc.args) > 1 else exc} "
                       f"(errno {exc.code})")
