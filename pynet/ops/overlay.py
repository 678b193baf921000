"""`pynet overlay rotate-key`: a new WireGuard key pair for this host's encrypted overlays,
made by the running plugin (which holds the link) and asked over its plugin socket
(--socket), as dockerd asks it. The private key never leaves the plugin's state directory;
the answer names the new public key and the previous one."""
from __future__ import annotations

import http.client
import json
import socket

from .context import CannotLook, Context
from .render import OK

METHOD = "Pynet.RotateWireGuardKey"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call_plugin(path: str, method: str, body: dict, timeout: float = 30.0) -> tuple[int, dict]:
    """POST /METHOD to the plugin's Unix socket: (status, the JSON answer)."""
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("POST", f"/{method}", json.dumps(body), {"Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read()
    except OSError as exc:
        raise CannotLook(f"the pynet plugin does not answer on {path}: {exc.strerror or exc}") from None
    finally:
        conn.close()
    try:
        answer = json.loads(data or b"{}")
    except ValueError:
        raise CannotLook(f"the pynet plugin on {path} answered something that is not JSON") from None
    return reply.status, answer if isinstance(answer, dict) else {}


def rotate_key(ctx: Context, args) -> int:
    status, answer = call_plugin(ctx.settings.socket, METHOD, {})
    if status != 200:
        raise CannotLook(f"the plugin refused to rotate the key: {answer.get('Err') or status}")
    if ctx.out.as_json:
        ctx.out.json(answer)
        return OK
    where = ("set on the WireGuard link and published; peers re-handshake at their next sync"
             if answer.get("Link") else "kept for the next encrypted overlay (no WireGuard link now)")
    ctx.out.line(f"WireGuard key rotated: public key {answer.get('PublicKey')} "
                 f"(was {answer.get('Previous') or 'none published'}), {where}")
    return OK
