"""What this host's dockerd says of its running containers, for the names (local.py), and
its event stream, which says when to look again. Runs on background threads, never inside
a plugin call (dockerd may be waiting on pynet at that moment)."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
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
            api = self._client()
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

    def read_containers(self, cids: Iterable[str]
                        ) -> tuple[dict[str, dict[str, Any] | None], dict[str, list[str]] | None] | None:
        """What dockerd says now of these containers only (one inspect each), for a look at
        what an event named: container id -> its entry shaped as the container list gives it
        (with Aliases and DNSNames), or None when it is gone or not running; and
        docker_gwbridge's addresses by container id, read only when one of them runs (None:
        not read). None when dockerd cannot be asked."""
        try:
            api = self._client()
            found: dict[str, dict[str, Any] | None] = {}
            for cid in cids:
                try:
                    info = api.inspect_container(cid)
                except docker.errors.NotFound:
                    found[cid] = None
                    continue
                found[cid] = summary_of(info)
                entry = found[cid]
                if entry is not None:
                    # The next full look need not inspect it again (_with_aliases).
                    self._aliases[_signature(entry)] = endpoint_names(info)
            gwbridge: Any = None
            if any(entry is not None for entry in found.values()):
                try:
                    gwbridge = api.inspect_network(GWBRIDGE)
                except docker.errors.NotFound:
                    gwbridge = {}
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            self._drop_client()
            log.debug("names: dockerd at %s cannot be asked (%s)", self.base_url, exc)
            return None
        if gwbridge is None:
            return found, None
        if gwbridge:
            self.gwbridge = bridge_name(gwbridge)
        return found, gateway_addresses(gwbridge)

    def _client(self) -> Any:
        if self._api is None:
            self._api = docker.APIClient(base_url=self.base_url, version="auto", timeout=TIMEOUT)
        return self._api

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
            sig = _signature(summary)
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

    def follow(self, stop: threading.Event, changed: Callable[[str | None, bool], None]) -> None:
        """For every event that may change a name, until `stop`: `changed(container id,
        whether a network's event)` when it concerns one container, `changed(None, ...)` when
        everything should be read again (a network made or gone, the stream lost)."""
        since = int(time.time())
        while not stop.is_set():
            until = int(time.time()) + STREAM_SECONDS
            try:
                with docker.APIClient(base_url=self.base_url, version="auto",
                                      timeout=STREAM_SECONDS + TIMEOUT) as api:
                    for event in api.events(since=since, until=until, filters=EVENTS, decode=True):
                        target = event_target(event)
                        if log.isEnabledFor(logging.DEBUG) and isinstance(event, dict):
                            lag = time.time() - float(event.get("timeNano") or 0) / 1e9
                            log.debug("names: dockerd's %s %s event, %.1f ms after dockerd logged it",
                                      event.get("Type"), event.get("Action"), lag * 1e3)
                        if target is not False:
                            changed(target, event.get("Type") == "network")
                        if stop.is_set():
                            return
                since = until
            except (docker.errors.DockerException, requests.RequestException, OSError):
                changed(None, False)  # whatever was missed is read by the next full look
                stop.wait(1.0)
                since = int(time.time())


def event_target(event: Any) -> str | None | bool:
    """Which container an event concerns: its id; None when everything should be read again
    (a network made or gone changes the bridges the DNS firewall lets in; an event of no
    shape pynet knows); False when it changes nothing (a container created, not yet
    running: its `start` follows)."""
    if not isinstance(event, dict):
        return None
    kind = event.get("Type")
    action = event.get("Action") or event.get("status")
    actor = event.get("Actor") if isinstance(event.get("Actor"), dict) else {}
    attributes = actor.get("Attributes") if isinstance(actor.get("Attributes"), dict) else {}
    if kind == "container":
        if action == "create":
            return False
        cid = actor.get("ID") or event.get("id")
        return cid if isinstance(cid, str) and cid else None
    if kind == "network" and action in ("connect", "disconnect"):
        cid = attributes.get("container")
        return cid if isinstance(cid, str) and cid else None
    return None


def summary_of(info: Any) -> dict[str, Any] | None:
    """A container's inspect answer shaped as its container-list entry (Id, Names,
    NetworkSettings.Networks, these with Aliases and DNSNames); None unless it is running."""
    if not isinstance(info, dict):
        return None
    state = info.get("State")
    cid, name = info.get("Id"), info.get("Name")
    if not isinstance(state, dict) or state.get("Running") is not True or not isinstance(cid, str):
        return None
    settings = info.get("NetworkSettings")
    networks = settings.get("Networks") if isinstance(settings, dict) else None
    return {"Id": cid, "Names": [f"/{name.lstrip('/')}"] if isinstance(name, str) else [],
            "NetworkSettings": {"Networks": dict(networks) if isinstance(networks, dict) else {}}}


def _signature(summary: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """(container id, its endpoint ids): an endpoint's aliases are fixed while it exists."""
    settings = summary.get("NetworkSettings")
    networks = settings.get("Networks") if isinstance(settings, dict) else None
    eps = networks.values() if isinstance(networks, dict) else ()
    return (str(summary.get("Id")),
            tuple(sorted(str(ep.get("EndpointID")) for ep in eps if isinstance(ep, dict))))


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
