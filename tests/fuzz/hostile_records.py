"""Bad overlay records for the hostile-store tier (tests/fuzz/test_hostile_store.py): the
hand-made cases of issue 17's "Why" list, and seeded generated ones. Pure: a seed and a
Scene give the same records every time.

Every record here must be refused by a reader (or, for a forged record under a host's
prefix, be that host's and nothing more): none of them may change a kernel entry. So each
generated record carries at least one mutation that is invalid on its own, never one a
reader could take at face value (a different but valid MAC, say).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from tests.harness.hostile_store import (addr_key, alive_key, def_key, member_key, old_member_key,
                                         old_peer_key, peer_key)


@dataclass(frozen=True)
class Scene:
    """What the tier set up: this host, its overlays, the fake second host's good records."""
    space: str
    subnet: str                  # overlay X: this host's two endpoints and the good peer
    other_subnet: str            # overlay Y: this host's other overlay (its device a target)
    foreign_subnet: str          # overlay Z: the fake host alone (this host is no member)
    self_host: str
    self_vtep: str
    peer_host: str
    good_member: dict            # the fake host's member record of X, as written
    good_peer: dict              # its peer record of X, as written
    self_member: dict            # this host's member record of X, as written
    other_member: dict           # this host's member record of Y
    local: tuple[tuple[str, str], ...]  # this host's endpoints on X: (ip, mac)
    spare_ip: str                # an address of X the fake host holds, published by no peer
    junk_claim_ip: str           # an address of X whose claim record is junk


@dataclass
class Batch:
    name: str
    writes: list[tuple[str, bytes]] = field(default_factory=list)

    def put(self, key: str, value: object) -> "Batch":
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        self.writes.append((key, raw))
        return self


def eid(tag: str, i: int = 0) -> str:
    """An endpoint ID of Docker's shape (64 hex characters), different per tag and index."""
    return (tag.encode().hex() + f"{i:04x}").ljust(64, "0")[:64]


def peer_record(good: dict, host: str, endpoint: str, **fields: object) -> dict:
    """The good peer record moved to `host` and `endpoint` (the ones its key will name), with
    `fields` changed: the only faults are the ones asked for."""
    return {**good, "host": host, "endpoint": endpoint, **fields}


BAD_MACS = [7, None, "zz:zz:zz:zz:zz:zz", "01:00:5e:00:00:05", "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00", "", "02:42:0a", ["02:42:0a:4d:00:09"], {"mac": 1}, 0x0242]
BAD_VTEPS = ["localhost", "fd00::1", "300.1.1.1", "127.0.0.1", "224.0.0.5", "0.0.0.0",
             "255.255.255.255", None, 198, ["198.18.201.3"], ""]
NOT_STR = [None, 5, 1.5, True, [], {}, ["x"]]


def bad_ips(subnet: str) -> list:
    base = subnet.split("/")[0].rsplit(".", 1)[0]
    return [["10.77.0.9"], "", f"{base}.300", "10.99.0.9", f"{base}.0", f"{base}.255", None, 9,
            "fd00::5", f"{base}.9/24", "::ffff:10.77.0.9"]


def handmade(s: Scene) -> list[Batch]:
    """One batch per kind of bad record of issue 17's "Why" list."""
    X, Z, sp = s.subnet, s.foreign_subnet, s.space
    good_p, good_m = s.good_peer, s.good_member
    ph = s.peer_host
    batches: list[Batch] = []

    b = Batch("peer MACs: a number, null, 'zz:..', multicast, broadcast, zero")
    for i, mac in enumerate(BAD_MACS):
        e = eid("mac", i)
        b.put(peer_key(ph, sp, X, e), peer_record(good_p, ph, e, mac=mac))
    batches.append(b)

    b = Batch("peer IPs: a list, '', 10.77.0.300, outside the subnet, network, broadcast, IPv6")
    for i, ip in enumerate(bad_ips(X)):
        e = eid("ip", i)
        b.put(peer_key(ph, sp, X, e), peer_record(good_p, ph, e, ip=ip))
    batches.append(b)

    b = Batch("VTEPs: localhost, fd00::1, 300.1.1.1, loopback, multicast, unspecified, "
              "broadcast, this host's own")
    for i, vtep in enumerate(BAD_VTEPS + [s.self_vtep]):
        host = f"hs-vtep{i:02d}"
        b.put(member_key(host, sp, X), {**good_m, "host": host, "vtep": vtep})
        b.put(peer_key(host, sp, X, eid("vtep", i)), peer_record(good_p, host, eid("vtep", i), vtep=vtep))
        # The fake host's member is good: only the peer's own VTEP is wrong.
        e = eid("pvtep", i)
        b.put(peer_key(ph, sp, X, e), peer_record(good_p, ph, e, vtep=vtep))
    batches.append(b)

    b = Batch("bytes that are not UTF-8, and records that are not JSON objects")
    e = eid("utf", 1)
    b.put(peer_key(ph, sp, X, eid("utf", 0)), b"\xff\xfe\x00\x9c garbage")
    b.put(peer_key(ph, sp, X, e), json.dumps(peer_record(good_p, ph, e)).encode().replace(b'"mac"', b'"m\xe9c"'))
    e = eid("utf", 2)
    b.put(peer_key(ph, sp, X, e), json.dumps(peer_record(good_p, ph, e, mac="02:42:0a:4d:ab:02"))
          .encode().replace(b"02:42:0a:4d:ab:02", b"02:42:0a:4d:ab:\xff"))
    for i, raw in enumerate([b'{"host": "hs-peer", "ip": ', b"", b"null", b"[1, 2, 3]", b'"a string"',
                             b"1e999", b"NaN"]):
        b.put(peer_key(ph, sp, X, eid("json", i)), raw)
    b.put(member_key("hs-bytes", sp, X), b"\xc3\x28\xa0\xa1")
    b.put(peer_key("hs-bytes", sp, X, eid("bytes")), b"\x00" * 64)
    b.put(alive_key("hs-bytes"), b"\xff\xff")
    b.put(f"v1/overlay/hosts/{ph}/peers/{sp}", {**good_p, "endpoint": "short"})  # a key too short
    b.put(f"v1/overlay/hosts/{ph}/members/{sp}/{X.replace('/', '_')}/extra", good_m)
    b.put(f"v1/overlay/hosts/{ph}/peers/{sp}/not-a-cidr/{eid('cidr')}", peer_record(good_p, ph, eid("cidr")))
    # The good record itself under another endpoint ID than it names.
    b.put(peer_key(ph, sp, X, eid("other")), {**good_p})
    batches.append(b)

    ip0, mac0 = s.local[0]
    b = Batch("peers claiming a local container's MAC or IP")
    # The local address, held by this host: not the fake host's to publish.
    b.put(peer_key(ph, sp, X, eid("local", 0)), peer_record(good_p, ph, eid("local", 0), ip=ip0,
                                                            mac="02:42:aa:bb:cc:01"))
    # An address the fake host does hold, but with a MAC of this host's own endpoint.
    b.put(peer_key(ph, sp, X, eid("local", 1)), peer_record(good_p, ph, eid("local", 1), ip=s.spare_ip,
                                                            mac=mac0))
    # Both at once, and the upper-case spelling of a local MAC.
    b.put(peer_key(ph, sp, X, eid("local", 2)), peer_record(good_p, ph, eid("local", 2), ip=s.local[1][0],
                                                            mac=s.local[1][1].upper()))
    # An address whose claim record is junk: nobody can be shown to hold it.
    b.put(peer_key(ph, sp, X, eid("local", 3)), peer_record(good_p, ph, eid("local", 3), ip=s.junk_claim_ip,
                                                            mac="02:42:aa:bb:cc:03"))
    b.put(addr_key(sp, X, s.junk_claim_ip), b"{not json")
    batches.append(b)

    b = Batch("a forged member record for this host pointing at another overlay's device")
    # This host's own member record of X, rewritten: X's peers into Y's device.
    b.put(member_key(s.self_host, sp, X), {**s.self_member, "netns": s.other_member["netns"],
                                           "vxlan": s.other_member["vxlan"]})
    # A member record for this host in Z, which it does not have, naming Y's device.
    b.put(member_key(s.self_host, sp, Z), {**s.other_member})
    batches.append(b)

    b = Batch("forged records under another host's prefix with a mismatched host field")
    b.put(member_key("hs-third", sp, X), {**good_m, "vtep": "198.18.201.4"})  # says hs-peer
    b.put(peer_key("hs-third", sp, X, eid("third", 0)),  # says hs-peer
          peer_record(good_p, ph, eid("third", 0), mac="02:42:aa:bb:cc:d0", ip=s.spare_ip))
    b.put(peer_key(ph, sp, X, eid("third", 1)),
          peer_record(good_p, "hs-third", eid("third", 1), mac="02:42:aa:bb:cc:d1", ip=s.spare_ip))
    b.put(peer_key(ph, sp, X, eid("third", 2)),
          peer_record(good_p, s.self_host, eid("third", 2), ip=ip0, mac=mac0, vtep=s.self_vtep))
    batches.append(b)

    b = Batch("the old layout: member and peer keys under the shared prefix")
    b.put(old_member_key("hs-old", sp, X), {**good_m, "host": "hs-old", "vtep": "198.18.201.5"})
    b.put(old_peer_key("hs-old", sp, X, eid("old", 0)),
          peer_record(good_p, "hs-old", eid("old", 0), ip=s.spare_ip, mac="02:42:aa:bb:cc:b0", vtep="198.18.201.5"))
    # The fake host's own, where only the old layout had it: the spare address it holds.
    b.put(old_peer_key(ph, sp, X, eid("old", 1)),
          peer_record(good_p, ph, eid("old", 1), ip=s.spare_ip, mac="02:42:aa:bb:cc:b1"))
    batches.append(b)

    b = Batch("junk definitions, VNI claims and heartbeats of overlays this host does not have")
    b.put(def_key(sp, "10.88.0.0/24"), b"{not json")
    b.put(def_key(sp, "10.88.1.0/24"), {"vni": "many", "mtu": None, "port": -1})
    b.put(def_key(sp, "10.88.2.0/24"), {"vni": 99999999, "mtu": 1450, "port": 4789})
    b.put("v1/overlay/vnis/notanumber", {"space": sp, "subnet": "10.88.3.0/24"})
    b.put("v1/overlay/vnis/99999999", b"\xff")
    b.put("v1/overlay/vnis/4200", b"[]")
    b.put(alive_key("hs-junk"), b"\x80\x81")
    b.put(alive_key(ph + "/x"), "{}")
    batches.append(b)

    # Encrypted overlays' records (issue 20): this host has no encrypted overlay here, but
    # every sync parses them; junk and forgeries must fail only themselves.
    key = "A" * 42 + "E="  # a well-formed public key
    good_wg = {"host": ph, "public_key": key, "endpoint": f"{s.self_vtep}:51820", "address": "100.127.0.9"}
    b = Batch("junk and forged WireGuard records and tunnel claims")
    b.put(f"v1/overlay/hosts/{ph}/wireguard", {**good_wg, "host": "hs-other"})     # names another host
    b.put("v1/overlay/hosts/hs-wg1/wireguard", {**good_wg, "host": "hs-wg1", "public_key": "A" * 43 + "="})
    b.put("v1/overlay/hosts/hs-wg2/wireguard", {**good_wg, "host": "hs-wg2", "endpoint": "localhost:51820"})
    b.put("v1/overlay/hosts/hs-wg3/wireguard", {**good_wg, "host": "hs-wg3", "address": [1, 2]})
    b.put("v1/overlay/hosts/hs-wg4/wireguard", b"\xff\xfe not utf-8")
    b.put("v1/overlay/hosts/hs-wg5/wireguard", b"{not json")
    b.put("v1/overlay/hosts/hs-wg6/wireguard", {**good_wg, "host": "hs-wg6", "public_key": 7})
    b.put("v1/overlay/tunnels/100.127.0.300", {"host": ph})
    b.put("v1/overlay/tunnels/100.127.0.9", {"host": None})
    b.put("v1/overlay/tunnels/notanaddress", b"[]")
    batches.append(b)
    return batches


# --- generated -----------------------------------------------------------------------------
def _mutate_peer(rng: random.Random, s: Scene, i: int) -> dict | bytes | list | str | int | None:
    record: dict = peer_record(s.good_peer, s.peer_host, eid("gen", i))
    field_bad = {
        "mac": lambda: rng.choice(BAD_MACS),
        "ip": lambda: rng.choice(bad_ips(s.subnet) + [s.local[0][0], s.local[1][0]]),
        "vtep": lambda: rng.choice(BAD_VTEPS + [s.self_vtep]),
        "host": lambda: rng.choice(NOT_STR + ["hs-other", s.self_host, ""]),
        "endpoint": lambda: rng.choice(NOT_STR),
        "network": lambda: rng.choice(NOT_STR),
    }
    chosen = rng.sample(sorted(field_bad), rng.randint(1, 3))
    for name in chosen:
        if rng.random() < 0.2:
            record.pop(name)
        else:
            record[name] = field_bad[name]()
    # A record whose only invalid part is its IP may still carry a local MAC, a fresh one...
    if chosen == ["ip"] and rng.random() < 0.5:
        record["mac"] = rng.choice([s.local[0][1], "02:42:0b:00:00:%02x" % (i % 256)])
    if rng.random() < 0.1:
        record["extra"] = rng.choice(NOT_STR)
    return record


def _mutate_member(rng: random.Random, s: Scene, host: str) -> dict:
    record = {**s.good_member, "host": host}
    field_bad = {
        "vtep": lambda: rng.choice(BAD_VTEPS + [s.self_vtep]),
        "host": lambda: rng.choice(NOT_STR + [s.peer_host, s.self_host]),
        "network": lambda: rng.choice(NOT_STR),
        "netns": lambda: rng.choice(NOT_STR),
        "vxlan": lambda: rng.choice(NOT_STR),
    }
    for name in rng.sample(sorted(field_bad), rng.randint(1, 2)):
        if rng.random() < 0.2:
            record.pop(name)
        else:
            record[name] = field_bad[name]()
    return record


def _raw(rng: random.Random, record: object) -> bytes:
    """The record as JSON, or broken on the way: truncated, bytes flipped, not UTF-8."""
    text = json.dumps(record).encode()
    roll = rng.random()
    if roll < 0.70:
        return text
    if roll < 0.80:
        return text[: rng.randint(0, max(0, len(text) - 1))]
    if roll < 0.90:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 48)))
    cut = rng.randint(0, len(text))
    return text[:cut] + bytes([rng.choice([0x80, 0xff, 0xc3, 0xfe])]) + text[cut:]


def generated(rng: random.Random, s: Scene, count: int, batch: int) -> Batch:
    """`count` bad records: peers under the fake host's prefix (whose member record is good,
    so only the peer's own faults can keep it out), and members and peers of made-up hosts
    (each member record faulty, so the host is never a valid member)."""
    b = Batch(f"generated batch {batch} ({count} records)")
    for i in range(count):
        n = batch * 10000 + i
        roll = rng.random()
        if roll < 0.6:
            record = _mutate_peer(rng, s, n)
            key = peer_key(s.peer_host, s.space, s.subnet, eid("gen", n))
        elif roll < 0.85:
            host = f"hs-gen{n}"
            record = _mutate_member(rng, s, host)
            key = member_key(host, s.space, s.subnet)
            b.put(peer_key(host, s.space, s.subnet, eid("genh", n)),
                  _raw(rng, peer_record(s.good_peer, host, eid("genh", n), vtep=record.get("vtep"),
                                        mac="02:42:0c:00:%02x:%02x" % (n // 256 % 256, n % 256))))
        else:
            record = rng.choice([None, 5, "x", [s.good_peer], {"host": s.peer_host}, {}])
            key = peer_key(s.peer_host, s.space, s.subnet, eid("junk", n))
        b.put(key, _raw(rng, record))
    return b
