"""The hostile store (issue 17 item 8): bad and forged overlay records written straight into
a real Consul agent while a real pynet (`pynet serve --store consul`, its own process) serves
live overlay endpoints in a private network namespace.

The scene: namespace pnf-<hex> with `eth0` (198.18.201.2, the VTEP) on a veth to the root
namespace (198.18.201.1: the test process reaches Consul that way), a Consul agent and the
plugin inside it. Through the plugin API: overlay X with two endpoints, overlay Y with one.
A fake second host "hs-peer" (pynet's own store code, its own IPAM claims) joins X and
publishes one endpoint, so real FDB and neighbour entries are programmed; it also holds an
overlay Z this host does not have.

Then each batch of bad records (tests/fuzz/hostile_records.py: every case of issue 17's
"Why" list, and seeded generated ones) is written, and:
* a fresh good endpoint of hs-peer (the canary) still reaches the kernel: the watcher's sync
  went on past the bad records; removed again, it leaves;
* X's and Y's FDB and neighbour entries are exactly as before the batch: the good peer's
  stay, no bad entry reached the kernel;
* an unrelated overlay's CreateNetwork, CreateEndpoint, DeleteEndpoint, DeleteNetwork answer
  200 with JSON;
* pynet killed (-9) and started with the bad records present starts, serves, and syncs.
At the end, with every batch present at once, X and Y are deleted with Docker's calls.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import tempfile
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from driver import naming
from driver.kinds.overlay.model import Member, OverlayId, Peer
from ipam_driver.service import IpamService
from pynet_core.retry_queue import RetryQueue
from pynet_core.store.consul import ConsulStore
from tests.fakes.ipam_client import DockerIpam
from tests.fuzz import hostile_records
from tests.fuzz.hostile_records import Batch, Scene
from tests.harness.consul import ConsulAgent
from tests.harness.hostile_store import RawConsul, addr_key, member_key, peer_key
from tests.harness.netns import Namespaces, NetnsError, require_root
from tests.harness.plugin import PluginProcess
from tests.harness.wait import wait_until

SELF, PEER, THIEF = "hs-self", "hs-peer", "hs-thief"
NET = "198.18.201"  # this tier's underlay /24 (inside 198.18.0.0/15)
ROOT_ADDR, SELF_VTEP, PEER_VTEP, THIEF_VTEP = f"{NET}.1", f"{NET}.2", f"{NET}.3", f"{NET}.6"
SPACE = "LocalDefault"
X, Y, Z = "10.77.0.0/24", "10.78.0.0/24", "10.79.0.0/24"
GENERIC = "com.docker.network.generic"
GATEWAY_OPTS = {"RequestAddressType": "com.docker.network.gateway"}
SYNC = 20.0        # seconds a store change may take to reach the kernel
GENERATED_BATCHES, GENERATED_PER_BATCH = 4, 40


# --- the scene -----------------------------------------------------------------------------
@dataclass
class FakeHost:
    """Another host's pynet, as far as the store sees it: its IPAM and overlay records,
    written by pynet's own code (no kernel of its own)."""
    name: str
    vtep: str
    store: ConsulStore
    ipam: DockerIpam = field(init=False)
    registry: object = field(init=False)
    pools: dict = field(default_factory=dict)
    nids: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from driver.kinds.overlay.registry import Registry
        self.ipam = DockerIpam(IpamService(self.store, self.name, retries=RetryQueue(background=False)))
        self.registry = Registry(self.store, self.name, RetryQueue(background=False))

    def join(self, subnet: str) -> None:
        self.pools[subnet], _ = self.ipam.request_pool(SPACE, subnet, "", {}, False)
        nid = "fe" + secrets.token_hex(31)
        self.nids[subnet] = nid
        self.registry.join(OverlayId(SPACE, subnet),
                           Member(self.name, nid, self.vtep, naming.overlay_netns(nid), naming.vxlan(nid)),
                           vni=None, mtu=None, default_mtu=1450, mtu_limit=1450, port=4789)
        self.registry.beat()

    def claim(self, subnet: str) -> str:
        return self.ipam.request_address(self.pools[subnet], "", {
            "com.docker.network.endpoint.name": f"{self.name}-{secrets.token_hex(2)}"}).split("/")[0]

    def publish(self, subnet: str, ip: str, mac: str) -> str:
        eid = secrets.token_hex(32)
        self.registry.publish(OverlayId(SPACE, subnet),
                              Peer(self.name, eid, self.nids[subnet], ip, mac, self.vtep))
        return eid

    def withdraw(self, subnet: str, eid: str, ip: str | None = None) -> None:
        self.registry.withdraw(OverlayId(SPACE, subnet), eid)
        if ip is not None:
            self.ipam.release_address(self.pools[subnet], ip)

    def leave(self) -> None:
        for subnet, nid in self.nids.items():
            self.registry.leave(OverlayId(SPACE, subnet), nid)
            self.ipam.release_pool(self.pools.pop(subnet))  # as DeleteNetwork's ReleasePool
        self.nids.clear()


@dataclass
class Bed:
    netns: str
    consul: ConsulAgent
    plugin: PluginProcess
    raw: RawConsul
    peer: FakeHost
    nets: dict = field(default_factory=dict)       # subnet -> this host's NetworkID
    pools: dict = field(default_factory=dict)      # subnet -> PoolID
    local: dict = field(default_factory=dict)      # subnet -> [(eid, ip, mac)]
    made_nids: list = field(default_factory=list)  # every NetworkID given to the plugin
    log_seen: int = 0

    # plugin calls -----------------------------------------------------------------------
    def ok(self, method: str, body: dict) -> dict:
        status, answer = self.plugin.call("/" + method, body, timeout=15)
        assert status == 200 and isinstance(answer, dict) and "Err" not in answer, \
            f"{method} answered {status} {answer!r}"
        return answer

    def create_overlay(self, subnet: str, with_ipam: bool = True) -> str:
        nid = "f5" + secrets.token_hex(31)
        self.made_nids.append(nid)
        gateway = f"{subnet.rsplit('.', 1)[0]}.1/24"
        if with_ipam:
            self.pools[subnet] = self.ok("IpamDriver.RequestPool", {
                "AddressSpace": SPACE, "Pool": subnet, "SubPool": "", "Options": {}, "V6": False})["PoolID"]
            gateway = self.ok("IpamDriver.RequestAddress", {"PoolID": self.pools[subnet], "Address": "",
                                                            "Options": GATEWAY_OPTS})["Address"]
        self.ok("NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "Options": {GENERIC: {"type": "overlay"}},
            "IPv4Data": [{"AddressSpace": SPACE, "Pool": subnet, "Gateway": gateway}], "IPv6Data": []})
        self.nets[subnet] = nid
        return nid

    def create_endpoint(self, subnet: str) -> tuple[str, str, str]:
        nid, eid = self.nets[subnet], secrets.token_hex(32)
        address = self.ok("IpamDriver.RequestAddress", {
            "PoolID": self.pools[subnet], "Address": "",
            "Options": {"com.docker.network.endpoint.name": eid[:6]}})["Address"]
        self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": nid, "EndpointID": eid, "Options": {},
            "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""}})
        self.ok("NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid,
                                       "SandboxKey": f"/var/run/docker/netns/{eid[:12]}", "Options": {}})
        mac = self.ok("NetworkDriver.EndpointOperInfo", {"NetworkID": nid, "EndpointID": eid})["Value"]["mac"]
        made = (eid, address.split("/")[0], mac.lower())
        self.local.setdefault(subnet, []).append(made)
        return made

    def unrelated_overlay_round_trip(self, index: int) -> None:
        """RequestPool, CreateNetwork, RequestAddress, CreateEndpoint, DeleteEndpoint,
        DeleteNetwork and the releases of an overlay no bad record names (as dockerd makes
        them with --ipam-driver pynet): each answers 200 with JSON."""
        subnet = f"10.90.{index % 250}.0/24"
        nid = self.create_overlay(subnet)
        pool, eid = self.pools[subnet], secrets.token_hex(32)
        address = self.ok("IpamDriver.RequestAddress", {
            "PoolID": pool, "Address": "", "Options": {"com.docker.network.endpoint.name": eid[:6]}})["Address"]
        self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": nid, "EndpointID": eid, "Options": {},
            "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""}})
        self.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": nid, "EndpointID": eid})
        self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": address.split("/")[0]})
        self.ok("NetworkDriver.DeleteNetwork", {"NetworkID": nid})
        self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": f"{subnet.rsplit('.', 1)[0]}.1"})
        self.ok("IpamDriver.ReleasePool", {"PoolID": self.pools.pop(subnet)})
        del self.nets[subnet]

    # the kernel ---------------------------------------------------------------------------
    def kernel(self, subnet: str) -> tuple[frozenset, frozenset]:
        """Every FDB entry (bridge and VXLAN device) and every neighbour entry in the
        overlay's namespace, with the fields that say where frames go."""
        ns = naming.overlay_netns(self.nets[subnet])
        fdb = json.loads(_run(["bridge", "-n", ns, "-j", "fdb", "show"]) or "[]")
        neigh = json.loads(_run(["ip", "-n", ns, "-j", "neigh", "show"]) or "[]")
        return (frozenset((e.get("ifname"), e.get("mac"), e.get("dst"), e.get("master"),
                           tuple(sorted(e.get("flags", []))), e.get("state")) for e in fdb),
                frozenset((n.get("dev"), n.get("dst"), n.get("lladdr"), tuple(sorted(n.get("state", []))))
                          for n in neigh))

    def has_peer(self, subnet: str, ip: str, mac: str, vtep: str) -> bool:
        fdb, neigh = self.kernel(subnet)
        return any(e[1] == mac and e[2] == vtep for e in fdb) and any(n[1] == ip and n[2] == mac for n in neigh)

    # the store ------------------------------------------------------------------------------
    def write(self, batch: Batch) -> dict[str, bytes | None]:
        """Write the batch's records; what each key held before (to put back)."""
        before: dict[str, bytes | None] = {}
        for key, raw in batch.writes:
            if key not in before:
                before[key] = self.raw.get(key)
            status, body = self.raw.put(key, raw)
            assert status == 200, f"{batch.name}: writing {key}: {status} {body!r}"
        return before

    def put_back(self, before: dict[str, bytes | None]) -> None:
        for key, raw in before.items():
            if raw is None:
                assert self.raw.delete(key)[0] == 200, key
            else:
                assert self.raw.put(key, raw)[0] == 200, key

    # the plugin ----------------------------------------------------------------------------
    def new_log(self) -> str:
        text = self.plugin.log_path.read_text(errors="replace")
        new, self.log_seen = text[self.log_seen:], len(text)
        return new


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=15).stdout


def _veth(netns: str) -> str:
    """eth0 in the namespace (the VTEP), its peer in the root namespace (the test's way to
    Consul), both in NET."""
    root = f"pnh{secrets.token_hex(3)}"
    for argv in (["ip", "link", "add", root, "type", "veth", "peer", "name", "eth0", "netns", netns],
                 ["ip", "addr", "add", f"{ROOT_ADDR}/24", "dev", root],
                 ["ip", "link", "set", root, "up"],
                 ["ip", "-n", netns, "link", "set", "lo", "up"],
                 ["ip", "-n", netns, "addr", "add", f"{SELF_VTEP}/24", "dev", "eth0"],
                 ["ip", "-n", netns, "link", "set", "eth0", "up"]):
        _run(argv)
    return root


@pytest.fixture(scope="module")
def bed():
    try:
        require_root()
    except NetnsError as exc:
        pytest.fail(str(exc), pytrace=False)
    spaces = Namespaces(prefix="pnf-")
    tmp = Path(tempfile.mkdtemp(prefix="pynet-hostile-"))
    consul = plugin = store = None
    made: Bed | None = None
    try:
        netns = spaces.make("s")
        _veth(netns)
        consul = ConsulAgent(netns=netns, client=SELF_VTEP).start()
        plugin = PluginProcess(
            tmp / "state", socket_path=tmp / "run" / "pynet.sock", log_path=tmp / "plugin.log",
            extra_args=("--host-id", SELF, "--store", "consul", "--consul-addr", f"127.0.0.1:{consul.port}",
                        "--data-path-addr", SELF_VTEP, "--overlay-peer-timeout", "600",
                        "--leak-check-interval", "0", "--log-level", "info"),
            # nsenter --net, not `ip netns exec`: the latter gives the plugin a mount namespace of
            # its own, where the overlays' /run/netns/pno-* mounts would stay (invisible to the
            # test, and gone with the process at kill -9). nsenter execs: the PID is pynet's.
            command_prefix=("nsenter", f"--net=/run/netns/{netns}", "--"), startup_timeout=30)
        plugin.start()
        store = ConsulStore(consul.addr, prefix="pynet/")
        made = Bed(netns, consul, plugin, RawConsul(consul.addr), FakeHost(PEER, PEER_VTEP, store))
        yield made
    finally:
        if made is not None and plugin is not None and plugin.running():
            plugin.stop()
        elif plugin is not None:
            plugin.stop()
        if store is not None:
            store.close()
        if consul is not None:
            consul.stop()
        # The overlays' own namespaces (pno-<id>) are the machine's: remove what is left.
        listed = set(_run(["ip", "netns", "list"]).split())
        for nid in (made.made_nids if made else []):
            name = naming.overlay_netns(nid)
            if name in listed:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)
        left = spaces.close()  # deleting the namespace deletes the veth pair too
        keep = os.environ.get("PYNET_FUZZ_KEEP_LOG")
        if keep and plugin is not None and plugin.log_path.exists():
            shutil.copy(plugin.log_path, keep)
        shutil.rmtree(tmp, ignore_errors=True)
        assert not left, f"could not delete namespaces {left}"


@pytest.fixture(scope="module")
def scene(bed: Bed) -> Scene:
    """The live overlays, the fake host's good records, and the kernel they give."""
    bed.create_overlay(X)
    bed.create_endpoint(X)
    bed.create_endpoint(X)
    bed.create_overlay(Y)
    bed.create_endpoint(Y)
    peer = bed.peer
    for subnet in (X, Z):
        peer.join(subnet)
    good_ip = peer.claim(X)
    good_eid = peer.publish(X, good_ip, "02:42:0a:4d:aa:01")
    peer.publish(Z, peer.claim(Z), "02:42:0a:4f:aa:01")
    spare = peer.claim(X)
    junk = peer.claim(X)
    wait_until(lambda: bed.has_peer(X, good_ip, "02:42:0a:4d:aa:01", PEER_VTEP), SYNC,
               "the fake host's good endpoint programmed on X")
    read = bed.raw.get_json
    return Scene(
        space=SPACE, subnet=X, other_subnet=Y, foreign_subnet=Z, self_host=SELF, self_vtep=SELF_VTEP,
        peer_host=PEER, good_member=read(member_key(PEER, SPACE, X)),
        good_peer=read(peer_key(PEER, SPACE, X, good_eid)),
        self_member=read(member_key(SELF, SPACE, X)), other_member=read(member_key(SELF, SPACE, Y)),
        local=tuple((ip, mac) for _, ip, mac in bed.local[X]), spare_ip=spare, junk_claim_ip=junk)


# --- the checks --------------------------------------------------------------------------------
class Checker:
    def __init__(self, bed: Bed, scene: Scene) -> None:
        self.bed = bed
        self.scene = scene
        self.rounds = 0
        good = scene.good_peer
        wait_until(lambda: bed.has_peer(X, good["ip"], good["mac"], PEER_VTEP), SYNC,
                   "the fake host's good endpoint programmed on X")
        self.baseline = {s: bed.kernel(s) for s in (X, Y)}
        fdb, neigh = self.baseline[X]
        assert any(e[1] == good["mac"] and e[2] == PEER_VTEP for e in fdb), fdb
        assert any(n[1] == good["ip"] and n[2] == good["mac"] for n in neigh), neigh

    def canary(self, what: str) -> None:
        """A fresh good endpoint of the fake host reaches X's kernel, and leaves it again:
        the watcher synced past whatever is in the store now."""
        peer = self.bed.peer
        ip = peer.claim(X)
        mac = "02:42:0a:4d:cc:%02x" % (self.rounds % 256)
        eid = peer.publish(X, ip, mac)
        try:
            wait_until(lambda: self.bed.has_peer(X, ip, mac, PEER_VTEP), SYNC,
                       f"{what}: a new good peer programmed (the sync goes on)")
        finally:
            peer.withdraw(X, eid, ip)
        wait_until(lambda: self.bed.kernel(X) == self.baseline[X], SYNC,
                   f"{what}: X's entries back to exactly the good ones after the new peer left")

    def kernel_unchanged(self, what: str) -> None:
        for subnet in (X, Y):
            now = self.bed.kernel(subnet)
            want = self.baseline[subnet]
            assert now == want, (
                f"{what}: the kernel entries of {subnet} changed\n"
                f"  FDB added: {sorted(now[0] - want[0], key=str)}\n  FDB lost: {sorted(want[0] - now[0], key=str)}\n"
                f"  neigh added: {sorted(now[1] - want[1], key=str)}\n  neigh lost: {sorted(want[1] - now[1], key=str)}")

    def serves(self, what: str) -> None:
        assert self.bed.plugin.running(), f"{what}: pynet exited\n{self.bed.plugin.log_tail()}"
        self.rounds += 1
        self.bed.unrelated_overlay_round_trip(self.rounds)
        log = self.bed.new_log()
        assert "Traceback" not in log, f"{what}: a traceback in the plugin log:\n{log[-4000:]}"

    def all(self, what: str) -> None:
        self.canary(what)
        self.kernel_unchanged(what)
        self.serves(what)
        self.kernel_unchanged(what)

    def after_restart(self, what: str) -> None:
        self.bed.plugin.kill9()
        self.bed.plugin.start()
        self.all(f"{what}, after kill -9 and a restart")


def _batches(scene: Scene, seed: int) -> list[Batch]:
    rng = random.Random(seed)
    return hostile_records.handmade(scene) + [
        hostile_records.generated(rng, scene, GENERATED_PER_BATCH, i) for i in range(GENERATED_BATCHES)]


# --- the tests --------------------------------------------------------------------------------
class Thief:
    """A compromised host (valid member of X, VTEP THIEF_VTEP) that rewrites the shared address
    claims of `victims` to name itself and publishes peers with those addresses; undone on
    exit, and its entries gone before the next test takes its baseline."""

    MACS = ["02:42:0a:4d:ee:01", "02:42:0a:4d:ee:02"]

    def __init__(self, bed: Bed, victims: list[str]) -> None:
        self.bed = bed
        self.victims = victims
        self.store = ConsulStore(bed.consul.addr, prefix="pynet/")
        self.host = FakeHost(THIEF, THIEF_VTEP, self.store)
        self.taken: dict[str, bytes | None] = {}

    def __enter__(self) -> "Thief":
        self.host.join(X)
        for ip, mac in zip(self.victims, self.MACS, strict=False):
            key = addr_key(SPACE, X, ip)
            self.taken[key] = self.bed.raw.get(key)
            claim = json.loads(self.taken[key] or b"{}")
            assert self.bed.raw.put(key, {**claim, "host": THIEF})[0] == 200
            self.host.publish(X, ip, mac)
        # Its own member is good: its flood entry is expected. A second sync after it, had
        # the first taken only the member.
        wait_until(lambda: any(e[1] == "00:00:00:00:00:00" and e[2] == THIEF_VTEP
                               for e in self.bed.kernel(X)[0]), SYNC, "the thief's member programmed")
        time.sleep(2.0)
        return self

    def stolen(self) -> list:
        fdb, neigh = self.bed.kernel(X)
        return [e for e in fdb if e[1] in self.MACS] + [n for n in neigh if n[2] in self.MACS]

    def __exit__(self, *exc: object) -> None:
        for key, raw in self.taken.items():
            if raw is not None:
                self.bed.raw.put(key, raw)
        self.host.leave()
        self.store.close()
        wait_until(lambda: not any(e[2] == THIEF_VTEP for e in self.bed.kernel(X)[0]), SYNC,
                   "the thief's entries gone after it left")


def test_a_taken_over_claim_of_a_local_address_steals_nothing(bed: Bed, scene: Scene):
    """A compromised host rewrites the (shared) address claim of a local container to name
    itself, and publishes a peer with that address: no host programs it (a local address is
    never a remote peer's), and the local container's entries stay."""
    with Thief(bed, [scene.local[0][0]]) as thief:
        assert thief.stolen() == [], f"entries for the thief's MAC: {thief.stolen()}"
        assert not [n for n in bed.kernel(X)[1] if n[1] == scene.local[0][0]], \
            "a neighbour entry for a local address"


def test_a_taken_over_claim_of_a_remote_address_steals_nothing(bed: Bed, scene: Scene):
    """The same with the fake host's good endpoint's address: the good peer may be withdrawn
    (denial of service is within a compromised host's power), but no host should program
    the thief's MAC for that address."""
    with Thief(bed, [scene.good_peer["ip"]]) as thief:
        assert thief.stolen() == [], f"entries for the thief's MAC: {thief.stolen()}"


def test_bad_records_never_reach_the_kernel_nor_stop_pynet(bed: Bed, scene: Scene, fuzz_config, capsys):
    seed = fuzz_config["seed"]
    check = Checker(bed, scene)
    check.all("before any bad record")
    batches = _batches(scene, seed)
    started = time.monotonic()
    for batch in batches:
        what = f"seed {seed}, {batch.name}"
        before = bed.write(batch)
        try:
            check.all(what)
            check.after_restart(what)
        finally:
            bed.put_back(before)
    # Every batch at once: a restart, the checks, then X and Y go with Docker's own calls.
    held: dict[str, bytes | None] = {}
    try:
        for batch in batches:
            for key, value in bed.write(batch).items():
                held.setdefault(key, value)
        check.after_restart(f"seed {seed}, all {len(batches)} batches at once")
        for subnet in (X, Y):
            nid = bed.nets[subnet]
            for eid, ip, _ in bed.local[subnet]:
                bed.ok("NetworkDriver.Leave", {"NetworkID": nid, "EndpointID": eid})
                bed.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": nid, "EndpointID": eid})
                bed.ok("IpamDriver.ReleaseAddress", {"PoolID": bed.pools[subnet], "Address": ip})
            bed.ok("NetworkDriver.DeleteNetwork", {"NetworkID": nid})
            assert naming.overlay_netns(nid) not in _run(["ip", "netns", "list"]).split()
        assert "Traceback" not in bed.new_log()
    finally:
        bed.put_back(held)
    with capsys.disabled():
        print(f"\nhostile store: seed {seed}: {len(batches)} batches, "
              f"{sum(len(b.writes) for b in batches)} bad records, {time.monotonic() - started:.0f} s")
