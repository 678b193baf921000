"""Thousands of generated requests against the real plugin in a private network namespace
(issue 9, "What to build" 3).

After every call: the answer is JSON with the plugin's Content-Type, a failure carries a
non-empty string Err (and Error, for IPAM), nothing is a 500, nothing hangs; and the live
network, endpoint and pool made at the start are undamaged (kernel, records, IPAM claims,
EndpointOperInfo). At the end: no Traceback in the plugin log, no pynet link the records do
not account for, and the live objects still delete cleanly with Docker's own calls.
"""
from __future__ import annotations

import collections
import http.client
import ipaddress
import json
import re
import socket
import subprocess
import threading
import time
from typing import Any

import pytest

from tests.fuzz.conftest import HOST_ID
from tests.fuzz import generator
from tests.fuzz.generator import (GATEWAY_OPTS, GENERIC, LIVE_ADDRESS, LIVE_EID, LIVE_GATEWAY,
                                  LIVE_NID, LIVE_POOL, Generator, Request)
from tests.harness.plugin import PLUGIN_HEADERS, PLUGIN_HOST

CALL_TIMEOUT = 10.0
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"
# Statuses a malformed or ill-timed request may get: refused (400), unknown (404), in use
# (409), too large (413), not supported by this kernel (501), exhausted (507). A 500 is an
# internal error, a 503 here (embedded store, nothing down) a stuck call: both are findings.
ACCEPTED = {200, 400, 404, 409, 413, 501, 507}
LIVE_BRIDGE = "pn-" + LIVE_NID[:12]
LIVE_HOST_VETH = "pnv" + LIVE_EID[:12]
LIVE_PEER = "pnc" + LIVE_EID[:12]
LIVE_MAC = "02:42:0a:fa:00:02"  # what pynet derives from the live address
# A failure names the value in a sentence; pynet cuts messages to 1000 characters, which
# JSON may escape to 6 bytes each, twice (Err and Error).
MAX_FAILURE = 16384


class Finding(AssertionError):
    pass


# ---- talking to the plugin ---------------------------------------------------------------
def send(socket_path, req: Request) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, written by hand: the path goes out as UTF-8 bytes
    (http.client refuses non-ASCII), and an answer sent before the whole body was read (a
    413) is still read when the plugin closes its end early."""
    headers = {"Host": PLUGIN_HOST, **PLUGIN_HEADERS, **req.headers, "Connection": "close"}
    if req.chunked:
        headers["Transfer-Encoding"] = "chunked"
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in
                        (req.body[i:i + 65536] for i in range(0, len(req.body), 65536))) + b"0\r\n\r\n"
    else:
        headers["Content-Length"] = str(len(req.body))
        body = req.body
    head = f"{req.http_method} {req.path} HTTP/1.1\r\n".encode("utf-8", "surrogateescape")
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CALL_TIMEOUT)
    try:
        sock.connect(str(socket_path))
        try:
            sock.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (and closed) before reading it all: read that answer
        resp = http.client.HTTPResponse(sock, method=req.http_method)
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        sock.close()


def answer_problem(req: Request, status: int, headers: dict[str, str], raw: bytes) -> str | None:
    """Why this answer breaks the protocol, or None."""
    if not headers.get("content-type", "").startswith(CONTENT_TYPE):
        return f"Content-Type {headers.get('content-type')!r}, not JSON"
    try:
        answer = json.loads(raw)
    except ValueError:
        return "body is not JSON"
    if not isinstance(answer, dict):
        return "answer is not a JSON object"
    if status == 500:
        return "internal error (500)"
    if status not in ACCEPTED:
        return f"unexpected status {status}"
    if status != 200:
        if not isinstance(answer.get("Err"), str) or not answer["Err"].strip():
            return "failure without a non-empty string Err"
        if req.method.startswith("IpamDriver.") and req.path == "/" + req.method \
                and req.http_method == "POST" and not answer.get("Error"):
            return "IPAM failure without Error (the field Docker's IPAM client reads)"
        if len(raw) > MAX_FAILURE:
            return f"failure answer of {len(raw)} bytes (client text must come back cut)"
        return None
    if "Err" in answer:
        return "200 carrying Err"
    return _shape_problem(req.method, answer) or _outside_pool(req, answer)


def _outside_pool(req: Request, answer: dict) -> str | None:
    """A granted address lies in the pool the PoolID names."""
    if req.method != "IpamDriver.RequestAddress":
        return None
    try:
        parts = json.loads(req.body)["PoolID"].split("@", 1)[0].split("/")  # "@HOLD": the hold
        pool = ipaddress.ip_network(f"{parts[1]}/{parts[2]}")
        granted = ipaddress.ip_interface(answer["Address"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return f"RequestAddress granted {answer!r} for a PoolID the fuzzer cannot read back"
    if granted.ip not in pool or granted.network.prefixlen != pool.prefixlen:
        return f"RequestAddress granted {granted}, outside pool {pool}"
    return None


def _shape_problem(method: str, answer: dict) -> str | None:
    expect: dict[str, Any] = {
        "Plugin.Activate": lambda a: a == {"Implements": ["NetworkDriver", "IpamDriver"]},
        "NetworkDriver.GetCapabilities": lambda a: a.get("Scope") in ("local", "global"),
        "NetworkDriver.EndpointOperInfo": lambda a: isinstance(a.get("Value"), dict),
        "NetworkDriver.Join": lambda a: isinstance(a.get("InterfaceName"), dict),
        "IpamDriver.RequestPool": lambda a: isinstance(a.get("PoolID"), str)
        and isinstance(a.get("Pool"), str),
        "IpamDriver.RequestAddress": lambda a: isinstance(a.get("Address"), str)
        and "/" in a["Address"],
    }
    check = expect.get(method)
    return None if check is None or check(answer) else f"200 answer of the wrong shape: {answer!r}"


def call(plugin, method: str, body: Any) -> tuple[int, Any]:
    status, raw = plugin.call("/" + method, body, timeout=CALL_TIMEOUT)
    return status, raw


# ---- the live network, endpoint and pool ---------------------------------------------------
def make_live(plugin) -> None:
    steps = [
        ("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": LIVE_POOL,
                                    "SubPool": "", "Options": {}, "V6": False}),
        ("IpamDriver.RequestAddress", {"PoolID": None, "Address": LIVE_GATEWAY,
                                       "Options": dict(GATEWAY_OPTS)}),
        ("NetworkDriver.CreateNetwork", {
            "NetworkID": LIVE_NID,
            "Options": {"com.docker.network.enable_ipv6": False, GENERIC: {}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": LIVE_POOL,
                          "Gateway": LIVE_GATEWAY + "/24"}], "IPv6Data": []}),
        ("IpamDriver.RequestAddress", {"PoolID": None, "Address": LIVE_ADDRESS,
                                       "Options": {"com.docker.network.endpoint.name": "fuzz-live"}}),
        ("NetworkDriver.CreateEndpoint", {
            "NetworkID": LIVE_NID, "EndpointID": LIVE_EID,
            "Interface": {"Address": LIVE_ADDRESS + "/24", "AddressIPv6": "", "MacAddress": ""},
            "Options": {}}),
    ]
    for method, body in steps:
        if "PoolID" in body:
            body = {**body, "PoolID": generator.LIVE_POOL_ID}
        status, answer = call(plugin, method, body)
        assert status == 200, (method, status, answer)
        if method == "IpamDriver.RequestPool":
            # The PoolID names this request's hold: the fuzzer aims at the one Docker holds.
            generator.LIVE_POOL_ID = answer["PoolID"]


def kernel_links(netns: str) -> dict[str, dict]:
    out = subprocess.run(["ip", "-j", "-d", "-n", netns, "addr", "show"], check=True,
                         capture_output=True, text=True, timeout=10).stdout
    return {link["ifname"]: link for link in json.loads(out)}


def live_damage(plugin) -> list[str]:
    """What is wrong with the live network, endpoint and pool (empty: undamaged)."""
    damage = []
    links = kernel_links(plugin.netns)
    bridge = links.get(LIVE_BRIDGE)
    if bridge is None:
        damage.append(f"bridge {LIVE_BRIDGE} is gone")
    else:
        if bridge.get("linkinfo", {}).get("info_kind") != "bridge":
            damage.append(f"{LIVE_BRIDGE} is no longer a bridge")
        if "UP" not in bridge.get("flags", []):
            damage.append(f"bridge {LIVE_BRIDGE} is down")
        addrs = {(a["local"], a["prefixlen"]) for a in bridge.get("addr_info", [])
                 if a.get("family") == "inet"}
        if addrs != {(LIVE_GATEWAY, 24)}:
            damage.append(f"bridge {LIVE_BRIDGE} has IPv4 addresses {sorted(addrs)}, "
                          f"not {LIVE_GATEWAY}/24")
    veth = links.get(LIVE_HOST_VETH)
    if veth is None:
        damage.append(f"endpoint veth {LIVE_HOST_VETH} is gone")
    elif veth.get("master") != LIVE_BRIDGE or "UP" not in veth.get("flags", []):
        damage.append(f"veth {LIVE_HOST_VETH} is not an up port of {LIVE_BRIDGE} "
                      f"(master {veth.get('master')}, flags {veth.get('flags')})")
    peer = links.get(LIVE_PEER)
    if peer is None:
        damage.append(f"endpoint's container end {LIVE_PEER} is gone")
    elif peer.get("address") != LIVE_MAC:
        damage.append(f"{LIVE_PEER} has MAC {peer.get('address')}, not {LIVE_MAC}")

    spaces = {e.key: json.loads(e.value) for e in plugin.stored("v1/ipam/spaces/LocalDefault")}
    pool = spaces.get("v1/ipam/spaces/LocalDefault", {}).get("pools", {}).get(LIVE_POOL)
    if pool is None or pool.get("holders", {}).get(HOST_ID, 0) < 1:
        damage.append(f"pool {LIVE_POOL} record is gone or no longer held by {HOST_ID}: {pool}")
    claims = {e.key.rsplit("/", 1)[1] for e in
              plugin.stored(f"v1/ipam/addrs/LocalDefault/{LIVE_POOL.replace('/', '_')}/")}
    for ip in (LIVE_GATEWAY, LIVE_ADDRESS):
        if ip not in claims:
            damage.append(f"address claim for {ip} is gone")
    if not plugin.stored(f"v1/hosts/{HOST_ID}/networks/{LIVE_NID}"):
        damage.append("live network record is gone")
    if not plugin.stored(f"v1/hosts/{HOST_ID}/endpoints/{LIVE_NID}/{LIVE_EID}"):
        damage.append("live endpoint record is gone")

    status, answer = call(plugin, "IpamDriver.RequestAddress",
                          {"PoolID": generator.LIVE_POOL_ID, "Address": LIVE_ADDRESS, "Options": {}})
    if status != 409:
        damage.append(f"RequestAddress of the live address {LIVE_ADDRESS} answered {status} "
                      f"{answer!r}, not 409 (in use)")
        if status == 200:  # it claimed it: give it back so later checks see the real state
            call(plugin, "IpamDriver.ReleaseAddress", {"PoolID": generator.LIVE_POOL_ID, "Address": LIVE_ADDRESS})
    status, answer = call(plugin, "NetworkDriver.EndpointOperInfo",
                          {"NetworkID": LIVE_NID, "EndpointID": LIVE_EID})
    if status != 200 or answer != {"Value": {"interface": LIVE_PEER, "mac": LIVE_MAC}}:
        damage.append(f"EndpointOperInfo of the live endpoint answered {status} {answer!r}")
    return damage


def unaccounted_links(plugin) -> tuple[set[str], set[str]]:
    """(links in the namespace no record owns, recorded links missing from the kernel)."""
    owned, expected = set(), set()
    for entry in plugin.stored(f"v1/hosts/{HOST_ID}/networks/"):
        net = json.loads(entry.value)
        if net.get("bridge_created") and net.get("bridge"):
            owned.add(net["bridge"])
        if net.get("lower_created") and net.get("lower"):
            owned.add(net["lower"])
        expected |= {n for n in (net.get("bridge"), net.get("lower")) if n}
    for entry in plugin.stored(f"v1/hosts/{HOST_ID}/endpoints/"):
        ep = json.loads(entry.value)
        names = {n for n in (ep.get("host_if"), ep.get("peer_if")) if n}
        owned |= names
        expected |= names
    present = set(kernel_links(plugin.netns)) - {"lo"}
    return present - owned - expected, expected - present


def unaccounted_rules(plugin) -> list[str]:
    """Lines of pynet's nft table for a network or bridge no record has (a failed
    CreateNetwork's, a deleted network's)."""
    out = subprocess.run(["ip", "netns", "exec", plugin.netns, "nft", "list", "table", "inet",
                          "pynet"], capture_output=True, text=True, timeout=15)
    if out.returncode != 0:
        return [] if "No such file" in out.stderr else [f"nft list failed: {out.stderr.strip()}"]
    nets = [json.loads(e.value) for e in plugin.stored(f"v1/hosts/{HOST_ID}/networks/")]
    ids = {n["id"][:12] for n in nets}
    bridges = {n["bridge"] for n in nets if n.get("bridge")}
    stale = []
    uplinks = False
    for line in out.stdout.splitlines():
        # A network is elements of the table's sets: its bridge name quoted, "net <id12>" in
        # the comment (the uplinks set names the host's bridges, not pynet's).
        if line.strip().startswith(("set ", "map ")):
            uplinks = line.strip().startswith("set uplinks ")
        named = set(re.findall(r'comment "net ([^:" ]+)', line))
        links = set() if uplinks else set(re.findall(r'"([^"]+)"', re.sub(r'comment "[^"]*"', "", line)))
        links -= {"bridge"}  # meta oifkind "bridge" in a rule
        if named - ids or links - bridges:
            stale.append(line.strip())
    return stale


# ---- the run ---------------------------------------------------------------------------------
def test_fuzz_the_plugin(fuzz_plugin, fuzz_config, capsys):
    plugin = fuzz_plugin
    seed, budget, seconds = fuzz_config["seed"], fuzz_config["requests"], fuzz_config["seconds"]
    with capsys.disabled():
        print(f"\npynet fuzz: seed {seed}, up to {budget} requests, "
              f"{seconds:g} s (PYNET_FUZZ_SEED={seed} reproduces)", flush=True)
    make_live(plugin)
    assert live_damage(plugin) == [], f"seed {seed}: live objects wrong before the run"

    gen = Generator(seed)
    outcomes: collections.Counter = collections.Counter()
    by_method: collections.Counter = collections.Counter()
    findings: dict[tuple, str] = {}
    started = time.monotonic()
    sent = 0

    def record(req: Request, status: int | None, problem: str, detail: str) -> None:
        key = (req.method, req.mutation.split(" ")[0], problem.split(" (")[0])
        findings.setdefault(key, f"seed {seed}: {problem}: {req.describe()} -> {detail}")

    while sent < budget and (not seconds or time.monotonic() - started < seconds):
        req = gen.next()
        results: list[Any] = [None] * req.concurrent

        def one(i: int, barrier: threading.Barrier | None = None) -> None:
            if barrier is not None:
                barrier.wait(timeout=CALL_TIMEOUT)
            try:
                results[i] = send(plugin.socket_path, req)
            except Exception as exc:  # a timeout (hang), a reset connection: a finding
                results[i] = exc

        if req.concurrent == 1:
            one(0)
        else:
            barrier = threading.Barrier(req.concurrent)
            threads = [threading.Thread(target=one, args=(i, barrier)) for i in range(req.concurrent)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(CALL_TIMEOUT * 2)
        sent += req.concurrent
        statuses = []
        for result in results:
            if not isinstance(result, tuple):
                outcomes["no answer"] += 1
                record(req, None, f"no answer within {CALL_TIMEOUT:g} s", repr(result))
                continue
            status, headers, raw = result
            outcomes[status] += 1
            by_method[(req.method, status)] += 1
            statuses.append(status)
            problem = answer_problem(req, status, headers, raw)
            if problem:
                record(req, status, problem, f"{status} {raw[:400]!r}")
        if req.concurrent > 1 and req.method.startswith("NetworkDriver.") and len(set(statuses)) > 1:
            record(req, None, "concurrent duplicates of an idempotent call disagree", str(statuses))
        if not plugin.running():
            pytest.fail(f"seed {seed}: the plugin exited after {req.describe()}\n{plugin.log_tail()}")
        damage = live_damage(plugin)
        if damage:
            findings[("live damage",)] = (f"seed {seed}: the live objects were damaged by "
                                          f"{req.describe()}: {damage}")
            break

    elapsed = time.monotonic() - started
    log = plugin.log_path.read_text(errors="replace")
    if "Traceback" in log:
        at = log.index("Traceback")
        findings[("traceback",)] = f"seed {seed}: Traceback in the plugin log:\n{log[at - 300:at + 2500]}"
    orphans, missing = unaccounted_links(plugin)
    if orphans:
        findings[("orphans",)] = f"seed {seed}: links no record owns: {sorted(orphans)}"
    stale_rules = unaccounted_rules(plugin)
    if stale_rules:
        findings[("rules",)] = f"seed {seed}: nft rules no record accounts for: {stale_rules[:20]}"
    if missing:
        findings[("missing",)] = f"seed {seed}: recorded links missing from the kernel: {sorted(missing)}"

    with capsys.disabled():
        print(f"pynet fuzz: seed {seed}: {sent} requests in {elapsed:.1f} s; by status: "
              + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items(), key=str)), flush=True)
        if findings:
            print(f"pynet fuzz: {len(findings)} finding(s)", flush=True)
    assert not findings, "\n\n".join(findings.values())
    assert sent >= min(budget, 500), f"seed {seed}: only {sent} requests in {elapsed:.0f} s"

    # The live objects still go away with Docker's own calls, leaving nothing.
    for method, body in [
        ("NetworkDriver.DeleteEndpoint", {"NetworkID": LIVE_NID, "EndpointID": LIVE_EID}),
        ("IpamDriver.ReleaseAddress", {"PoolID": generator.LIVE_POOL_ID, "Address": LIVE_ADDRESS}),
        ("NetworkDriver.DeleteNetwork", {"NetworkID": LIVE_NID}),
        ("IpamDriver.ReleaseAddress", {"PoolID": generator.LIVE_POOL_ID, "Address": LIVE_GATEWAY}),
        ("IpamDriver.ReleasePool", {"PoolID": generator.LIVE_POOL_ID}),
    ]:
        status, answer = call(plugin, method, body)
        assert status == 200, f"seed {seed}: {method} of a live object: {status} {answer}"
    links = kernel_links(plugin.netns)
    assert not {LIVE_BRIDGE, LIVE_HOST_VETH, LIVE_PEER} & set(links), f"seed {seed}: {sorted(links)}"
    assert not plugin.stored(f"v1/ipam/addrs/LocalDefault/{LIVE_POOL.replace('/', '_')}/")
