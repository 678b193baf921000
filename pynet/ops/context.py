"""What the operator commands read: the store `pynet serve` uses (the same settings), this
host's records through the drivers' own record code, the kernel through the network kinds
(what each type checks and shows is its kind's: driver/kinds/base.py), and dockerd for names."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from driver.kinds import build_kinds
from driver.kinds.base import NetworkKind
from driver.kinds.overlay.runtime import OverlayRuntime
from driver.ledger import Ledger
from driver.models import EndpointRecord, NetworkRecord
from driver.netlink.api import Netlink
from ipam_driver.claim_owners import ClaimOwners
from pynet_core.errors import PynetError
from pynet.app import overlay_settings
from pynet.settings import Settings
from pynet_core.store.api import Store

from .render import Output

DOCKER_TIMEOUT = 10


class CannotLook(Exception):
    """The command cannot do its job (exit code 3): the reason for the operator."""


@dataclass
class DockerNames:
    """Docker's names for what pynet knows by ID, from this host's dockerd; empty when it
    could not be asked (`error` says why)."""
    networks: dict[str, str] = field(default_factory=dict)        # network id -> name
    containers: dict[str, str] = field(default_factory=dict)      # endpoint id -> container name
    error: str | None = None


def require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise CannotLook(f"pynet {command} needs root: it reads pynet's store and the kernel "
                         "(run it with sudo)")


class Context:
    def __init__(self, settings: Settings, as_json: bool) -> None:
        self.settings = settings
        self.host = settings.host
        self.out = Output(as_json)

    @cached_property
    def store(self) -> Store:
        from pynet.stores import open_store
        if self.settings.store == "local":
            path = Path(self.settings.state_dir) / "pynet.db"
            if not path.exists():  # never create an empty store where pynet has none
                raise CannotLook(f"no embedded store at {path}: pynet has not run with "
                                 f"--state-dir {self.settings.state_dir} (see --state-dir, --store)")
        try:
            return open_store(self.settings)
        except (PynetError, OSError, ValueError) as exc:
            raise CannotLook(f"cannot open the {self.settings.store} store: {exc}") from None

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.store, self.host)

    def networks(self) -> list[NetworkRecord]:
        return sorted(self.ledger.networks(), key=lambda n: n.id)

    def endpoints(self, nid: str | None = None) -> list[EndpointRecord]:
        return sorted(self.ledger.endpoints(nid), key=lambda e: (e.network_id, e.id))

    @cached_property
    def netlink(self) -> Netlink:
        from driver.netlink.pyroute2_netlink import Pyroute2Netlink
        return Pyroute2Netlink()

    @cached_property
    def kinds(self) -> dict[str, NetworkKind]:
        """Every type's kind, as the plugin builds them, for what the commands ask of a
        network (check, describe, owned_links): never to change anything. Their store is
        read-only and their firewall refuses every call (the running plugin's is not this
        command's to change); the overlay's is wired as the plugin wires it."""
        overlay = OverlayRuntime(ReadOnlyStore(self.store), self.host, self.netlink,
                                 overlay_settings(self.settings))
        overlay.wire(self.ledger, ClaimOwners(self.store))
        return build_kinds(self.netlink, PluginsFirewall(), overlay)

    def kind(self, net: NetworkRecord) -> NetworkKind:
        """The kind serving the network's type: the commands ask it, never the type."""
        kind = self.kinds.get(net.kind)
        if kind is None:  # only a record another client (or a newer pynet) wrote
            raise CannotLook(f"network {net.id[:12]} has type {net.kind!r}, which this "
                             "pynet has no kind for")
        return kind

    def docker_api(self):
        import docker
        return docker.APIClient(base_url=self.settings.docker_host, version="auto",
                                timeout=DOCKER_TIMEOUT)

    @cached_property
    def docker_names(self) -> DockerNames:
        names = DockerNames()
        try:
            with self.docker_api() as api:
                for summary in api.networks():
                    names.networks[summary["Id"]] = summary.get("Name", "")
                    if summary.get("Driver") is None:
                        continue
                    info = api.inspect_network(summary["Id"])
                    for cid, ep in (info.get("Containers") or {}).items():
                        if ep.get("EndpointID"):
                            names.containers[ep["EndpointID"]] = ep.get("Name") or cid[:12]
        except Exception as exc:  # names are a courtesy: IDs are shown instead
            names.error = f"dockerd at {self.settings.docker_host} could not be asked: {exc}"
        return names


class PluginsFirewall:
    """The firewall is the running plugin's (its table, and the host port sockets it holds):
    the operator commands never change it."""

    def __getattr__(self, name: str):
        raise RuntimeError(f"the operator commands do not change the plugin's firewall ({name})")


def resolve_network(ctx: Context, text: str) -> NetworkRecord:
    """A network of this host by ID, ID prefix or Docker name."""
    nets = ctx.networks()
    by_name = {nid for nid, name in ctx.docker_names.networks.items() if name == text}
    found = [n for n in nets if n.id in by_name or n.id.startswith(text)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise CannotLook(f"{what} pynet network of this host ({ctx.host}) matches {text!r} "
                         "(give a Docker network name or an ID prefix; see pynet networks)")
    return found[0]


def as_dict(obj: Any) -> Any:
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


class ReadOnlyStore:
    """The store for a dry run: reads pass, writes are dropped (the leak check records the
    dockerd's engine ID as it proves it; a dry run changes nothing, not even that)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, key: str):
        return self._store.get(key)

    def list(self, prefix: str):
        return self._store.list(prefix)

    def create(self, key: str, value: str) -> bool:
        return True

    def cas(self, key: str, value: str, version: int) -> bool:
        return True

    def delete(self, key: str, version: int | None = None) -> bool:
        return True

    def transaction(self, ops) -> bool:
        return True

    def watch(self, prefix: str, since: int, timeout: float) -> int:
        return self._store.watch(prefix, since, timeout)

    def close(self) -> None:
        pass
