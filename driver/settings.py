"""Runtime settings: command-line flags, each with a PYNET_* environment twin."""
from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass

from ipam_driver.service import DEFAULT_POOLS, DefaultPool

DEFAULT_SOCKET = "/run/docker/plugins/pynet.sock"
DEFAULT_STATE_DIR = "/var/lib/pynet"


@dataclass(frozen=True, slots=True)
class Settings:
    socket: str = DEFAULT_SOCKET
    state_dir: str = DEFAULT_STATE_DIR
    store: str = "local"
    host_id: str = ""
    default_pools: tuple[DefaultPool, ...] = DEFAULT_POOLS
    threads: int = 16
    log_level: str = "info"

    @property
    def host(self) -> str:
        return self.host_id or socket.gethostname()


def _env(name: str, default: str) -> str:
    return os.environ.get(f"PYNET_{name}", default)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", default=_env("SOCKET", DEFAULT_SOCKET),
                        help="Unix socket Docker finds the plugin on [PYNET_SOCKET] "
                             f"(default {DEFAULT_SOCKET})")
    parser.add_argument("--state-dir", default=_env("STATE_DIR", DEFAULT_STATE_DIR),
                        help=f"where the embedded store lives [PYNET_STATE_DIR] (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--store", choices=["local"], default=_env("STORE", "local"),
                        help="state backend: 'local' is the embedded store [PYNET_STORE]")
    parser.add_argument("--host-id", default=_env("HOST_ID", ""),
                        help="this host's name in shared state [PYNET_HOST_ID] (default: hostname)")
    parser.add_argument("--default-address-pool", action="append", dest="default_pools",
                        metavar="base=CIDR,size=N",
                        help="where automatic subnets come from, repeatable [PYNET_DEFAULT_ADDRESS_POOLS, "
                             "separated by ';'] (default base=10.192.0.0/10,size=24 and "
                             "base=fd70:796e:6574::/48,size=64)")
    parser.add_argument("--threads", type=int, default=int(_env("THREADS", "16")),
                        help="concurrent plugin calls served [PYNET_THREADS] (default 16)")
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"], help="[PYNET_LOG_LEVEL]")


def settings_from_args(args: argparse.Namespace) -> Settings:
    texts = args.default_pools or [p for p in _env("DEFAULT_ADDRESS_POOLS", "").split(";") if p.strip()]
    pools = tuple(DefaultPool.parse(t.strip()) for t in texts) if texts else DEFAULT_POOLS
    return Settings(socket=args.socket, state_dir=args.state_dir, store=args.store,
                    host_id=args.host_id, default_pools=pools, threads=args.threads,
                    log_level=args.log_level)
