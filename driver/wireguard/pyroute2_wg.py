"""The only module of driver/wireguard that imports pyroute2 (tests/unit/test_layering.py).

LinkOps: what the WireGuard adapters need of rtnetlink on their own link (exists, MTU, one
address, up, delete, create kind=wireguard), optionally inside a named network namespace
(tests run wireguard-go in namespaces they make). driver/netlink's port has no "configure an
existing link" operation, and this package must not change it while it is owned elsewhere:
folding these calls into it is a wiring-time decision (docs/wireguard-notes.md).

KernelGenl: the kernel module's generic netlink family through pyroute2.WireGuard, translated
to plain values. Not exercised on a real kernel here (this kernel has no wireguard module).
"""
from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface

from pyroute2 import IPRoute, WireGuard
from pyroute2.netlink.exceptions import NetlinkError

from .api import WireGuardUnavailable

ENODEV = 19
EEXIST = 17


class LinkOps:
    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _ipr(self) -> IPRoute:
        return IPRoute(netns=self.netns) if self.netns else IPRoute()

    def _index(self, ipr: IPRoute, name: str) -> int | None:
        found = ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def exists(self, name: str) -> bool:
        with self._ipr() as ipr:
            return self._index(ipr, name) is not None

    def create_wireguard(self, name: str) -> bool:
        with self._ipr() as ipr:
            if self._index(ipr, name) is not None:
                return False
            try:
                ipr.link("add", ifname=name, kind="wireguard")
            except NetlinkError as exc:
                if exc.code == EEXIST:
                    return False
                raise WireGuardUnavailable(f"cannot create WireGuard link {name} in the kernel: "
                                           f"{exc.args[-1] if exc.args else exc}") from None
            return True

    def configure(self, name: str, mtu: int, address: IPv4Interface | IPv6Interface | None) -> None:
        """MTU, exactly this one address (when given), then up."""
        with self._ipr() as ipr:
            index = self._index(ipr, name)
            if index is None:
                raise WireGuardUnavailable(f"WireGuard link {name} vanished while being configured")
            ipr.link("set", index=index, mtu=mtu)
            if address is not None:
                family = 4 if isinstance(address, IPv4Interface) else 6
                have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                        for a in ipr.get_addr(index=index, family=2 if family == 4 else 10)}
                want = (str(address.ip), address.network.prefixlen)
                for addr, plen in have - {want}:
                    if family == 6 and addr.startswith("fe80:"):
                        continue
                    ipr.addr("del", index=index, address=addr, prefixlen=plen)
                if want not in have:
                    ipr.addr("add", index=index, address=want[0], prefixlen=want[1])
            ipr.link("set", index=index, state="up")

    def delete(self, name: str) -> bool:
        with self._ipr() as ipr:
            index = self._index(ipr, name)
            if index is None:
                return False
            try:
                ipr.link("del", index=index)
            except NetlinkError as exc:
                if exc.code == ENODEV:
                    return False
                raise
            return True


class KernelGenl:
    """WireGuard's generic netlink family (host namespace only)."""

    def _wg(self) -> WireGuard:
        return WireGuard()

    def info(self, name: str) -> dict:
        """{"listen_port": int|None, "peers": [{"public_key": b64, "endpoint": "ip:port"|None,
        "allowed_ips": [cidr], "handshake": (sec, nsec), "rx": int, "tx": int, "keepalive": int}]}"""
        peers = []
        listen_port = None
        with self._wg() as wg:
            for msg in wg.info(name):
                listen_port = msg.get_attr("WGDEVICE_A_LISTEN_PORT", listen_port)
                for peer in msg.get_attr("WGDEVICE_A_PEERS") or ():
                    endpoint = peer.get_attr("WGPEER_A_ENDPOINT")
                    handshake = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
                    addr = endpoint["addr"] if endpoint else None
                    peers.append({
                        "public_key": peer.get_attr("WGPEER_A_PUBLIC_KEY")["value"].decode("ascii"),
                        "endpoint": None if not endpoint else
                        (f"[{addr}]:{endpoint['port']}" if ":" in addr else f"{addr}:{endpoint['port']}"),
                        "allowed_ips": [a["addr"] for a in peer.get_attr("WGPEER_A_ALLOWEDIPS") or ()],
                        "handshake": (handshake["tv_sec"], handshake["tv_nsec"]) if handshake else (0, 0),
                        "rx": peer.get_attr("WGPEER_A_RX_BYTES") or 0,
                        "tx": peer.get_attr("WGPEER_A_TX_BYTES") or 0,
                        "keepalive": peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0,
                    })
        return {"listen_port": listen_port, "peers": peers}

    def set_device(self, name: str, private_key_b64: str, listen_port: int) -> None:
        with self._wg() as wg:
            wg.set(name, private_key=private_key_b64, listen_port=listen_port)

    def set_peer(self, name: str, peer: dict) -> None:
        with self._wg() as wg:
            wg.set(name, peer=peer)
