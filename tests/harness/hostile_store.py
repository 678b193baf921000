"""What the hostile-store tests share: the store keys of issue 17's host-owned layout,
spelled out literally (a test must not follow pynet_core/store/keys.py if that drifts from the
decided layout), and raw writes into Consul that bypass pynet entirely (a hostile writer
does not go through pynet's code).

    keys relative to the store prefix ("pynet/"):
      v1/overlay/hosts/<host>/members/<space>/<subnet_>
      v1/overlay/hosts/<host>/peers/<space>/<subnet_>/<eid>
      v1/overlay-alive/<host>
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

PREFIX = "pynet/"


def _cidr(subnet: str) -> str:
    return subnet.replace("/", "_")


def member_key(host: str, space: str, subnet: str) -> str:
    return f"v1/overlay/hosts/{host}/members/{space}/{_cidr(subnet)}"


def peer_key(host: str, space: str, subnet: str, eid: str) -> str:
    return f"v1/overlay/hosts/{host}/peers/{space}/{_cidr(subnet)}/{eid}"


def old_member_key(host: str, space: str, subnet: str) -> str:
    """Where a member record was before issue 17 (under the shared prefix: any host's token
    may write there, so a reader must ignore it)."""
    return f"v1/overlay/nets/{space}/{_cidr(subnet)}/members/{host}"


def old_peer_key(host: str, space: str, subnet: str, eid: str) -> str:
    return f"v1/overlay/nets/{space}/{_cidr(subnet)}/peers/{host}/{eid}"


def def_key(space: str, subnet: str) -> str:
    return f"v1/overlay/nets/{space}/{_cidr(subnet)}/def"


def alive_key(host: str) -> str:
    return f"v1/overlay-alive/{host}"


def addr_key(space: str, pool: str, ip: str) -> str:
    return f"v1/ipam/addrs/{space}/{_cidr(pool)}/{ip}"


class RawConsul:
    """Consul's KV HTTP API, by hand: exact status codes, bytes as they are (non-UTF-8,
    non-JSON), no retries. `addr` is host:port; keys are relative to `prefix`."""

    def __init__(self, addr: str, token: str | None = None, prefix: str = PREFIX) -> None:
        self.addr = addr
        self.token = token
        self.prefix = prefix

    def request(self, method: str, path: str, data: bytes | None = None,
                timeout: float = 10.0) -> tuple[int, bytes]:
        headers = {"X-Consul-Token": self.token} if self.token else {}
        req = urllib.request.Request(f"http://{self.addr}{path}", data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def put(self, key: str, value: bytes | str | Any) -> tuple[int, bytes]:
        """PUT one key: bytes and str as they are, anything else as JSON."""
        if isinstance(value, str):
            data = value.encode()
        elif isinstance(value, bytes):
            data = value
        else:
            data = json.dumps(value).encode()
        return self.request("PUT", f"/v1/kv/{self.prefix}{key}", data)

    def delete(self, key: str, recurse: bool = False) -> tuple[int, bytes]:
        return self.request("DELETE", f"/v1/kv/{self.prefix}{key}" + ("?recurse=true" if recurse else ""))

    def get(self, key: str) -> bytes | None:
        status, body = self.request("GET", f"/v1/kv/{self.prefix}{key}")
        if status == 404:
            return None
        assert status == 200, (key, status, body)
        value = json.loads(body)[0]["Value"]
        return base64.b64decode(value) if value is not None else b""

    def get_json(self, key: str) -> Any:
        raw = self.get(key)
        return None if raw is None else json.loads(raw)

    def keys(self, prefix: str = "") -> list[str]:
        status, body = self.request("GET", f"/v1/kv/{self.prefix}{prefix}?keys=true")
        if status == 404:
            return []
        assert status == 200, (prefix, status, body)
        return sorted(k[len(self.prefix):] for k in json.loads(body))

    def txn(self, ops: list[dict]) -> tuple[int, bytes]:
        return self.request("PUT", "/v1/txn", json.dumps(ops).encode())

    def acl(self, path: str, body: dict) -> dict:
        status, raw = self.request("PUT", f"/v1/acl/{path}", json.dumps(body).encode())
        assert status == 200, (path, status, raw)
        return json.loads(raw)
