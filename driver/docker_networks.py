"""What this host's dockerd says about its networks, for driver/leaks.py: its engine ID and,
per network, the endpoint IDs. Runs on a background thread, never inside a plugin call
(dockerd may be waiting on pynet at that moment)."""
from __future__ import annotations

import logging

import docker
import requests

from .leaks import DockerNetworks

log = logging.getLogger(__name__)

TIMEOUT = 10


class DockerNetworkList:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def __call__(self) -> DockerNetworks | None:
        """None when dockerd cannot be asked or answers what cannot be read: judge nothing."""
        try:
            # version="auto" asks dockerd for its API version, so connect per check: a
            # dockerd that was down when pynet started is found once it is up.
            with docker.APIClient(base_url=self.base_url, version="auto", timeout=TIMEOUT) as api:
                engine = api.info()["ID"]
                networks: dict[str, frozenset[str] | None] = {}
                for summary in api.networks():
                    try:
                        info = api.inspect_network(summary["Id"])
                        networks[summary["Id"]] = frozenset(
                            c["EndpointID"] for c in (info.get("Containers") or {}).values())
                    except (docker.errors.NotFound, KeyError, TypeError, AttributeError):
                        networks[summary["Id"]] = None  # listed but unread: keep its endpoints
            if not engine:
                return None
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("network leak check: dockerd at %s answered something pynet cannot read: %s",
                        self.base_url, exc)
            return None
        except (docker.errors.DockerException, requests.RequestException, OSError):
            return None  # the leak check already says, once, that dockerd cannot be asked
        return DockerNetworks(str(engine), networks)
