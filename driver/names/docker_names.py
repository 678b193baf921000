"""What this host's dockerd says of its running containers, for the names (local.py), and
its event stream, which says when to look again. Runs on background threads, never inside
a plugin call (dockerd may be waiting on pynet at that moment)."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import docker
import requests

log = logging.getLogger(__name__)

TIMEOUT = 10
GWBRIDGE = "docker_gwbridge"
# What changes a name or an address: a container starting, stopping, going or renamed, and
# a network connected or disconnected (also `docker network connect --alias`); a network
# made or gone changes the bridges the DNS firewall lets queries in from.
EVENTS = {"type": ["container", "network"],
          "event": ["start", "die", "destroy", "rename", "connect", "disconnect", "create"]}
STREAM_SECONDS = 5  # each event stream ends after this, so a stop is seen soon


class DockerNames:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._warned = False
        # The Linux bridge of Docker's docker_gwbridge network (its bridge.name option; a
        # test dockerd names it otherwise), as last read.
        self.gwbridge = GWBRIDGE
        self._api: Any = None  # the client of read(), kept between looks
        # (container id, its endpoint ids) -> network name -> {"Aliases", "DNSNames"}: what
        # inspect said (an endpoint's aliases are fixed while it exists).
        self._aliases: dict[tuple[str, tuple[str, ...]], dict[str, dict[str, Any]]] = {}

    def read(self) -> tuple[list[dict[str, Any]], dict[str, list[str]]] | None:
        """(running containers as dockerd lists them, docker_gwbridge's addresses by
        container id); None when dockerd cannot be asked."""
        try:
            # version="auto": one client reaches 20.10 to 29 (test_docker_api_version.py). It
            # is kept between looks (the version is asked once, not at every event) and made
            # anew after any failure (a dockerd restarted, perhaps upgraded).
            if self._api is None:
                self._api = docker.APIClient(base_url=self.base_url, version="auto",
                                             timeout=TIMEOUT)
            api = self._api
            containers = [c for c in api.containers() or [] if isinstance(c, dict)]
            containers = self._with_aliases(api, containers)
            try:
                gwbridge = api.inspect_network(GWBRIDGE)
            except docker.errors.NotFound:
                gwbridge = {}
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            self._drop_client()
            if not self._warned:
                log.warning("names: dockerd at %s cannot be asked (%s); names are read again "
                            "once it answers", self.base_url, exc)
                self._warned = True
            return None
        self._warned = False
        self.gwbridge = bridge_name(gwbridge)
        return containers, gateway_addresses(gwbridge)

    def _drop_client(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            try:
                api.close()
            except Exception:  # noqa: BLE001 - a broken client is dropped whatever it says
                pass

    def _with_aliases(self, api: Any, containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The list entries with each network's Aliases and DNSNames added: the container
        list leaves them out (moby's container view copies only ids and addresses), so each
        container is inspected once per set of endpoints."""
        found: list[dict[str, Any]] = []
        kept: dict[tuple[str, tuple[str, ...]], dict[str, dict[str, Any]]] = {}
        for summary in containers:
            networks = ((summary.get("NetworkSettings") or {}).get("Networks") or {}) \
                if isinstance(summary.get("NetworkSettings"), dict) else {}
            if not isinstance(networks, dict):
                continue
            cid = summary.get("Id")
            sig = (str(cid), tuple(sorted(str(ep.get("EndpointID")) for ep in networks.values()
                                          if isinstance(ep, dict))))
            extra = self._aliases.get(sig)
            if extra is None:
                try:
                    info = api.inspect_container(cid)
                except docker.errors.NotFound:
                    continue  # gone since the listing
                extra = endpoint_names(info)
            kept[sig] = extra
            merged = {name: {**ep, **extra.get(name, {})} if isinstance(ep, dict) else ep
                      for name, ep in networks.items()}
            found.append({**summary, "NetworkSettings": {"Networks": merged}})
        self._aliases = kept
        return found

    def follow(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        """Call `changed()` for every event that may change a name, until `stop`."""
        since = int(time.time())
        while not stop.is_set():
            until = int(time.time()) + STREAM_SECONDS
            try:
                with docker.APIClient(base_url=self.base_url, version="auto",
                                      timeout=STREAM_SECONDS + TIMEOUT) as api:
                    for _ in api.events(since=since, until=until, filters=EVENTS, decode=True):
                        changed()
                        if stop.is_set():
                            return
                since = until
            except (docker.errors.DockerException, requests.RequestException, OSError):
                changed()  # whatever was missed is read by the next look
                stop.wait(1.0)
                since = int(time.time())


def gateway_addresses(info: Any) -> dict[str, list[str]]:
    """docker_gwbridge's `Containers` (container id -> its endpoint there) as container id ->
    its addresses there (CIDR prefixes dropped)."""
    found: dict[str, list[str]] = {}
    containers = info.get("Containers") if isinstance(info, dict) else None
    if not isinstance(containers, dict):
        return found
    for cid, ep in containers.items():
        if not isinstance(ep, dict):
            continue
        for key in ("IPv4Address", "IPv6Address"):
            text = ep.get(key)
            if isinstance(text, str) and text:
                found.setdefault(cid, []).append(text.split("/")[0])
    return found


def bridge_name(info: Any) -> str:
    """The Linux bridge of a bridge network as dockerd shows it (its name by default)."""
    options = info.get("Options") if isinstance(info, dict) else None
    name = options.get("com.docker.network.bridge.name") if isinstance(options, dict) else None
    return name if isinstance(name, str) and name else GWBRIDGE


def endpoint_names(info: Any) -> dict[str, dict[str, Any]]:
    """Network name -> {"Aliases", "DNSNames"} of a container's inspect answer."""
    settings = info.get("NetworkSettings") if isinstance(info, dict) else None
    networks = settings.get("Networks") if isinstance(settings, dict) else None
    if not isinstance(networks, dict):
        return {}
    return {name: {key: ep.get(key) for key in ("Aliases", "DNSNames")}
            for name, ep in networks.items() if isinstance(ep, dict)}
