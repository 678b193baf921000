"""The leak check: which claims and holds it gives back, and above all which it never touches:
nothing on the word of a dockerd that knows nothing, nothing in a pool no network of Docker
was read on completely, nothing changed since it was first seen."""
import ipaddress
import json
import logging

import docker
import pytest

from ipam_driver.docker_addresses import DockerAddresses, DockerView, _addresses
from ipam_driver.leaks import AddressLeakCheck
from ipam_driver.service import IpamService
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from tests.fakes.ipam_client import DockerIpam

GW = {"RequestAddressType": "com.docker.network.gateway"}
GRACE = 300.0
SUBNET = "10.5.0.0/24"
net = ipaddress.ip_network


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def view(in_use=(), pynet=(SUBNET,), unsure=(), other=(), host="unix:///run/docker.sock",
         swarm="inactive") -> DockerView:
    """What a dockerd says: pynet networks on `pynet` (read completely), other networks on
    `other`, networks that could not be read on `unsure`."""
    pynet_nets = frozenset(net(s) for s in pynet)
    unsure_nets = frozenset(net(s) for s in unsure)
    return DockerView(host, frozenset(ipaddress.ip_address(a) for a in in_use), pynet_nets,
                      unsure_nets, pynet_nets | frozenset(net(s) for s in other),
                      pynet_nets | unsure_nets, swarm=swarm)


class Bed:
    """Two hosts on one store, one pool; host h1 runs the leak check against `docker`."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.h1 = DockerIpam(IpamService(self.store, "h1", block_size=0))
        self.h2 = DockerIpam(IpamService(self.store, "h2", block_size=0))
        self.pool, _ = self.h1.request_pool("LocalDefault", SUBNET, "", {}, False)
        self.pool2, _ = self.h2.request_pool("LocalDefault", SUBNET, "", {}, False)
        self.gateway = self.h1_ip(self.h1.request_address(self.pool, "", GW))
        self.used = {self.gateway}
        self.docker: DockerView | None = None
        self.docker_says(view(self.used))
        self.clock = Clock()
        self.check = AddressLeakCheck(self.store, "h1", lambda: self.docker, self.h1.service,
                               grace=GRACE, clock=self.clock)

    def docker_says(self, v: DockerView | None) -> None:
        self.docker = v

    def claim(self, svc: DockerIpam, address: str = "", pool=None) -> str:
        pool = pool or (self.pool if svc is self.h1 else self.pool2)
        return self.h1_ip(svc.request_address(pool, address, {}))

    @staticmethod
    def h1_ip(text: str) -> str:
        return str(ipaddress.ip_interface(text).ip)

    def claimed(self, subnet: str = SUBNET) -> set[str]:
        return {keys.claimed_address(e.key) for e in self.store.list(keys.ipam_addrs("LocalDefault", subnet))}

    def holders(self, subnet: str = SUBNET) -> dict:
        entry = self.store.get(keys.ipam_space("LocalDefault"))
        pools = json.loads(entry.value)["pools"] if entry else {}
        return pools.get(subnet, {}).get("holders", {})

    def in_docker(self, *ips: str) -> None:
        self.used |= set(ips)
        self.docker_says(view(self.used))

    def after(self, seconds: float) -> list[str]:
        self.clock.now += seconds
        return [k if k.startswith("pool ") else keys.claimed_address(k) for k in self.check.check_once()]


@pytest.fixture
def bed() -> Bed:
    return Bed()


# --- addresses ----------------------------------------------------------------------------
def test_a_claim_unknown_to_docker_is_released_only_after_the_grace(bed):
    leaked = bed.claim(bed.h1)
    used = bed.claim(bed.h1)
    bed.in_docker(used)
    assert bed.after(0) == []
    assert bed.after(GRACE - 1) == [] and leaked in bed.claimed()
    assert bed.after(1) == [leaked]
    assert bed.claimed() == {bed.gateway, used}


def test_docker_listing_the_address_once_restarts_the_grace(bed):
    ip = bed.claim(bed.h1)
    bed.after(0)
    bed.after(GRACE - 10)
    bed.in_docker(ip)  # CreateEndpoint arrived late: the container now uses it
    assert bed.after(5) == []
    bed.used.discard(ip)  # gone again, without a release reaching pynet
    bed.docker_says(view(bed.used))
    assert bed.after(5) == []  # missed again: the grace starts here
    assert bed.after(GRACE - 1) == []
    assert bed.after(1) == [ip]


def test_a_claim_made_again_meanwhile_is_a_new_claim_with_its_own_grace(bed):
    ip = bed.claim(bed.h1)
    bed.after(0)
    bed.h1.release_address(bed.pool, ip)
    assert bed.claim(bed.h1, ip) == ip  # the same address, claimed anew
    assert bed.after(GRACE) == []  # the first sighting of the old claim does not count
    assert bed.after(GRACE) == [ip]


def test_an_empty_dockerd_releases_nothing_and_says_so_once(bed, caplog):
    ip = bed.claim(bed.h1)
    bed.docker_says(view(pynet=()))  # --docker-host names a dockerd that knows nothing
    with caplog.at_level(logging.WARNING, logger="ipam_driver.leaks"):
        for _ in range(5):
            assert bed.after(GRACE) == []
    assert ip in bed.claimed() and bed.holders() == {"h1": 1, "h2": 1}
    said = [r.getMessage() for r in caplog.records if "knows none" in r.getMessage()]
    assert len(said) == 1 and "unix:///run/docker.sock" in said[0] and "h1" in said[0]


def test_a_dockerd_knowing_only_other_drivers_networks_on_the_pool_proves_nothing(bed):
    ip = bed.claim(bed.h1)
    bed.docker_says(view(pynet=(), other=(SUBNET,)))  # Docker's own IPAM on the same subnet
    assert bed.after(0) == [] and bed.after(10 * GRACE) == []
    assert ip in bed.claimed()


def test_a_claim_is_judged_only_against_a_network_on_its_own_pool(bed):
    other, _ = bed.h1.request_pool("LocalDefault", "10.6.0.0/24", "", {}, False)
    ip = bed.claim(bed.h1, pool=other)
    # dockerd knows the first pool, but has no network on 10.6.0.0/24 it could read fully.
    bed.docker_says(view(bed.used, unsure=("10.6.0.0/24",)))
    assert bed.after(0) == [] and bed.after(10 * GRACE) == []
    assert ip in bed.claimed("10.6.0.0/24")


def test_a_network_not_read_completely_judges_nothing_in_its_pool(bed):
    ip = bed.claim(bed.h1)
    bed.after(0)
    bed.docker_says(view(bed.used, unsure=(SUBNET,)))  # one network on the pool failed to read
    assert bed.after(GRACE) == []
    bed.docker_says(view(bed.used))
    assert bed.after(0) == []  # the grace starts again from evidence, not from the gap
    assert bed.after(GRACE) == [ip]


def test_other_hosts_claims_and_a_held_pools_gateway_are_never_released(bed):
    theirs = bed.claim(bed.h2)
    bed.docker_says(view(()))  # knows the pool's network, and no address in it
    bed.after(0)
    assert bed.after(10 * GRACE) == []
    assert bed.claimed() == {bed.gateway, theirs}


def test_nothing_is_released_while_docker_cannot_be_asked(bed):
    ip = bed.claim(bed.h1)
    bed.after(0)
    bed.docker_says(None)
    assert bed.after(10 * GRACE) == [] and ip in bed.claimed()


def test_a_claim_that_changed_between_read_and_release_is_left_alone(bed):
    ip = bed.claim(bed.h1)
    entry = next(e for e in bed.store.list(keys.ipam_addrs_all()) if e.key.endswith("/" + ip))
    bed.h1.release_address(bed.pool, ip)
    bed.claim(bed.h1, ip)  # someone's new claim on the same key
    assert bed.h1.release_leaked(entry) is False
    assert ip in bed.claimed()


def test_released_addresses_are_handed_out_again(bed):
    ip = bed.claim(bed.h1)
    bed.after(0)
    bed.after(GRACE)
    assert bed.claim(bed.h1) == ip


# --- pools and gateways ---------------------------------------------------------------------
def test_a_pool_hold_leaked_while_pynet_was_down_is_reclaimed_with_its_claims(bed):
    other, _ = bed.h1.request_pool("LocalDefault", "10.6.0.0/24", "", {}, False)
    bed.h1.request_address(other, "", GW)
    ip = bed.claim(bed.h1, pool=other)
    # `docker network rm` while pynet was down: Docker forgot the network, pynet holds it.
    assert bed.after(0) == []
    assert bed.after(GRACE - 1) == []
    assert bed.after(1) == ["pool LocalDefault/10.6.0.0/24"]
    assert bed.holders("10.6.0.0/24") == {} and bed.claimed("10.6.0.0/24") == set()
    assert ip and bed.holders() == {"h1": 1, "h2": 1}  # the pool Docker knows is untouched


def test_a_shared_pool_loses_only_this_hosts_hold_its_claims_and_its_gateway_hold(bed):
    ip = bed.claim(bed.h1)
    theirs = bed.claim(bed.h2)
    bed.h2.request_address(bed.pool2, "", GW)  # h2 shares the gateway
    keep, _ = bed.h1.request_pool("LocalDefault", "10.6.0.0/24", "", {}, False)
    bed.docker_says(view(pynet=("10.6.0.0/24",)))  # proves itself h1's; SUBNET is gone from it
    bed.after(0)
    assert bed.after(GRACE) == [f"pool LocalDefault/{SUBNET}"]
    assert bed.holders() == {"h2": 1}
    assert bed.claimed() == {bed.gateway, theirs} and ip not in bed.claimed()
    gateway = bed.store.get(keys.ipam_addr("LocalDefault", SUBNET, bed.gateway))
    assert json.loads(gateway.value)["holders"] == ["h2"]


def test_a_pool_any_network_of_docker_overlaps_is_never_reclaimed(bed):
    bed.h1.request_pool("LocalDefault", "10.6.0.0/24", "", {}, False)
    bed.docker_says(view(bed.used, other=("10.6.0.0/16",)))
    bed.after(0)
    assert bed.after(10 * GRACE) == []
    assert bed.holders("10.6.0.0/24") == {"h1": 1}


def test_a_pool_on_a_network_that_could_not_be_read_is_never_reclaimed(bed):
    bed.h1.request_pool("LocalDefault", "10.6.0.0/24", "", {}, False)
    bed.docker_says(view(bed.used, unsure=("10.6.0.0/24",)))
    bed.after(0)
    assert bed.after(10 * GRACE) == []
    assert bed.holders("10.6.0.0/24") == {"h1": 1}


def test_a_pool_held_again_meanwhile_is_a_new_suspect(bed):
    first, _ = bed.h1.request_pool("GlobalDefault", "10.6.0.0/24", "", {}, False)
    bed.after(0)
    bed.clock.now += GRACE - 1
    bed.h1.request_pool("GlobalDefault", "10.6.0.0/24", "", {}, False)  # a network on its way
    assert bed.after(1) == []  # not the holds first seen: judged afresh
    entry = json.loads(bed.store.get(keys.ipam_space("GlobalDefault")).value)["pools"]["10.6.0.0/24"]
    assert entry["holders"] == {"h1": 2} and first.hold in entry["holds"]


def test_a_gateway_hold_left_after_the_pool_went_is_given_back(bed):
    bed.h1.release_pool(bed.pool)  # ReleasePool reached pynet; the gateway's ReleaseAddress did not
    bed.h2.request_address(bed.pool2, "", GW)
    keep, _ = bed.h1.request_pool("LocalDefault", "10.6.0.0/24", "", {}, False)
    bed.docker_says(view(pynet=("10.6.0.0/24",)))
    bed.after(0)
    assert bed.after(GRACE) == [bed.gateway]
    gateway = bed.store.get(keys.ipam_addr("LocalDefault", SUBNET, bed.gateway))
    assert json.loads(gateway.value)["holders"] == ["h2"]


# --- what dockerd says --------------------------------------------------------------------
def test_docker_addresses_cover_containers_aux_gateways_and_swarm_services():
    info = {
        "Containers": {"e1": {"IPv4Address": "10.5.0.3/24", "IPv6Address": "fd00::3/64"},
                       "e2": {"IPv4Address": "", "IPv6Address": ""}},
        "IPAM": {"Config": [{"Subnet": "10.5.0.0/24", "Gateway": "10.5.0.1",
                             "AuxiliaryAddresses": {"router": "10.5.0.250"}}]},
        "Services": {"web": {"VIP": "10.5.0.9", "Tasks": [{"EndpointIP": "10.5.0.10"}]}},
    }
    found = {str(a) for a in _addresses(info)}
    assert found == {"10.5.0.3", "fd00::3", "10.5.0.1", "10.5.0.250", "10.5.0.9", "10.5.0.10"}


def test_an_unreadable_docker_address_is_an_error_not_a_gap():
    with pytest.raises(ValueError, match="not-an-ip"):
        list(_addresses({"Containers": {"e": {"IPv4Address": "not-an-ip"}}}))


def test_an_unreachable_dockerd_means_no_judgement(tmp_path):
    assert DockerAddresses(f"unix://{tmp_path}/no-such-docker.sock")() is None


class FakeAPI:
    """docker.APIClient's network calls, answering from a table (inspect raising: `fail`)."""

    def __init__(self, nets: dict, fail: set = frozenset()) -> None:
        self.nets, self.fail = nets, fail

    def networks(self):
        return [{"Id": i, "Scope": n.get("Scope", "local"), "IPAM": n["IPAM"]} for i, n in self.nets.items()]

    def inspect_network(self, nid, verbose=False):
        if nid in self.fail:
            raise docker.errors.APIError("500 Server Error: context deadline exceeded")
        return self.nets[nid]


def _net(driver: str, subnet: str, *ips: str) -> dict:
    return {"IPAM": {"Driver": driver, "Config": [{"Subnet": subnet}]},
            "Containers": {f"e{i}": {"IPv4Address": f"{ip}/24"} for i, ip in enumerate(ips)}}


def test_the_view_judges_only_pynet_networks_read_completely():
    api = FakeAPI({"a": _net("pynet", "10.1.0.0/24", "10.1.0.2"),
                   "b": _net("default", "10.2.0.0/24", "10.2.0.2"),
                   "c": _net("pynet", "10.3.0.0/24", "10.3.0.2"),
                   "d": _net("myrepo/pynet:latest", "10.4.0.0/24")}, fail={"c"})
    seen = DockerAddresses("unix:///x.sock", ipam_driver="pynet")._read(api)
    assert seen.judges(net("10.1.0.0/24")) and seen.judges(net("10.4.0.0/24"))
    assert not seen.judges(net("10.2.0.0/24"))  # Docker's own IPAM: no evidence about pynet's claims
    assert not seen.judges(net("10.3.0.0/24")) and seen.knows(net("10.3.0.0/24"))  # unread
    assert seen.knows(net("10.2.0.0/24")) and not seen.knows(net("10.9.0.0/24"))
    assert seen.knows_pynet_pool([net("10.3.0.0/24")])  # listed with pynet IPAM, even unread
    assert not seen.knows_pynet_pool([net("10.2.0.0/24")])
    assert {str(a) for a in seen.in_use} == {"10.1.0.2", "10.2.0.2"}


def test_a_network_whose_pools_are_unknown_and_unread_blinds_the_whole_round():
    api = FakeAPI({"a": _net("pynet", "10.1.0.0/24"), "b": {"IPAM": {"Config": [{"Subnet": "?"}]}}},
                  fail={"b"})
    seen = DockerAddresses("unix:///x.sock")._read(api)
    assert not seen.judges(net("10.1.0.0/24")) and seen.knows(net("10.9.0.0/24"))


# --- Swarm: the global address space ----------------------------------------------------
@pytest.mark.parametrize("swarm_state", ["active", "pending", ""])
def test_swarm_claims_in_the_global_space_are_never_judged_against_this_dockerd(swarm_state):
    """A Swarm manager's pynet claims every task, VIP and load-balancer address of a
    swarm network in GlobalDefault, for tasks on every node; its dockerd lists only its own
    node's containers, so neither the addresses nor the pool may be taken for leaked. The
    same network's claims on this node (the local space) are judged as usual."""
    store = MemoryStore()
    manager = DockerIpam(IpamService(store, "h1", block_size=0))
    swarm_pool, _ = manager.request_pool("GlobalDefault", "10.60.0.0/24", "", {}, False)
    swarm_gw = Bed.h1_ip(manager.request_address(swarm_pool, "", GW))
    tasks = {Bed.h1_ip(manager.request_address(swarm_pool, "", {})) for _ in range(3)}
    node_pool, _ = manager.request_pool("LocalDefault", SUBNET, "", {}, False)
    node_gw = Bed.h1_ip(manager.request_address(node_pool, "", GW))
    stray = Bed.h1_ip(manager.request_address(node_pool, "", {}))
    clock = Clock()
    # The dockerd knows the local pool (the proof) and nothing of the swarm's addresses;
    # as a manager after the network's removal it would not even list the swarm subnet.
    docker = view(in_use=(node_gw,), pynet=(SUBNET,), swarm=swarm_state)
    check = AddressLeakCheck(store, "h1", lambda: docker, manager.service, grace=GRACE, clock=clock)
    released = []
    for _ in range(3):
        released += check.check_once()
        clock.now += GRACE
    swarm_claims = {keys.claimed_address(e.key) for e in store.list(keys.ipam_addrs("GlobalDefault", "10.60.0.0/24"))}
    assert swarm_claims == tasks | {swarm_gw}
    assert "10.60.0.0/24" in json.loads(store.get(keys.ipam_space("GlobalDefault")).value)["pools"]
    assert [keys.claimed_address(k) for k in released] == [stray]


def test_outside_a_swarm_the_global_space_is_judged_like_the_local_one():
    """A global-scope plugin on a dockerd in no swarm: Docker puts its networks in the
    global space, and they are that dockerd's alone."""
    store = MemoryStore()
    ipam = DockerIpam(IpamService(store, "h1", block_size=0))
    pool, _ = ipam.request_pool("GlobalDefault", SUBNET, "", {}, False)
    gateway = Bed.h1_ip(ipam.request_address(pool, "", GW))
    used, leaked = (Bed.h1_ip(ipam.request_address(pool, "", {})) for _ in range(2))
    clock = Clock()
    docker = view(in_use=(gateway, used), swarm="inactive")
    check = AddressLeakCheck(store, "h1", lambda: docker, ipam.service, grace=GRACE, clock=clock)
    assert check.check_once() == []
    clock.now += GRACE
    assert [keys.claimed_address(k) for k in check.check_once()] == [leaked]
