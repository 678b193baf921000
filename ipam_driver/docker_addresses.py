"""What one dockerd says about its networks, for the leak check (leaks.py): a DockerView.

The leak check may only conclude "unused" from evidence that is there: Docker knows a network
on the pool and that network's address list lacks the address. Evidence that is merely
absent proves nothing (a dockerd that knows nothing, a network it could not read), so the
view records, besides every address in use, which pools it can judge:

- `judged`: subnets of networks whose IPAM driver is pynet and whose inspect (containers,
  gateway, aux addresses; for swarm networks with verbose=true, service VIPs and task
  addresses) was read completely;
- `unsure`: subnets of any network that could not be read completely this round: nothing in
  a pool overlapping them is judged;
- `subnets`: every subnet any network lists, whatever its IPAM driver: a pool overlapping
  one of them is known to Docker and is never taken for leaked;
- `pynet_subnets`: subnets of every pynet-IPAM network listed, read completely or not: a
  dockerd that has none of this host's pools is not provably this host's dockerd.

Addresses of every network count, whatever its drivers: more only ever keeps a claim.
This runs on a background thread, never inside a plugin call (dockerd may be waiting on
pynet at that moment).
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, replace
from typing import Any, Iterable

import docker
import requests

from .allocator import Address, Network

log = logging.getLogger(__name__)

TIMEOUT = 10


@dataclass(frozen=True, slots=True)
class DockerView:
    docker_host: str
    in_use: frozenset[Address]
    judged: frozenset[Network]
    unsure: frozenset[Network]
    subnets: frozenset[Network]
    pynet_subnets: frozenset[Network] = frozenset()
    # A network listed whose subnets are not known either: no pool can be judged this round.
    blind: bool = False
    # The dockerd's engine ID (pynet_core/docker_proof.py): "" when unknown.
    engine: str = ""
    # Its Swarm state (`docker info` Swarm.LocalNodeState: "inactive" when not in a swarm,
    # "active", "pending", ...); "" when unknown. Only outside a swarm are the global
    # address space's claims this dockerd's own (leaks.py).
    swarm: str = ""

    @property
    def outside_swarm(self) -> bool:
        return self.swarm == "inactive"

    def judges(self, pool: Network) -> bool:
        """Whether an address of pool missing from `in_use` is evidence that it is unused."""
        return (not self.blind and pool in self.judged
                and not any(pool.overlaps(u) for u in self.unsure))

    def knows(self, pool: Network) -> bool:
        """Whether Docker might be using pool (any network on or overlapping it)."""
        return self.blind or any(pool.overlaps(n) for n in self.subnets | self.unsure)

    def knows_pynet_pool(self, pools: Iterable[Network]) -> bool:
        """Whether this dockerd is provably the one using pynet here: it has a pynet-IPAM
        network on one of these pools (read completely or not)."""
        return any(p in self.pynet_subnets for p in pools)


def is_pynet(ipam_driver: str, name: str) -> bool:
    """Whether Docker's IPAM driver name is this plugin: NAME, or a managed plugin's
    [REPO/]NAME:TAG."""
    return ipam_driver == name or ipam_driver.rsplit("/", 1)[-1].split(":", 1)[0] == name


class DockerAddresses:
    def __init__(self, base_url: str, ipam_driver: str = "pynet") -> None:
        self.base_url = base_url
        self.ipam_driver = ipam_driver
        self._unreachable_logged = False

    def __call__(self) -> DockerView | None:
        """What dockerd says, or None when it cannot be asked (nothing is judged)."""
        try:
            # version="auto" asks dockerd for its API version, so connect per check: a
            # dockerd that was down when pynet started is found once it is up.
            with docker.APIClient(base_url=self.base_url, version="auto", timeout=TIMEOUT) as api:
                info = api.info()
                swarm = (info.get("Swarm") or {}).get("LocalNodeState") or ""
                view = replace(self._read(api), engine=str(info.get("ID") or ""), swarm=str(swarm))
        except (docker.errors.DockerException, requests.RequestException, OSError, ValueError) as exc:
            if not self._unreachable_logged:
                log.warning("leak check: cannot ask dockerd at %s (%s); nothing is released "
                            "until it answers", self.base_url, exc)
                self._unreachable_logged = True
            return None
        self._unreachable_logged = False
        return view

    def _read(self, api: docker.APIClient) -> DockerView:
        in_use: set[Address] = set()
        judged: set[Network] = set()
        unsure: set[Network] = set()
        subnets: set[Network] = set()
        pynet_subnets: set[Network] = set()
        blind = False
        for summary in api.networks():
            listed = _subnets(summary)
            if listed and self._is_pynet(summary):
                pynet_subnets |= listed
            try:
                info = api.inspect_network(summary["Id"], verbose=summary.get("Scope") == "swarm")
                found = set(_addresses(info))
                own = _subnets(info)
                if own is None:
                    raise ValueError("its IPAM config lists no readable subnets")
            except docker.errors.NotFound:
                continue  # removed since the list: its containers are gone too
            except (docker.errors.DockerException, requests.RequestException, ValueError,
                    KeyError, TypeError, AttributeError) as exc:
                log.warning("leak check: could not read network %s of dockerd at %s (%s); "
                            "nothing in its pools is judged this round",
                            summary.get("Id", "?"), self.base_url, exc)
                if listed is None:
                    blind = True
                else:
                    unsure |= listed
                continue
            in_use |= found
            subnets |= own
            if self._is_pynet(info):
                judged |= own
                pynet_subnets |= own
        return DockerView(self.base_url, frozenset(in_use), frozenset(judged), frozenset(unsure),
                          frozenset(subnets), frozenset(pynet_subnets), blind)

    def _is_pynet(self, info: dict[str, Any]) -> bool:
        ipam = info.get("IPAM") if isinstance(info, dict) else None
        driver = ipam.get("Driver") if isinstance(ipam, dict) else None
        return isinstance(driver, str) and is_pynet(driver, self.ipam_driver)


def _subnets(info: dict[str, Any]) -> set[Network] | None:
    """The subnets a network's IPAM config lists; None when they cannot be read."""
    try:
        configs = (info.get("IPAM") or {}).get("Config") or []
        return {ipaddress.ip_network(c["Subnet"], strict=False) for c in configs if c.get("Subnet")}
    except (ValueError, TypeError, AttributeError, KeyError):
        return None


def _addresses(info: dict[str, Any]) -> Iterable[Address]:
    for endpoint in (info.get("Containers") or {}).values():
        yield from _parse(endpoint.get("IPv4Address"), endpoint.get("IPv6Address"))
    for config in (info.get("IPAM") or {}).get("Config") or []:
        yield from _parse(config.get("Gateway"), *(config.get("AuxiliaryAddresses") or {}).values())
    for service in (info.get("Services") or {}).values():
        yield from _parse(service.get("VIP"), *(t.get("EndpointIP") for t in service.get("Tasks") or []))


def _parse(*texts: str | None) -> Iterable[Address]:
    for text in texts:
        if not text:
            continue
        try:
            yield ipaddress.ip_interface(text).ip
        except ValueError:
            raise ValueError(f"address {text!r}") from None
