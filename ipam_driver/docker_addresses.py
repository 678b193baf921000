"""Every address this host's dockerd says is in use, for the leak check (leaks.py).

Read from `GET /networks/{id}` of every network, whatever its drivers: container endpoints,
auxiliary addresses, gateways, and for swarm-scoped networks the services' VIPs and task
addresses. Taking more than pynet's own networks only ever keeps a claim, never frees one.
This runs on a background thread, never inside a plugin call (dockerd may be waiting on
pynet at that moment).
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any, Iterable

import docker
import requests

from .allocator import Address

log = logging.getLogger(__name__)

TIMEOUT = 10


class DockerAddresses:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._unreachable_logged = False

    def __call__(self) -> set[Address] | None:
        """The addresses in use, or None when dockerd cannot be asked (nothing is judged)."""
        try:
            # version="auto" asks dockerd for its API version, so connect per check: a
            # dockerd that was down when pynet started is found once it is up.
            with docker.APIClient(base_url=self.base_url, version="auto", timeout=TIMEOUT) as api:
                found: set[Address] = set()
                for summary in api.networks():
                    try:
                        info = api.inspect_network(summary["Id"], verbose=summary.get("Scope") == "swarm")
                    except docker.errors.NotFound:
                        continue  # removed since the list: its containers are gone too
                    found |= set(_addresses(info))
        except ValueError as exc:  # a half-understood answer: judge nothing rather than guess
            log.warning("leak check: dockerd at %s answered something pynet cannot read: %s",
                        self.base_url, exc)
            return None
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            if not self._unreachable_logged:
                log.warning("leak check: cannot ask dockerd at %s (%s); no address is released "
                            "until it answers", self.base_url, exc)
                self._unreachable_logged = True
            return None
        self._unreachable_logged = False
        return found


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
