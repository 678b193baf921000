"""A pool a crash leaked after the last pynet network went is reclaimed (found by the crash
storm): pynet killed inside RequestPool after the hold was written, Docker's retry carries an
empty body, `docker network create` fails and Docker never releases a pool it never got. With
no pynet network left in Docker the leak check had no proof that its dockerd is this host's,
so the hold, and its subnet, stayed taken for good. The proof now also holds for a dockerd
with the engine ID once seen knowing this host's pools (pynet_core/docker_proof.py); another or an
empty dockerd still proves nothing."""
from __future__ import annotations

import ipaddress

from ipam_driver.docker_addresses import DockerView
from ipam_driver.leaks import AddressLeakCheck
from ipam_driver.service import IpamService
from pynet_core.store.memory import MemoryStore
from tests.fakes.ipam_client import DockerIpam

GW = {"RequestAddressType": "com.docker.network.gateway"}
GRACE = 300.0
SUBNET, LEAKED = "10.5.0.0/24", "10.6.0.0/24"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def view(in_use=(), pynet=(SUBNET,), engine="engine-1") -> DockerView:
    """A dockerd with pynet networks on `pynet`, read completely, using `in_use`."""
    nets = frozenset(ipaddress.ip_network(s) for s in pynet)
    return DockerView("unix:///run/docker.sock", frozenset(ipaddress.ip_address(a) for a in in_use),
                      nets, frozenset(), nets, nets, engine=engine)


def bed():
    store = MemoryStore()
    ipam = DockerIpam(IpamService(store, "h1", block_size=0))
    pool, _ = ipam.request_pool("LocalDefault", SUBNET, "", {}, False)
    ipam.request_address(pool, "", GW)
    leaked, _ = ipam.request_pool("LocalDefault", LEAKED, "", {}, False)  # its answer lost
    says = [view(["10.5.0.1"])]
    clock = Clock()
    check = AddressLeakCheck(store, "h1", lambda: says[0], ipam.service, grace=GRACE, clock=clock)
    return check, says, clock


def test_a_pool_leaked_after_the_last_network_went_is_reclaimed_by_the_same_dockerd():
    check, says, clock = bed()
    assert check.check_once() == []  # proven: it knows SUBNET; the clock starts for LEAKED
    says[0] = view(pynet=())  # `docker network rm` of the last one
    clock.now += GRACE
    assert check.check_once() == [f"pool LocalDefault/{LEAKED}"]
    clock.now += GRACE  # the network's own pool, unknown since its `docker network rm` went astray
    assert check.check_once() == [f"pool LocalDefault/{SUBNET}"]


def test_another_or_an_empty_dockerd_still_proves_nothing():
    check, says, clock = bed()
    for engine in ("engine-2", ""):
        says[0] = view(pynet=(), engine=engine)
        for _ in range(3):
            assert check.check_once() == []
            clock.now += GRACE
