"""Seeded request generator for the fuzz tier: valid plugin calls, then mutated.

Everything here is pure: one `random.Random` decides every request, and no decision depends
on an answer, so a seed reproduces the exact request sequence (PoolIDs are predictable
because the fuzzer asks for explicit pools).

A request "names" a live object only when it does so in a way Docker would: the exact
NetworkID/EndpointID/PoolID strings, and an address that parses to a live one. Such
destructive requests (DeleteNetwork of the live network, ...) are never generated; every
other request, however close (a PoolID with a sub-range added, an ID sharing the live
one's first 12 characters), must leave the live objects as they were.
"""
from __future__ import annotations

import ipaddress
import json
import random
import string
from dataclasses import dataclass, field
from typing import Any, Callable

GENERIC = "com.docker.network.generic"
PORTMAP = "com.docker.network.portmap"
EXPOSED = "com.docker.network.endpoint.exposedports"
ENDPOINT_NAME = "com.docker.network.endpoint.name"
GATEWAY_OPTS = {"RequestAddressType": "com.docker.network.gateway"}
MAX_BODY = 1 << 20

# --- the live objects (made with valid calls before the run, checked after every call) ---
LIVE_NID = "a1" * 32
LIVE_EID = "e1" * 32
LIVE_POOL = "10.250.0.0/24"
# Replaced by the PoolID the live RequestPool answers (it names that request's hold); the
# old, hold-less spelling stays among the mutations.
LIVE_POOL_ID = f"LocalDefault/{LIVE_POOL}"
OLD_LIVE_POOL_ID = LIVE_POOL_ID
LIVE_GATEWAY = "10.250.0.1"
LIVE_ADDRESS = "10.250.0.2"
LIVE_ADDRESSES = frozenset({ipaddress.ip_address(LIVE_GATEWAY), ipaddress.ip_address(LIVE_ADDRESS)})

# --- the fuzzer's own vocabulary: small, so calls repeat and arrive out of order ---------
FUZZ_NIDS = [f"{c}" * 64 for c in "234567"]
FUZZ_EIDS = [f"c{c}" * 32 for c in "234567"]
# Valid IDs whose first 12 characters (what kernel names are made of) are the live ones'.
NID_TWINS = [LIVE_NID[:12] + "0" * 52, LIVE_NID[:12] + "b" * 52]
EID_TWINS = [LIVE_EID[:12] + "0" * 52, LIVE_EID[:12] + "f" * 52]
FUZZ_POOLS = [f"10.251.{i}.0/24" for i in range(6)]
FUZZ_POOLS_V6 = ["fd00:f0::/64", "fd00:f1::/64"]
SPACES = ["LocalDefault", "GlobalDefault"]

NETWORK_METHODS = ["NetworkDriver.GetCapabilities", "NetworkDriver.CreateNetwork",
                   "NetworkDriver.DeleteNetwork", "NetworkDriver.CreateEndpoint",
                   "NetworkDriver.DeleteEndpoint", "NetworkDriver.EndpointOperInfo",
                   "NetworkDriver.Join", "NetworkDriver.Leave",
                   "NetworkDriver.ProgramExternalConnectivity",
                   "NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.DiscoverNew",
                   "NetworkDriver.DiscoverDelete", "NetworkDriver.AllocateNetwork",
                   "NetworkDriver.FreeNetwork"]
IPAM_METHODS = ["IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces",
                "IpamDriver.RequestPool", "IpamDriver.ReleasePool", "IpamDriver.RequestAddress",
                "IpamDriver.ReleaseAddress"]
# Methods Docker may call that pynet does not implement: they must answer 404 with Err.
UNIMPLEMENTED = ["NetworkDriver.GwAllocCheck", "NetworkDriver.NoSuchMethod"]
METHODS = ["Plugin.Activate", *NETWORK_METHODS, *IPAM_METHODS]
EMPTY_BODY_METHODS = {"Plugin.Activate", "NetworkDriver.GetCapabilities",
                      "IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces"}


@dataclass
class Request:
    index: int
    method: str                     # the protocol method; the path is "/" + path_method
    body: bytes
    mutation: str                   # what was done to the valid body ("valid" if nothing)
    path: str = ""                  # the request path, "/" + method unless mutated
    http_method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    concurrent: int = 1             # sent this many times at once from as many threads

    def __post_init__(self) -> None:
        self.path = self.path or "/" + self.method

    def describe(self, limit: int = 600) -> str:
        body = self.body if len(self.body) <= limit else (
            self.body[:limit] + f"... ({len(self.body)} bytes)".encode())
        extra = []
        if self.http_method != "POST" or self.path != "/" + self.method:
            extra.append(f"{self.http_method} {self.path[:200]!r}")
        if self.headers:
            extra.append(f"headers={self.headers}")
        if self.chunked:
            extra.append("chunked")
        if self.concurrent > 1:
            extra.append(f"x{self.concurrent} concurrently")
        return (f"#{self.index} {self.method} [{self.mutation}] {' '.join(extra)} "
                f"body={body!r}").replace("  ", " ")


def _dump(obj: Any) -> bytes:
    # Go's encoding/json ends a body with a newline; ensure_ascii escapes lone surrogates.
    return (json.dumps(obj) + "\n").encode()


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.index = 0

    # ---- choices ---------------------------------------------------------------------
    def _nid(self) -> str:
        r = self.rng.random()
        if r < 0.2:
            return LIVE_NID
        if r < 0.3:
            return self.rng.choice(NID_TWINS)
        if r < 0.33:
            return LIVE_EID  # an endpoint's ID as a network's: names must not cross over
        return self.rng.choice(FUZZ_NIDS)

    def _eid(self) -> str:
        r = self.rng.random()
        if r < 0.2:
            return LIVE_EID
        if r < 0.3:
            return self.rng.choice(EID_TWINS)
        return self.rng.choice(FUZZ_EIDS)

    def _pool(self, v6: bool = False) -> str:
        if v6:
            return self.rng.choice(FUZZ_POOLS_V6)
        return LIVE_POOL if self.rng.random() < 0.2 else self.rng.choice(FUZZ_POOLS)

    def _pool_id(self) -> str:
        r = self.rng.random()
        if r < 0.22:
            return LIVE_POOL_ID
        if r < 0.25:
            return OLD_LIVE_POOL_ID
        if r < 0.35:
            return f"LocalDefault/{self.rng.choice(FUZZ_POOLS_V6)}"
        return f"{self.rng.choice(SPACES) if r < 0.45 else 'LocalDefault'}/{self.rng.choice(FUZZ_POOLS)}"

    def _host_in(self, pool: str) -> str:
        net = ipaddress.ip_network(pool.split("@", 1)[0])  # a PoolID's hold id is not the pool
        return str(net[self.rng.randrange(1, min(net.num_addresses - 1, 40))])

    def _generic(self) -> dict:
        r = self.rng.random()
        choices: list[Callable[[], dict]] = [
            lambda: {},
            lambda: {"mtu": str(self.rng.choice([1400, 1500, 9000]))},
            lambda: {"icc": self.rng.choice(["true", "false"])},
            lambda: {"masquerade": "false"},
            lambda: {"bridge_name": self.rng.choice(["fz0", "fz1", "pn-" + LIVE_NID[:12], "lo",
                                                     "pnv" + LIVE_EID[:12], "fz0.5"])},
            lambda: {"type": "macvlan"},
            lambda: {"type": "macvlan", "parent": self.rng.choice(
                ["fz0", "lo", "pn-" + LIVE_NID[:12], "fz0.7", "nosuch0"])},
            lambda: {"com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"},
            lambda: {"com.docker.network.container_iface_prefix": "fz"},
        ]
        return self.rng.choice(choices)() if r < 0.7 else {}

    def _portmap(self) -> list:
        port = self.rng.randrange(20000, 20100)
        entry = {"Proto": self.rng.choice([6, 17]), "IP": "", "Port": self.rng.choice([80, 53]),
                 "HostIP": self.rng.choice(["", "127.0.0.1"]), "HostPort": port,
                 "HostPortEnd": port}
        return [entry]

    # ---- valid bodies ----------------------------------------------------------------
    def valid(self, method: str) -> Any:
        rng = self.rng
        if method in EMPTY_BODY_METHODS:
            return None
        if method == "NetworkDriver.CreateNetwork":
            v6 = rng.random() < 0.15
            pool = self._pool()
            gw = str(ipaddress.ip_network(pool)[1]) + "/24"
            body = {"NetworkID": self._nid(),
                    "Options": {"com.docker.network.enable_ipv6": v6,
                                "com.docker.network.enable_ipv4": True,
                                GENERIC: self._generic()},
                    "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": gw,
                                  "AuxAddresses": {}}],
                    "IPv6Data": []}
            if v6:
                p6 = self._pool(v6=True)
                body["IPv6Data"] = [{"AddressSpace": "LocalDefault", "Pool": p6,
                                     "Gateway": str(ipaddress.ip_network(p6)[1]) + "/64"}]
            if rng.random() < 0.1:
                body["Options"]["com.docker.network.internal"] = True
            return body
        if method == "NetworkDriver.DeleteNetwork":
            return {"NetworkID": self._nid()}
        if method == "NetworkDriver.CreateEndpoint":
            pool = self._pool()
            body = {"NetworkID": self._nid(), "EndpointID": self._eid(),
                    "Interface": {"Address": self._host_in(pool) + "/24", "AddressIPv6": "",
                                  "MacAddress": ""},
                    "Options": {}}
            if rng.random() < 0.3:
                body["Interface"]["MacAddress"] = "02:42:0a:fa:%02x:%02x" % (rng.randrange(256),
                                                                            rng.randrange(256))
            if rng.random() < 0.2:
                body["Interface"]["AddressIPv6"] = "fd00:f0::%x/64" % rng.randrange(2, 999)
            if rng.random() < 0.3:
                body["Options"] = {EXPOSED: [{"Proto": 6, "Port": 80}], PORTMAP: self._portmap()}
            return body
        if method in ("NetworkDriver.DeleteEndpoint", "NetworkDriver.EndpointOperInfo",
                      "NetworkDriver.Leave", "NetworkDriver.RevokeExternalConnectivity"):
            return {"NetworkID": self._nid(), "EndpointID": self._eid()}
        if method == "NetworkDriver.Join":
            return {"NetworkID": self._nid(), "EndpointID": self._eid(),
                    "SandboxKey": "/var/run/docker/netns/" + "".join(
                        rng.choices("0123456789abcdef", k=12)),
                    "Options": rng.choice([{}, {PORTMAP: self._portmap(),
                                                EXPOSED: [{"Proto": 6, "Port": 80}]}])}
        if method == "NetworkDriver.ProgramExternalConnectivity":
            return {"NetworkID": self._nid(), "EndpointID": self._eid(),
                    "Options": {PORTMAP: self._portmap(), EXPOSED: [{"Proto": 6, "Port": 80}]}}
        if method in ("NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete"):
            return {"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.5",
                                                          "BindAddress": "10.0.0.5", "Self": True}}
        if method == "NetworkDriver.AllocateNetwork":  # what a Swarm manager sends
            return {"NetworkID": self._nid(),
                    "Options": {GENERIC: rng.choice([{}, {"type": "overlay"}, {"type": "bridge"}])},
                    "IPv4Data": [{"AddressSpace": "GlobalDefault", "Pool": "10.99.0.0/24",
                                  "Gateway": "10.99.0.1/24"}], "IPv6Data": []}
        if method in UNIMPLEMENTED or method == "NetworkDriver.FreeNetwork":
            return {"NetworkID": self._nid(), "Options": {}}
        if method == "IpamDriver.RequestPool":
            v6 = rng.random() < 0.2
            r = rng.random()
            pool = "" if r < 0.2 else self._pool(v6)
            sub = ""
            if pool and rng.random() < 0.2:
                sub = str(next(ipaddress.ip_network(pool).subnets(prefixlen_diff=1)))
            return {"AddressSpace": rng.choice(SPACES) if rng.random() < 0.2 else "LocalDefault",
                    "Pool": pool, "SubPool": sub, "Options": {}, "V6": v6}
        if method == "IpamDriver.ReleasePool":
            return {"PoolID": self._pool_id()}
        if method == "IpamDriver.RequestAddress":
            pid = self._pool_id()
            pool = pid.split("/", 1)[1]
            r = rng.random()
            if r < 0.4:
                return {"PoolID": pid, "Address": "",
                        "Options": {ENDPOINT_NAME: rng.choice(["fz-a", "fz-b", "fz-c"])}}
            if r < 0.6:
                return {"PoolID": pid, "Address": "", "Options": dict(GATEWAY_OPTS)}
            return {"PoolID": pid, "Address": self._host_in(pool), "Options": {}}
        if method == "IpamDriver.ReleaseAddress":
            pid = self._pool_id()
            return {"PoolID": pid, "Address": self._host_in(pid.split("/", 1)[1])}
        raise AssertionError(method)

    # ---- mutations -------------------------------------------------------------------
    def _weird_string(self) -> str:
        rng = self.rng
        return rng.choice([
            "", " ", "\n", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u202e" + LIVE_NID,
            "\u0661\u0660.250.0.2", "\uff11\uff10.250.0.2", "\U0001f600" * 3, "e\u0301",
            "\x1b[31mred", "../../etc/passwd", "a/b", "a\\b", "%s%n", "${jndi:x}",
            "null", "true", "0", "-1", "NaN", "\t" + LIVE_NID, LIVE_NID + "\n", LIVE_NID.upper(),
            LIVE_NID + " ", "x" * 129, "-", "_", "." * 15, LIVE_POOL_ID + "\n",
            "10.250.0.2\n2026-01-01 FORGED LOG LINE", "\u2028", "\ufeff" + LIVE_POOL_ID,
        ])

    def _weird_value(self) -> Any:
        rng = self.rng
        kind = rng.randrange(9)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind == 1:
            return rng.choice([0, -1, 1, 2 ** 31, -2 ** 31 - 1, 2 ** 63, 2 ** 64 + 1, 10 ** 40,
                               -10 ** 40, 65535, 65536, 6, 17, 132])
        if kind == 2:
            return rng.choice([0.5, -0.0, 1e308, -1e308, 6.0, 1e-320])
        if kind == 3:
            return rng.choice([[], [1], [""], [{}], [None], [[LIVE_NID]]])
        if kind == 4:
            return rng.choice([{}, {"a": 1}, {"": ""}, {"NetworkID": LIVE_NID}, {"\ud800": 1}])
        if kind == 5:
            return "x" * rng.choice([300, 5000, 70000, 400000])
        if kind == 6:
            nested: Any = "leaf"
            for _ in range(rng.choice([20, 100, 400])):
                nested = [nested] if rng.random() < 0.5 else {"k": nested}
            return nested
        return self._weird_string()

    def _string_mutation(self, value: str) -> str:
        rng = self.rng
        choice = rng.randrange(10)
        if choice == 0:
            return value + rng.choice(["\n", " ", "\x00", "/", "/x", "\ud800", "0", "a"])
        if choice == 1:
            return rng.choice([" ", "\n", "\t", "\ufeff"]) + value
        if choice == 2:
            return value.swapcase()
        if choice == 3:
            return value[: rng.randrange(len(value) + 1)]
        if choice == 4:
            return value * rng.choice([2, 3, 50])
        if choice == 5 and value:
            i = rng.randrange(len(value))
            return value[:i] + rng.choice(string.printable + "\u00e9\u0000\u200b") + value[i + 1:]
        if choice == 6:
            return value.replace(".", rng.choice([",", "..", "\u3002"]), 1)
        if choice == 7:
            return value.replace("/", rng.choice(["//", "_", "/0", "/ "]), 1)
        if choice == 8:
            return value[:12] + "".join(rng.choices("0123456789abcdef", k=max(0, len(value) - 12)))
        return self._weird_string()

    def _special(self, key: str, value: Any) -> Any:
        """Mutations that know what the field means."""
        rng = self.rng
        if key == "PoolID" and isinstance(value, str):
            return rng.choice([
                value + "/10.250.0.0/25", value + "/10.250.0.128/25", value + "/10.9.0.0/24",
                value + "/", "/" + value, value.replace("LocalDefault", "GlobalDefault"),
                value.replace("LocalDefault", "../LocalDefault"),
                value.replace("/24", "/23"), value.replace("/24", "/25"),
                value.replace("/24", "/024"), value.replace("/24", "/255.255.255.0"),
                value.replace("LocalDefault/", ""), value.replace(".0/", ".1/"),
                value + "/garbage", "LocalDefault/0.0.0.0/0", "LocalDefault/::/0",
                value.replace("10.250", "010.250"),
            ])
        if key in ("Address", "Gateway", "Pool", "SubPool", "AddressIPv6", "HostIP", "IP"):
            return rng.choice([
                "10.250.0.2", "10.250.0.2/24", "10.250.0.2/32", "10.250.0.1", "10.250.0.0",
                "10.250.0.255", "10.250.0.256", "10.250.0.2/33", "10.250.0.2/-1", "0.0.0.0/0",
                "0.0.0.0", "::/0", "::", "fd00:f0::2/64", "::ffff:10.250.0.2", "10.250.0.0/24",
                "10.250.0.0/16", "10.251.0.0/25", "224.0.0.1", "255.255.255.255/32",
                "127.0.0.1/8", "10.250.0.2 ", " 10.250.0.2", "10.250.0.2%eth0", "fe80::1%lo/64",
                "1.2.3", "1.2.3.4.5", "10.250.0.2/24/24", "",
            ])
        if key in ("NetworkID", "EndpointID") and isinstance(value, str):
            return rng.choice([*NID_TWINS, *EID_TWINS, LIVE_EID, LIVE_NID, value[:12], value[:11], value + "0",
                               "".join(rng.choices("0123456789abcdef", k=64)), "A" * 128,
                               "A" * 129, value.upper()])
        if key in ("Port", "HostPort", "HostPortEnd", "Proto"):
            return rng.choice([0, -1, 1, 65535, 65536, 2 ** 32, 132, 1, 6, 17, 0.5, "80", None])
        if key == GENERIC and isinstance(value, dict):
            bad = rng.choice([
                {"bridge_name": rng.choice(["br0\n", "x:y", "all", "a" * 16, "", "lo", "eth0"])},
                {"mtu": rng.choice(["0", "67", "65536", "-1", "1e3", "\uff11\uff15\uff10\uff10", " 1500 "])},
                {"type": rng.choice(["overlay", "ipvlan", "", "BRIDGE"])},
                {"type": "macvlan", "macvlan_mode": rng.choice(["passthru", "x", ""])},
                {"unknown.option": "1"}, {"bridge_name": 5}, {"mtu": None},
                {"com.docker.network.bridge.host_binding_ipv4": rng.choice(["::1", "x", ""])},
                {"icc": "maybe"}, {"bridge_name": "fz0", "com.docker.network.bridge.name": "fz1"},
                {"type": "macvlan", "parent": rng.choice(["pnv" + LIVE_EID[:12], "lo.4095",
                                                          "lo.0", "lo.4096", "a" * 15 + ".1"])},
            ])
            return bad
        if key == PORTMAP:
            return rng.choice([
                [{"Proto": 6, "Port": 80, "HostPort": 1, "HostPortEnd": 65535}],
                [{"Proto": 6, "Port": 80, "HostPort": 30000, "HostPortEnd": 31200}],
                [{"Proto": 6, "Port": 80, "HostPort": 8080}] * 50,
                [{"Proto": 132, "Port": 80}], [{"Proto": 6, "Port": 80, "HostIP": "::1"}],
                [{"Proto": 6, "Port": 80, "HostPort": 9000, "HostPortEnd": 8999}],
                {"Proto": 6}, "80:80", [None], [[6, 80]],
            ])
        return None

    def _paths(self, obj: Any, prefix: tuple = ()) -> list[tuple]:
        out: list[tuple] = []
        if len(prefix) > 8:  # inside a deeply nested value put there by an earlier mutation
            return out
        if isinstance(obj, dict):
            for k, v in obj.items():
                out.append(prefix + (k,))
                out.extend(self._paths(v, prefix + (k,)))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                out.append(prefix + (i,))
                out.extend(self._paths(v, prefix + (i,)))
        return out

    def _mutate_field(self, body: Any) -> tuple[Any, str]:
        rng = self.rng
        body = json.loads(json.dumps(body))  # a copy; copy.deepcopy recurses too deep
        paths = self._paths(body)
        if not paths:
            return body, "valid"
        path = rng.choice(paths)
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        old = parent[last]
        name = "/".join(str(p) for p in path)
        op = rng.randrange(8)
        if op == 0:
            if isinstance(parent, dict):
                del parent[last]
            else:
                parent.pop(last)
            return body, f"drop {name}"
        if op == 1 or op == 2:
            special = self._special(str(last), old)
            if special is not None:
                parent[last] = special
                return body, f"special {name}"
        if op == 3 and isinstance(old, str):
            parent[last] = self._string_mutation(old)
            return body, f"string {name}"
        if op == 4 and isinstance(parent, dict):
            parent[rng.choice(["", "x", "Err", "NetworkID", "__proto__", "\ud800", name.lower()])] = \
                self._weird_value()
            return body, f"extra key beside {name}"
        parent[last] = self._weird_value()
        return body, f"value {name}"

    def _raw(self, method: str, body: Any) -> tuple[bytes, str, dict]:
        """Body-level mutations: the bytes themselves."""
        rng = self.rng
        text = json.dumps(body if body is not None else {})
        op = rng.randrange(17)
        if op == 0:
            return b"", "empty body", {}
        if op == 1:
            return rng.choice([b" ", b"\n", b"\r\n\t "]), "whitespace body", {}
        if op == 2:
            cut = rng.randrange(1, max(2, len(text)))
            return text[:cut].encode(), "truncated JSON", {}
        if op == 3:
            return rng.choice([b"[]", b"1", b'"x"', b"true", b"null", b"[{}]", b"1e999",
                               b"-0", b'"\\ud800"']), "non-object JSON", {}
        if op == 4:
            n = rng.choice([100, 990, 1000, 5000, 100000])
            opener = rng.choice(["[", '{"a":', '{"NetworkID":['])
            closer = {"[": "]", '{"a":': "}", '{"NetworkID":[': "]"}[opener]
            tail = "}" if opener.startswith('{"NetworkID"') else ""
            return (opener * n + "1" + closer * n + tail).encode(), f"deep nesting {n}", {}
        if op == 5:
            return rng.choice([b"\xff\xfe\x00", b'{"NetworkID": "\xff"}', b"\xc0\xaf",
                               b'{"PoolID": "\xed\xa0\x80"}']), "invalid UTF-8", {}
        if op == 6:
            return (text[:-1] + ', "NetworkID": 5, "PoolID": [], "EndpointID": null}').encode() \
                if text.endswith("}") else b"{}", "duplicate keys", {}
        if op == 7:
            return ('{"DiscoveryType": ' + "9" * rng.choice([100, 4301, 20000]) + "}").encode(), \
                "huge integer literal", {}
        if op == 8:
            lit = rng.choice(["NaN", "Infinity", "-Infinity"])
            return text.replace('"', lit, 1).encode() if '"' in text else lit.encode(), \
                f"{lit} literal", {}
        if op == 9:
            return b"\xef\xbb\xbf" + text.encode(), "UTF-8 BOM", {}
        if op == 10:
            return text.encode() + rng.choice([b"x", b"}", b"{}", b"\x00", b"\n\n{}"]), \
                "trailing garbage", {}
        if op == 11:
            return text.replace('"', "'").encode(), "single quotes", {}
        if op == 12:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), "random bytes", {}
        if op == 13:
            size = rng.choice([MAX_BODY - 64, MAX_BODY + 1, MAX_BODY * 2])
            return json.dumps({"NetworkID": "a" * size, "PoolID": "x"}).encode(), \
                f"body of {size} bytes", {}
        if op == 14:
            return text.encode(), "chunked oversized", {"chunked": MAX_BODY + 4096}
        if op == 15:
            return text.encode(), "content type", {"headers": {"Content-Type": rng.choice(
                ["application/json", "text/html", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x"])}}
        return text.encode(), "http method/path", {"http": rng.choice(
            [("GET", "/" + method), ("PUT", "/" + method), ("DELETE", "/" + method),
             ("POST", "/" + method + "?x=1"), ("POST", "//" + method),
             ("POST", "/" + method.lower()), ("POST", "/" + method + "/"),
             ("POST", "/../" + method), ("POST", "/" + method + "%00"),
             ("POST", "/" + method.replace(".", "%2E")), ("POST", "/NetworkDriver.\u00e9"),
             ("POST", "/" + "A" * 1500), ("POST", "/"), ("OPTIONS", "/" + method)])}

    # ---- a request -------------------------------------------------------------------
    def next(self) -> Request:
        rng = self.rng
        while True:
            self.index += 1
            r = rng.random()
            method = rng.choice(UNIMPLEMENTED) if r < 0.02 else rng.choice(METHODS)
            body = self.valid(method)
            extra: dict = {}
            roll = rng.random()
            if roll < 0.2:
                raw, mutation = (b"" if body is None else _dump(body)), "valid"
            elif roll < 0.45:
                raw, mutation, extra = self._raw(method, body)
            else:
                mutated, mutation = self._mutate_field(body if body is not None else
                                                       {"x": self._weird_value()})
                raw = _dump(mutated)
                if mutation != "valid" and rng.random() < 0.1:  # two fields at once
                    mutated, second = self._mutate_field(mutated)
                    raw, mutation = _dump(mutated), f"{mutation}; {second}"
            if names_live(method, raw):
                continue  # Docker's own way of deleting a live object: not a fuzz case
            http_method, path = extra.get("http", ("POST", ""))
            request = Request(self.index, method, raw, mutation, path=path, http_method=http_method,
                              headers=extra.get("headers", {}))
            if "chunked" in extra:
                request.chunked = True
                request.body = b"{" + b" " * extra["chunked"] + b"}"
            if rng.random() < 0.05:
                request.concurrent = rng.choice([2, 4, 8])
            return request


DESTRUCTIVE = {"NetworkDriver.DeleteNetwork", "NetworkDriver.DeleteEndpoint",
               "IpamDriver.ReleasePool", "IpamDriver.ReleaseAddress"}


def names_live(method: str, raw: bytes) -> bool:
    """Whether this is Docker's legitimate way of deleting a live object: the exact IDs (as
    json.loads reads them, last duplicate key winning) and, for ReleaseAddress, an address
    that parses (bare or with a prefix) to a live one."""
    if method not in DESTRUCTIVE:
        return False
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    if not isinstance(data, dict):
        return False
    if method == "NetworkDriver.DeleteNetwork":
        return data.get("NetworkID") == LIVE_NID
    if method == "NetworkDriver.DeleteEndpoint":
        return data.get("NetworkID") == LIVE_NID and data.get("EndpointID") == LIVE_EID
    if method == "IpamDriver.ReleasePool":
        return data.get("PoolID") == LIVE_POOL_ID
    address = data.get("Address")
    # An address is released by any PoolID of its pool, the hold-less spelling of older
    # pynet versions included (address claims belong to the pool, not to a hold).
    if data.get("PoolID") not in (LIVE_POOL_ID, OLD_LIVE_POOL_ID) or not isinstance(address, str):
        return False
    try:
        return ipaddress.ip_interface(address).ip in LIVE_ADDRESSES
    except ValueError:
        return False
