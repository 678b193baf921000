"""Open the store `pynet serve` was told to use (--store local|consul)."""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from pynet_core.store.api import Store

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)


def open_store(settings: Settings) -> Store:
    if settings.store == "consul":
        from pynet_core.store.consul import ConsulStore

        scheme, addr = settings.consul_endpoint
        store = ConsulStore(
            addr, token=settings.consul_token, scheme=scheme, ca_cert=settings.consul_ca_cert,
            client_cert=settings.consul_client_cert, client_key=settings.consul_client_key,
            verify=settings.consul_verify, prefix=settings.consul_prefix,
        )
        # Never the token itself: only whether there is one.
        log.info("store: consul at %s://%s, prefix %r, ACL token %s, TLS verify %s", scheme, addr,
                 settings.consul_prefix, "set" if settings.consul_token else "not set",
                 "on" if settings.consul_verify else "OFF")
        return store
    if settings.store != "local":
        raise ValueError(f"unknown store {settings.store!r}: expected local or consul")
    from pynet_core.store.local import LocalStore

    return LocalStore(os.path.join(settings.state_dir, "pynet.db"))
