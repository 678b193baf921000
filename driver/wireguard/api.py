"""The WireGuard port: one WireGuard link per host, whatever carries it (kernel or wireguard-go).

Pure: values, validation and the Protocol; the adapters are userspace.py and kernel.py.

    links.ensure(name, private_key, listen_port, mtu, address)   create or re-adopt, then configure
    links.set_peers(name, peers)     the whole peer set, in one operation (kept peers keep sessions)
    links.status(name)               peers with last handshake, rx/tx; None when there is no link
    links.remove(name)               no link, no process, no socket afterwards

A private key never appears in a message, a repr or a log line: PrivateKey hides itself, and
parse errors about private keys do not quote the value.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import (IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface,
                       IPv6Network, ip_address, ip_network)
from typing import Protocol

from pynet_core.errors import BackendUnavailable, BadRequest, NotFound, PynetError

KEY_LEN = 32
DEFAULT_PORT = 51820
# WireGuard over IPv4 costs 60 bytes (20 IP + 8 UDP + 32 WireGuard); over IPv6 80.
OVERHEAD_IPV4 = 60
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_INDEX = {c: i for i, c in enumerate(_B64)}
# 32 bytes are 43 base64 digits and one '='; the last digit carries 4 bits, its low 2 are 0.
_B64_KEY = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
_HEX_KEY = re.compile(r"[0-9a-f]{64}")
_LINK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")


class WireGuardError(PynetError):
    """Base of this package's errors (500 unless a subclass says otherwise)."""


class BadKey(BadRequest):
    """A key that is not the base64 (or hex) of exactly 32 bytes. A private key's text is never
    quoted in the message."""


class BadWireGuardConfig(BadRequest):
    """A link name, port, MTU, peer or address that WireGuard cannot take."""


class WireGuardUnavailable(BackendUnavailable):
    """wireguard-go, wg or the UAPI socket could not be used (missing, not answering in time,
    died at start)."""


class UapiProtocolError(BackendUnavailable):
    """The UAPI socket answered something that is not the protocol (malformed, too long)."""


class UapiErrno(WireGuardError):
    """The UAPI answered errno=N (N != 0): the operation was refused. wireguard-go answers
    negative errnos (-22: EINVAL) and may have applied the lines before the refused one."""

    def __init__(self, operation: str, errno: int):
        super().__init__(f"WireGuard UAPI {operation} refused with errno={errno}")
        self.errno = errno


class LinkNotFound(NotFound):
    """No WireGuard link of that name is managed or present."""


class KeyFileError(WireGuardError):
    """The host's key file is unusable (wrong mode or owner, not a regular file, not a key).
    The message names the path and the reason, never the file's content."""


def _decode_b64_key(text: str) -> bytes:
    bits = 0
    nbits = 0
    out = bytearray()
    for char in text[:43]:
        bits = (bits << 6) | _B64_INDEX[char]
        nbits += 6
        if nbits >= 8:
            nbits -= 8
            out.append((bits >> nbits) & 0xFF)
    return bytes(out)


def _encode_b64_key(raw: bytes) -> str:
    digits = []
    bits = 0
    nbits = 0
    for byte in raw:
        bits = (bits << 8) | byte
        nbits += 8
        while nbits >= 6:
            nbits -= 6
            digits.append(_B64[(bits >> nbits) & 0x3F])
    digits.append(_B64[(bits << (6 - nbits)) & 0x3F])
    return "".join(digits) + "="


def _key_bytes(text: object, what: str, secret: bool) -> bytes:
    shown = "" if secret else f" (got {text!r:.60})"
    if not isinstance(text, str):
        raise BadKey(f"{what} must be a string{'' if secret else shown}")
    if _B64_KEY.fullmatch(text):
        raw = _decode_b64_key(text)
    elif _HEX_KEY.fullmatch(text):
        raw = bytes.fromhex(text)
    else:
        raise BadKey(f"{what} must be 32 bytes in canonical base64 (44 characters ending in '=') "
                     f"or 64 lowercase hex digits{shown}")
    if raw == bytes(KEY_LEN):
        raise BadKey(f"{what} is all zeros{shown}")
    return raw


@dataclass(frozen=True, slots=True)
class PublicKey:
    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != KEY_LEN or self.raw == bytes(KEY_LEN):
            raise BadKey("a public key is 32 bytes, not all zero")

    @classmethod
    def parse(cls, text: object, what: str = "public key") -> "PublicKey":
        """Strict: canonical base64 of 32 bytes (what other hosts' records carry) or 64 lowercase
        hex digits (what the UAPI speaks)."""
        return cls(_key_bytes(text, what, secret=False))

    @property
    def base64(self) -> str:
        return _encode_b64_key(self.raw)

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.base64

    def __repr__(self) -> str:
        return f"PublicKey({self.base64})"


@dataclass(frozen=True, slots=True)
class PrivateKey:
    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != KEY_LEN or self.raw == bytes(KEY_LEN):
            raise BadKey("a private key is 32 bytes, not all zero")

    @classmethod
    def parse(cls, text: object, what: str = "private key") -> "PrivateKey":
        return cls(_key_bytes(text, what, secret=True))

    def reveal_base64(self) -> str:
        """The key's text, for the key file and `wg pubkey` only."""
        return _encode_b64_key(self.raw)

    def reveal_hex(self) -> str:
        """The key's text, for the UAPI only."""
        return self.raw.hex()

    def __str__(self) -> str:
        return "PrivateKey(<hidden>)"

    __repr__ = __str__


def check_link_name(name: object) -> str:
    if not isinstance(name, str) or not _LINK_NAME.fullmatch(name) or name in (".", ".."):
        raise BadWireGuardConfig(f"a WireGuard link name is 1 to 15 letters, digits, '_', '.' or "
                                 f"'-' (not starting with '.' or '-'), got {name!r:.40}")
    return name


def check_port(port: object, what: str = "listen port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadWireGuardConfig(f"the WireGuard {what} must be 1..65535, got {port!r:.40}")
    return port


def check_mtu(mtu: object) -> int:
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not 576 <= mtu <= 65535:
        raise BadWireGuardConfig(f"the WireGuard link MTU must be 576..65535, got {mtu!r:.40}")
    return mtu


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: IPv4Address | IPv6Address
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.ip, (IPv4Address, IPv6Address)):
            raise BadWireGuardConfig(f"an endpoint's address must be an IP address, got {self.ip!r:.60}")
        if self.ip.is_unspecified or self.ip.is_multicast:
            raise BadWireGuardConfig(f"an endpoint's address must be a unicast address, got {self.ip}")
        check_port(self.port, "endpoint port")

    @classmethod
    def parse(cls, text: object) -> "Endpoint":
        """'192.0.2.1:51820' or '[2001:db8::1]:51820'."""
        if not isinstance(text, str):
            raise BadWireGuardConfig(f"an endpoint is 'ip:port', got {text!r:.60}")
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([0-9.]+):([0-9]{1,5})", text)
        if not match:
            raise BadWireGuardConfig(f"an endpoint is 'ip:port' or '[ipv6]:port', got {text!r:.60}")
        host = match.group(1) or match.group(3)
        port = int(match.group(2) or match.group(4))
        try:
            ip = ip_address(host)
        except ValueError:
            raise BadWireGuardConfig(f"an endpoint's address is not an IP address: {text!r:.60}") from None
        if (match.group(1) is None) != (ip.version == 4):
            raise BadWireGuardConfig(f"an IPv6 endpoint is written '[ip]:port', got {text!r:.60}")
        return cls(ip, port)

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


Network = IPv4Network | IPv6Network


def parse_allowed_ip(text: object) -> Network:
    if not isinstance(text, str):
        raise BadWireGuardConfig(f"an allowed IP is a CIDR, got {text!r:.60}")
    try:
        return ip_network(text, strict=True)
    except ValueError as exc:
        raise BadWireGuardConfig(f"an allowed IP must be a CIDR with no host bits, got {text!r:.60}: "
                                 f"{exc}") from None


@dataclass(frozen=True, slots=True)
class Peer:
    """One peer as pynet wants it: who (public key), where (endpoint), for which addresses."""
    public_key: PublicKey
    endpoint: Endpoint | None
    allowed_ips: tuple[Network, ...]
    keepalive: int = 0          # persistent keepalive interval in seconds, 0 = off

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, PublicKey):
            raise BadWireGuardConfig("a peer's public_key must be a PublicKey")
        if self.endpoint is not None and not isinstance(self.endpoint, Endpoint):
            raise BadWireGuardConfig("a peer's endpoint must be an Endpoint or None")
        if not isinstance(self.allowed_ips, tuple) or not all(
                isinstance(n, (IPv4Network, IPv6Network)) for n in self.allowed_ips):
            raise BadWireGuardConfig("a peer's allowed_ips must be a tuple of networks")
        if isinstance(self.keepalive, bool) or not isinstance(self.keepalive, int) \
                or not 0 <= self.keepalive <= 65535:
            raise BadWireGuardConfig(f"a peer's keepalive must be 0..65535 s, got {self.keepalive!r:.40}")


def check_peers(peers: object) -> tuple[Peer, ...]:
    """A peer set: Peers, each public key once, each allowed IP with one peer only (WireGuard
    would silently move it to the last peer naming it)."""
    if isinstance(peers, (str, bytes)) or not hasattr(peers, "__iter__"):
        raise BadWireGuardConfig("peers must be a collection of Peer")
    found = tuple(peers)  # type: ignore[arg-type]
    keys: set[PublicKey] = set()
    owners: dict[Network, PublicKey] = {}
    for peer in found:
        if not isinstance(peer, Peer):
            raise BadWireGuardConfig(f"peers must be Peer values, got {type(peer).__name__}")
        if peer.public_key in keys:
            raise BadWireGuardConfig(f"peer {peer.public_key} is listed twice")
        keys.add(peer.public_key)
        for net in peer.allowed_ips:
            if net in owners:
                raise BadWireGuardConfig(f"allowed IP {net} is given to two peers: {owners[net]} and "
                                         f"{peer.public_key}")
            owners[net] = peer.public_key
    return found


def check_address(address: object) -> IPv4Interface | IPv6Interface | None:
    if address is not None and not isinstance(address, (IPv4Interface, IPv6Interface)):
        raise BadWireGuardConfig(f"the link's address must be an IP interface (CIDR), got {address!r:.60}")
    return address


def check_ensure(name: object, private_key: object, listen_port: object, mtu: object,
                 address: object) -> None:
    """The arguments of WireGuardLinks.ensure(), checked alike by every implementation
    before anything is made."""
    check_link_name(name)
    if not isinstance(private_key, PrivateKey):
        raise BadKey("ensure() needs the private key as a PrivateKey")
    check_port(listen_port)
    check_mtu(mtu)
    check_address(address)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    public_key: PublicKey
    endpoint: Endpoint | None
    allowed_ips: tuple[Network, ...]
    keepalive: int
    last_handshake: float | None    # seconds since the epoch; None: never
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True, slots=True)
class LinkStatus:
    name: str
    implementation: str             # "userspace" or "kernel"
    listen_port: int | None
    peers: tuple[PeerStatus, ...]
    pid: int | None = None          # wireguard-go's process (userspace only)
    restarts: int = 0               # times the supervisor restarted it (userspace only)

    def peer(self, key: PublicKey) -> PeerStatus | None:
        return next((p for p in self.peers if p.public_key == key), None)


class WireGuardLinks(Protocol):
    implementation: str

    def ensure(self, name: str, private_key: PrivateKey, listen_port: int, mtu: int,
               address: IPv4Interface | IPv6Interface | None = None) -> bool:
        """Create the link (or re-adopt the one a previous plugin process left) and configure
        key, port, MTU, address and up. True when it was created now. Safe to repeat."""
        ...

    def set_peers(self, name: str, peers: tuple[Peer, ...]) -> None:
        """Make the peer set exactly `peers` in one operation: peers kept keep their sessions,
        peers not listed are removed. LinkNotFound when ensure() was not called."""
        ...

    def status(self, name: str) -> LinkStatus | None: ...

    def remove(self, name: str) -> bool:
        """No link, no process, no UAPI socket afterwards. True when something was removed."""
        ...

    def close(self) -> None:
        """Stop watching (the plugin is stopping); links and processes are left running."""
        ...
