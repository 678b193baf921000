"""The leak check: which claims it gives back, and above all which it never touches."""
import ipaddress

import pytest

from pynet.store import keys
from pynet.store.memory import MemoryStore
from ipam_driver.docker_addresses import DockerAddresses, _addresses
from ipam_driver.leaks import LeakCheck
from ipam_driver.service import IpamService
from tests.fakes.ipam_client import DockerIpam

GW = {"RequestAddressType": "com.docker.network.gateway"}
GRACE = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Bed:
    """Two hosts on one store, one pool; host h1 runs the leak check against `docker`."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.h1 = DockerIpam(IpamService(self.store, "h1", block_size=0))
        self.h2 = DockerIpam(IpamService(self.store, "h2", block_size=0))
        self.pool, _ = self.h1.request_pool("LocalDefault", "10.5.0.0/24", "", {}, False)
        self.h2.request_pool("LocalDefault", "10.5.0.0/24", "", {}, False)
        self.gateway = self.h1.request_address(self.pool, "", GW)
        self.docker: set | None = {ipaddress.ip_interface(self.gateway).ip}
        self.clock = Clock()
        self.check = LeakCheck(self.store, "h1", lambda: self.docker, self.h1.release_leaked,
                               grace=GRACE, clock=self.clock)

    def claim(self, svc: DockerIpam, address: str = "") -> str:
        return self.h1_ip(svc.request_address(self.pool, address, {}))

    @staticmethod
    def h1_ip(text: str) -> str:
        return str(ipaddress.ip_interface(text).ip)

    def claimed(self) -> set[str]:
        return {keys.claimed_address(e.key) for e in self.store.list(keys.ipam_addrs_all())}

    def in_docker(self, *ips: str) -> None:
        assert self.docker is not None
        self.docker |= {ipaddress.ip_address(ip) for ip in ips}

    def after(self, seconds: float) -> list[str]:
        self.clock.now += seconds
        return [keys.claimed_address(k) for k in self.check.check_once()]


@pytest.fixture
def bed() -> Bed:
    return Bed()


def test_a_claim_unknown_to_docker_is_released_only_after_the_grace(bed):
    leaked = bed.claim(bed.h1)
    used = bed.claim(bed.h1)
    bed.in_docker(used)
    assert bed.after(0) == []
    assert bed.after(GRACE - 1) == [] and leaked in bed.claimed()
    assert bed.after(1) == [leaked]
    assert bed.claimed() == {bed.h1_ip(bed.gateway), used}


def test_docker_listing_the_address_once_restarts_the_grace(bed):
    ip = bed.claim(bed.h1)
    bed.after(0)
    bed.after(GRACE - 10)
    bed.in_docker(ip)  # CreateEndpoint arrived late: the container now uses it
    assert bed.after(5) == []
    bed.docker.discard(ipaddress.ip_address(ip))  # gone again, without a release reaching pynet
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


def test_other_hosts_claims_and_gateways_are_never_released(bed):
    theirs = bed.claim(bed.h2)
    bed.docker = set()  # this host's dockerd knows nothing, not even the gateway
    bed.after(0)
    assert bed.after(10 * GRACE) == []
    assert bed.claimed() == {bed.h1_ip(bed.gateway), theirs}


def test_nothing_is_released_while_docker_cannot_be_asked(bed):
    ip = bed.claim(bed.h1)
    bed.after(0)
    bed.docker = None
    assert bed.after(10 * GRACE) == [] and ip in bed.claimed()


def test_a_claim_that_changed_between_read_and_release_is_left_alone(bed):
    ip = bed.claim(bed.h1)
    bed.after(0)
    bed.clock.now += GRACE
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
