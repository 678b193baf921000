"""A client of WireGuard's cross-platform UAPI: the text protocol wireguard-go serves on the
Unix stream socket /var/run/wireguard/<name>.sock (www.wireguard.com/xplatform).

    request:  "get=1\\n\\n"                       reply: key=value lines, then "errno=0\\n\\n"
    request:  "set=1\\n" key=value lines "\\n"     reply: "errno=N\\n\\n" (0: done)

Keys travel as 64 lowercase hex digits. In a get reply the device's keys (private_key,
listen_port, fwmark) come first; each `public_key=` starts a peer, followed by its keys
(endpoint, allowed_ip (repeated), last_handshake_time_sec/nsec, rx_bytes, tx_bytes,
persistent_keepalive_interval, preshared_key, protocol_version). A set is applied line by line:
wireguard-go refuses the first bad line with a negative errno (-22 for EINVAL) and keeps what
the lines before it did.

Strict: a reply that is not ASCII key=value lines ending in one errno line, that repeats a
key, puts a device key after a peer, carries a value that does not parse, is longer than
`max_reply` bytes, or does not end within `timeout` seconds, raises UapiProtocolError (or
WireGuardUnavailable for the timeout) and is never half-used. Keys this client does not know
are skipped (newer wireguard-go versions add some), their syntax still checked.
One connection per operation; no shell anywhere.
"""
from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pynet_core.errors import BadRequest

from .api import (BadWireGuardConfig, Endpoint, Network, Peer, PeerStatus, PrivateKey, PublicKey,
                  UapiErrno, UapiProtocolError, WireGuardUnavailable, parse_allowed_ip)

RUN_DIR = Path("/var/run/wireguard")
_LINE = re.compile(r"([a-z_]{1,64})=([\x21-\x7e]{0,256})")
_UINT = re.compile(r"0|[1-9][0-9]{0,19}")
_ERRNO = re.compile(r"errno=(0|-?[1-9][0-9]{0,9})")
_DEVICE_KEYS = {"private_key", "listen_port", "fwmark"}
_PEER_KEYS = {"preshared_key", "protocol_version", "endpoint", "last_handshake_time_sec",
              "last_handshake_time_nsec", "tx_bytes", "rx_bytes", "persistent_keepalive_interval",
              "allowed_ip"}
_U64 = 2 ** 64 - 1


def socket_path(name: str, run_dir: Path = RUN_DIR) -> Path:
    return run_dir / f"{name}.sock"


@dataclass(frozen=True, slots=True)
class UapiDevice:
    private_key: PrivateKey | None
    listen_port: int | None
    fwmark: int | None
    peers: tuple[PeerStatus, ...]


def _uint(key: str, value: str, limit: int = _U64) -> int:
    if not _UINT.fullmatch(value) or int(value) > limit:
        raise UapiProtocolError(f"WireGuard UAPI reply: {key}={value!r:.40} is not a number up to {limit}")
    return int(value)


class _PeerBuilder:
    def __init__(self, key: PublicKey) -> None:
        self.key = key
        self.seen: set[str] = set()
        self.endpoint: Endpoint | None = None
        self.allowed: list[Network] = []
        self.sec = 0
        self.nsec = 0
        self.rx = 0
        self.tx = 0
        self.keepalive = 0

    def add(self, key: str, value: str) -> None:
        if key != "allowed_ip":
            if key in self.seen:
                raise UapiProtocolError(f"WireGuard UAPI reply: {key} twice for peer {self.key}")
            self.seen.add(key)
        try:
            if key == "endpoint":
                self.endpoint = Endpoint.parse(value)
            elif key == "allowed_ip":
                self.allowed.append(parse_allowed_ip(value))
            elif key == "last_handshake_time_sec":
                self.sec = _uint(key, value)
            elif key == "last_handshake_time_nsec":
                self.nsec = _uint(key, value, 999_999_999)
            elif key == "rx_bytes":
                self.rx = _uint(key, value)
            elif key == "tx_bytes":
                self.tx = _uint(key, value)
            elif key == "persistent_keepalive_interval":
                self.keepalive = _uint(key, value, 65535)
            elif key == "protocol_version":
                _uint(key, value, 2 ** 32 - 1)
            elif key == "preshared_key":
                if not re.fullmatch(r"[0-9a-f]{64}", value):
                    raise UapiProtocolError("WireGuard UAPI reply: preshared_key is not 64 hex digits")
        except BadRequest as exc:
            raise UapiProtocolError(f"WireGuard UAPI reply: {key}: {exc.message}") from None

    def build(self) -> PeerStatus:
        handshake = None if self.sec == 0 and self.nsec == 0 else self.sec + self.nsec / 1e9
        return PeerStatus(self.key, self.endpoint, tuple(self.allowed), self.keepalive, handshake,
                          self.rx, self.tx)


def parse_get_reply(text: str) -> UapiDevice:
    """The lines of a get reply, without the final errno line (checked by the caller)."""
    device: dict[str, object] = {}
    peers: list[_PeerBuilder] = []
    seen_keys: set[PublicKey] = set()
    for line in text.split("\n"):
        match = _LINE.fullmatch(line)
        if not match:
            raise UapiProtocolError(f"WireGuard UAPI reply: malformed line {line!r:.60}")
        key, value = match.groups()
        if key == "public_key":
            try:
                public = PublicKey.parse(value, "peer public_key")
            except BadRequest as exc:
                raise UapiProtocolError(f"WireGuard UAPI reply: {exc.message}") from None
            if public in seen_keys:
                raise UapiProtocolError(f"WireGuard UAPI reply: peer {public} listed twice")
            seen_keys.add(public)
            peers.append(_PeerBuilder(public))
        elif key in _DEVICE_KEYS:
            if peers:
                raise UapiProtocolError(f"WireGuard UAPI reply: device key {key} after a peer")
            if key in device:
                raise UapiProtocolError(f"WireGuard UAPI reply: {key} twice")
            if key == "private_key":
                if not re.fullmatch(r"[0-9a-f]{64}", value):
                    raise UapiProtocolError("WireGuard UAPI reply: private_key is not 64 hex digits")
                device[key] = PrivateKey(bytes.fromhex(value)) if value != "0" * 64 else None
            elif key == "listen_port":
                device[key] = _uint(key, value, 65535)
            else:
                device[key] = _uint(key, value, 2 ** 32 - 1)
        elif key in _PEER_KEYS:
            if not peers:
                raise UapiProtocolError(f"WireGuard UAPI reply: peer key {key} before any public_key")
            peers[-1].add(key, value)
        # else: a key this client does not know (a newer wireguard-go): skipped, syntax checked.
    return UapiDevice(device.get("private_key"), device.get("listen_port"),  # type: ignore[arg-type]
                      device.get("fwmark"), tuple(p.build() for p in peers))  # type: ignore[arg-type]


def device_lines(private_key: PrivateKey | None = None, listen_port: int | None = None) -> list[tuple[str, str]]:
    lines = []
    if private_key is not None:
        lines.append(("private_key", private_key.reveal_hex()))
    if listen_port is not None:
        lines.append(("listen_port", str(listen_port)))
    return lines


def peer_lines(peer: Peer) -> list[tuple[str, str]]:
    """Create or update `peer` to exactly this: its allowed IPs replace the old ones."""
    lines = [("public_key", peer.public_key.hex)]
    if peer.endpoint is not None:
        lines.append(("endpoint", str(peer.endpoint)))
    lines.append(("persistent_keepalive_interval", str(peer.keepalive)))
    lines.append(("replace_allowed_ips", "true"))
    lines += [("allowed_ip", str(net)) for net in peer.allowed_ips]
    return lines


def remove_peer_lines(key: PublicKey) -> list[tuple[str, str]]:
    return [("public_key", key.hex), ("remove", "true")]


def peer_set_lines(current: Sequence[PublicKey], wanted: Sequence[Peer]) -> list[tuple[str, str]]:
    """One set operation that leaves exactly `wanted`: removals first, then creates/updates.
    Not replace_peers=true: that drops every peer and with it every session (a new handshake
    for peers that did not change)."""
    keep = {p.public_key for p in wanted}
    lines: list[tuple[str, str]] = []
    for key in current:
        if key not in keep:
            lines += remove_peer_lines(key)
    for peer in wanted:
        lines += peer_lines(peer)
    return lines


class UapiClient:
    def __init__(self, path: str | Path, timeout: float = 2.0, max_reply: int = 4 << 20) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.max_reply = max_reply

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except socket.timeout:
            sock.close()
            raise WireGuardUnavailable(f"the WireGuard UAPI socket {self.path} did not accept "
                                       f"within {self.timeout:g} s") from None
        except OSError as exc:
            sock.close()
            raise WireGuardUnavailable(f"no WireGuard UAPI at {self.path}: {exc.strerror or exc}") from None
        return sock

    def _exchange(self, request: bytes, operation: str) -> str:
        deadline = time.monotonic() + self.timeout
        sock = self._connect()
        try:
            sock.sendall(request)
            buf = bytearray()
            while True:
                end = buf.find(b"\n\n")
                if end >= 0:
                    if end + 2 != len(buf):
                        raise UapiProtocolError(f"WireGuard UAPI {operation}: bytes after the end of the reply")
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    raise UapiProtocolError(f"WireGuard UAPI {operation}: the socket closed before "
                                            f"the reply ended ({len(buf)} bytes)")
                buf += chunk
                if len(buf) > self.max_reply:
                    raise UapiProtocolError(f"WireGuard UAPI {operation}: reply longer than "
                                            f"{self.max_reply} bytes")
        except socket.timeout:
            raise WireGuardUnavailable(f"the WireGuard UAPI {self.path} did not answer {operation} "
                                       f"within {self.timeout:g} s") from None
        except OSError as exc:
            raise WireGuardUnavailable(f"the WireGuard UAPI {self.path} failed during {operation}: "
                                       f"{exc.strerror or exc}") from None
        finally:
            sock.close()
        try:
            text = bytes(buf[:-2]).decode("ascii")
        except UnicodeDecodeError:
            raise UapiProtocolError(f"WireGuard UAPI {operation}: reply is not ASCII") from None
        lines = text.split("\n")
        match = _ERRNO.fullmatch(lines[-1])
        if not match:
            raise UapiProtocolError(f"WireGuard UAPI {operation}: reply does not end with errno=N "
                                    f"(last line {lines[-1]!r:.60})")
        errno = int(match.group(1))
        if errno != 0:
            raise UapiErrno(operation, errno)
        return "\n".join(lines[:-1])

    def get(self) -> UapiDevice:
        body = self._exchange(b"get=1\n\n", "get")
        return parse_get_reply(body) if body else UapiDevice(None, None, None, ())

    def set(self, lines: Sequence[tuple[str, str]]) -> None:
        out = ["set=1"]
        for key, value in lines:
            if not re.fullmatch(r"[a-z_]{1,64}", key) or not re.fullmatch(r"[\x21-\x7e]{1,256}", value):
                raise BadWireGuardConfig(f"not a UAPI line: key {key!r:.40}")
            out.append(f"{key}={value}")
        body = self._exchange(("\n".join(out) + "\n\n").encode("ascii"), "set")
        if body:
            raise UapiProtocolError("WireGuard UAPI set: reply has lines besides errno")

    def answers(self) -> bool:
        try:
            self.get()
        except (WireGuardUnavailable, UapiProtocolError, UapiErrno):
            return False
        return True

    def server_pid(self) -> int:
        """The PID of the process serving the socket (SO_PEERCRED), for re-adoption."""
        sock = self._connect()
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        finally:
            sock.close()
        pid, _uid, _gid = struct.unpack("3i", creds)
        if pid <= 0:
            raise WireGuardUnavailable(f"the WireGuard UAPI {self.path} has no peer process")
        return pid
