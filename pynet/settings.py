"""Runtime settings: command-line flags, each with a PYNET_* environment twin."""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from dataclasses import dataclass, field

from driver.kinds.overlay.runtime import DEFAULT_ENCRYPTED_PORT as DEFAULT_ENCRYPTED_VXLAN_PORT
from driver.kinds.overlay.runtime import DEFAULT_WIREGUARD_PORT, DEFAULT_WIREGUARD_SUBNET
from pynet_core.store.segments import segment_problem
from pynet_core.defaults import (DEFAULT_BLOCK_SIZE, DEFAULT_LEAK_CHECK_INTERVAL, DEFAULT_LEAK_GRACE,
                       DEFAULT_POOLS, MIN_LEAK_GRACE, DefaultPool, is_block_size, parse_bool)

DEFAULT_SOCKET = "/run/docker/plugins/pynet.sock"
DEFAULT_STATE_DIR = "/var/lib/pynet"
DEFAULT_CONSUL_ADDR = "127.0.0.1:8500"
DEFAULT_CONSUL_PREFIX = "pynet/"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_VXLAN_PORT = 4789
DEFAULT_OVERLAY_PEER_TIMEOUT = 30.0
# Encrypted overlays (docs/overlay.md "Encryption").
WIREGUARD_MODES = ("auto", "kernel", "userspace")
# DEFAULT_WIREGUARD_PORT, DEFAULT_ENCRYPTED_VXLAN_PORT, DEFAULT_WIREGUARD_SUBNET: the overlay's
# (driver/kinds/overlay/runtime.py). The tunnel address prefix gives one /32 per host, claimed
# cluster-wide (create-if-absent); the same on every host, and routed nowhere else on them.
HOST_ID_MAX = 253  # a fully qualified hostname


@dataclass(frozen=True, slots=True)
class Settings:
    socket: str = DEFAULT_SOCKET
    state_dir: str = DEFAULT_STATE_DIR
    store: str = "local"
    host_id: str = ""
    default_pools: tuple[DefaultPool, ...] = DEFAULT_POOLS
    threads: int = 16
    log_level: str = "info"
    # --store consul (docs/consul.md). The token never appears in repr() or logs.
    consul_addr: str = DEFAULT_CONSUL_ADDR
    consul_token: str | None = field(default=None, repr=False)
    consul_ca_cert: str | None = None
    consul_client_cert: str | None = None
    consul_client_key: str | None = None
    consul_verify: bool = True
    consul_prefix: str = DEFAULT_CONSUL_PREFIX
    # Addresses per per-host IPAM block (a power of two); 0: no blocks, lowest free address.
    ipam_block_size: int = DEFAULT_BLOCK_SIZE
    # The leak check (ipam_driver/leaks.py) asks this dockerd which addresses are in use.
    docker_host: str = DEFAULT_DOCKER_HOST
    leak_check_interval: float = DEFAULT_LEAK_CHECK_INTERVAL  # 0: off
    leak_grace: float = DEFAULT_LEAK_GRACE
    # Overlay networks (docs/overlay.md): this host's VTEP address (None: see
    # driver/kinds/overlay/underlay.py for the default), the VXLAN UDP port, and how long a host's
    # heartbeat may stand still before its peers' entries are withdrawn.
    data_path_addr: str | None = None
    vxlan_port: int = DEFAULT_VXLAN_PORT
    overlay_peer_timeout: float = DEFAULT_OVERLAY_PEER_TIMEOUT
    # Encrypted overlays: which WireGuard carries them (kernel module, wireguard-go, or the
    # kernel's when it has it), its UDP port, encrypted overlays' own VXLAN port (never on the
    # underlay in clear), and the prefix of the hosts' tunnel addresses.
    wireguard: str = "auto"
    wireguard_port: int = DEFAULT_WIREGUARD_PORT
    encrypted_vxlan_port: int = DEFAULT_ENCRYPTED_VXLAN_PORT
    wireguard_subnet: str = DEFAULT_WIREGUARD_SUBNET
    # Seconds between rotations of this host's WireGuard key (0: only `pynet overlay rotate-key`).
    wireguard_rotate_interval: float = 0.0
    # The network driver's Scope (docs/swarm.md): "local" (networks made per host) or
    # "global" (Swarm managers allocate them; the managed plugin's default).
    scope: str = "local"
    # Operating pynet (README "Operating pynet"): log lines as text or JSON objects, and the
    # opt-in Prometheus listener (HOST:PORT or unix:PATH; None: off).
    log_format: str = "text"
    metrics_addr: str | None = None
    metrics_allow_remote: bool = False
    # pynet DNS (docs/dns.md): the (address, port) pairs it serves on (empty: off), the
    # upstream servers it forwards to (None: the host's resolv.conf), and the subnets other
    # than this host's containers that may use it (none: it is no open resolver).
    dns_addrs: tuple[tuple[str, int], ...] = ()
    dns_upstreams: tuple[tuple[str, int], ...] | None = None
    dns_allow_from: tuple[str, ...] = ()
    dns_rate: float = 100.0  # queries per second per source address (burst: twice that)

    @property
    def host(self) -> str:
        return self.host_id or socket.gethostname()

    @property
    def consul_endpoint(self) -> tuple[str, str]:
        """(scheme, HOST:PORT): https when the address says so or a TLS file is given."""
        scheme, sep, rest = self.consul_addr.partition("://")
        if not sep:
            scheme, rest = "http", self.consul_addr
        if scheme not in ("http", "https"):
            raise ValueError(f"consul address {self.consul_addr!r}: the scheme must be http or https")
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not port.isdigit() or "/" in rest:
            raise ValueError(f"consul address {self.consul_addr!r} is not HOST:PORT "
                             "(e.g. 127.0.0.1:8500 or https://consul.example:8501)")
        tls = self.consul_ca_cert or self.consul_client_cert
        return ("https" if tls else scheme), rest


def _env(name: str, default: str) -> str:
    return os.environ.get(f"PYNET_{name}", default)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", default=_env("SOCKET", DEFAULT_SOCKET),
                        help="Unix socket Docker finds the plugin on [PYNET_SOCKET] "
                             f"(default {DEFAULT_SOCKET})")
    parser.add_argument("--state-dir", default=_env("STATE_DIR", DEFAULT_STATE_DIR),
                        help=f"where the embedded store lives [PYNET_STATE_DIR] (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--store", choices=["local", "consul"], default=_env("STORE", "local"),
                        help="state backend: 'local' is the embedded store, 'consul' is shared by "
                             "every host on the same Consul cluster [PYNET_STORE]")
    add_consul_arguments(parser)
    parser.add_argument("--host-id", default=_env("HOST_ID", ""),
                        help="this host's name in shared state [PYNET_HOST_ID] (default: hostname)")
    parser.add_argument("--default-address-pool", action="append", dest="default_pools",
                        metavar="base=CIDR,size=N",
                        help="where automatic subnets come from, repeatable [PYNET_DEFAULT_ADDRESS_POOLS, "
                             "separated by ';'] (default base=10.192.0.0/10,size=24 and "
                             "base=fd70:796e:6574::/48,size=64)")
    parser.add_argument("--docker-host", default=_env("DOCKER_HOST", DEFAULT_DOCKER_HOST),
                        help="the dockerd this plugin serves, asked which addresses are in use "
                             f"[PYNET_DOCKER_HOST] (default {DEFAULT_DOCKER_HOST})")
    parser.add_argument("--leak-check-interval", type=float,
                        default=_env("LEAK_CHECK_INTERVAL", str(DEFAULT_LEAK_CHECK_INTERVAL)),
                        help="seconds between checks for addresses Docker no longer uses; 0 turns "
                             "the check off [PYNET_LEAK_CHECK_INTERVAL] (default 60)")
    parser.add_argument("--leak-grace", type=float, default=_env("LEAK_GRACE", str(DEFAULT_LEAK_GRACE)),
                        help="seconds an address must stay unknown to Docker before it is released "
                             "[PYNET_LEAK_GRACE] (default 300)")
    parser.add_argument("--data-path-addr", default=_env("DATA_PATH_ADDR", "") or None,
                        help="this host's address for overlay (VXLAN) traffic, reached by the other "
                             "hosts [PYNET_DATA_PATH_ADDR] (default: the address on the default "
                             "route's link, else the host's only global IPv4 address)")
    parser.add_argument("--vxlan-port", type=int, default=_env("VXLAN_PORT", str(DEFAULT_VXLAN_PORT)),
                        help="UDP port of overlay traffic, the same on every host [PYNET_VXLAN_PORT] "
                             f"(default {DEFAULT_VXLAN_PORT})")
    parser.add_argument("--overlay-peer-timeout", type=float,
                        default=_env("OVERLAY_PEER_TIMEOUT", str(DEFAULT_OVERLAY_PEER_TIMEOUT)),
                        help="seconds a host's heartbeat may stand still before the other hosts "
                             "withdraw its overlay entries [PYNET_OVERLAY_PEER_TIMEOUT] (default 30)")
    parser.add_argument("--wireguard", choices=WIREGUARD_MODES, default=_env("WIREGUARD", "auto"),
                        help="what carries encrypted overlays between hosts: the kernel's WireGuard, "
                             "wireguard-go (userspace), or auto: the kernel's when it has the module "
                             "[PYNET_WIREGUARD] (default auto)")
    parser.add_argument("--wireguard-port", type=int,
                        default=_env("WIREGUARD_PORT", str(DEFAULT_WIREGUARD_PORT)),
                        help="UDP port of this host's WireGuard link, the only port encrypted "
                             f"overlays use on the underlay [PYNET_WIREGUARD_PORT] (default {DEFAULT_WIREGUARD_PORT})")
    parser.add_argument("--encrypted-vxlan-port", type=int,
                        default=_env("ENCRYPTED_VXLAN_PORT", str(DEFAULT_ENCRYPTED_VXLAN_PORT)),
                        help="VXLAN UDP port of encrypted overlays, inside WireGuard only; the same on "
                             f"every host [PYNET_ENCRYPTED_VXLAN_PORT] (default {DEFAULT_ENCRYPTED_VXLAN_PORT})")
    parser.add_argument("--wireguard-subnet", default=_env("WIREGUARD_SUBNET", DEFAULT_WIREGUARD_SUBNET),
                        help="IPv4 prefix each host's WireGuard tunnel address is claimed from; the same "
                             f"on every host [PYNET_WIREGUARD_SUBNET] (default {DEFAULT_WIREGUARD_SUBNET})")
    parser.add_argument("--wireguard-rotate-interval", type=float,
                        default=_env("WIREGUARD_ROTATE_INTERVAL", "0"),
                        help="seconds between rotations of this host's WireGuard key, at least 60; 0: "
                             "only `pynet overlay rotate-key` [PYNET_WIREGUARD_ROTATE_INTERVAL] (default 0)")
    parser.add_argument("--scope", choices=["local", "global"], default=_env("SCOPE", "local"),
                        help="the network driver's scope: 'global' for Swarm services on pynet "
                             "networks (managers allocate them), 'local' for networks made on "
                             "each host [PYNET_SCOPE] (default local; docs/swarm.md)")
    parser.add_argument("--threads", type=int, default=int(_env("THREADS", "16")),
                        help="concurrent plugin calls served [PYNET_THREADS] (default 16)")
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"], help="[PYNET_LOG_LEVEL]")
    parser.add_argument("--log-format", default=_env("LOG_FORMAT", "text"), choices=["text", "json"],
                        help="log lines as text or as one JSON object each [PYNET_LOG_FORMAT] "
                             "(default text)")
    parser.add_argument("--metrics-addr", default=_env("METRICS_ADDR", "") or None,
                        metavar="HOST:PORT|unix:PATH",
                        help="serve Prometheus metrics there [PYNET_METRICS_ADDR] (default: off); "
                             "a loopback address or a Unix socket unless --metrics-allow-remote")
    parser.add_argument("--metrics-allow-remote", action=argparse.BooleanOptionalAction, default=None,
                        help="allow --metrics-addr on a non-loopback address [PYNET_METRICS_ALLOW_REMOTE]")
    parser.add_argument("--dns-addr", action="append", dest="dns_addrs", metavar="ADDR[:PORT]",
                        help="serve DNS for the containers of pynet networks there (UDP and TCP, "
                             "port 53 unless given; IPv6 as [ADDR]:PORT), repeatable; point "
                             "dockerd's `dns` setting or `--dns` at it, e.g. the docker0 or "
                             "docker_gwbridge gateway (docs/dns.md) [PYNET_DNS_ADDR, separated "
                             "by ','] (default: off)")
    parser.add_argument("--dns-upstream", action="append", dest="dns_upstreams",
                        metavar="ADDR[:PORT]",
                        help="where names pynet does not answer are forwarded, repeatable "
                             "[PYNET_DNS_UPSTREAM, separated by ','] (default: the nameservers "
                             "of the host's /etc/resolv.conf, loopback ones included)")
    parser.add_argument("--dns-rate", type=float, default=_env("DNS_RATE", "100"),
                        help="queries per second pynet DNS answers one source address, with "
                             "bursts of twice that; more are dropped [PYNET_DNS_RATE] (default 100)")
    parser.add_argument("--dns-allow-from", action="append", dest="dns_allow_from", metavar="CIDR",
                        help="sources besides this host's containers that may use pynet DNS "
                             "(forwarding too), repeatable [PYNET_DNS_ALLOW_FROM, separated by ','] "
                             "(default: none; pynet DNS is no open resolver)")


def add_consul_arguments(parser: argparse.ArgumentParser) -> None:
    """--consul-* and --ipam-block-size: see docs/consul.md."""
    parser.add_argument("--consul-addr", default=_env("CONSUL_ADDR", DEFAULT_CONSUL_ADDR),
                        help="Consul HTTP API as HOST:PORT, or https://HOST:PORT [PYNET_CONSUL_ADDR] "
                             f"(default {DEFAULT_CONSUL_ADDR})")
    parser.add_argument("--consul-token", default=_env("CONSUL_TOKEN", "") or None,
                        help="ACL token; prefer the environment, a flag shows in ps [PYNET_CONSUL_TOKEN]")
    parser.add_argument("--consul-ca-cert", default=_env("CONSUL_CA_CERT", "") or None,
                        help="CA bundle that signed the Consul servers' certificates; implies https "
                             "[PYNET_CONSUL_CA_CERT]")
    parser.add_argument("--consul-client-cert", default=_env("CONSUL_CLIENT_CERT", "") or None,
                        help="client certificate (PEM) for verify_incoming; implies https "
                             "[PYNET_CONSUL_CLIENT_CERT]")
    parser.add_argument("--consul-client-key", default=_env("CONSUL_CLIENT_KEY", "") or None,
                        help="its private key (PEM) [PYNET_CONSUL_CLIENT_KEY]")
    parser.add_argument("--consul-verify", action=argparse.BooleanOptionalAction, default=None,
                        help="verify the servers' TLS certificates [PYNET_CONSUL_VERIFY] (default on)")
    parser.add_argument("--consul-prefix", default=_env("CONSUL_PREFIX", DEFAULT_CONSUL_PREFIX),
                        help="KV prefix pynet keeps everything under [PYNET_CONSUL_PREFIX] "
                             f"(default {DEFAULT_CONSUL_PREFIX})")
    parser.add_argument("--ipam-block-size", type=int,  # argparse converts a str default too
                        default=_env("IPAM_BLOCK_SIZE", str(DEFAULT_BLOCK_SIZE)),
                        help="addresses per host address block, a power of two; 0 turns blocks off "
                             f"[PYNET_IPAM_BLOCK_SIZE] (default {DEFAULT_BLOCK_SIZE})")


def _env_bool(name: str, default: bool) -> bool:
    text = _env(name, "").strip()
    if not text:
        return default
    value = parse_bool(text)
    if value is None:
        raise ValueError(f"PYNET_{name}={text.lower()!r}: expected true or false")
    return value


def _consul_settings(args: argparse.Namespace) -> dict:
    if bool(args.consul_client_cert) != bool(args.consul_client_key):
        raise ValueError("--consul-client-cert and --consul-client-key go together")
    prefix = args.consul_prefix.strip().lstrip("/")
    if not prefix:
        raise ValueError("--consul-prefix must not be empty (pynet needs a prefix of its own)")
    size = args.ipam_block_size
    if not is_block_size(size):
        raise ValueError(f"--ipam-block-size {size}: expected 0 or a power of two of at least 4")
    return dict(consul_addr=args.consul_addr, consul_token=args.consul_token,
                consul_ca_cert=args.consul_ca_cert, consul_client_cert=args.consul_client_cert,
                consul_client_key=args.consul_client_key,
                consul_verify=_env_bool("CONSUL_VERIFY", True) if args.consul_verify is None
                else args.consul_verify,
                consul_prefix=prefix if prefix.endswith("/") else prefix + "/",
                ipam_block_size=size)


def settings_from_args(args: argparse.Namespace) -> Settings:
    texts = args.default_pools or [p for p in _env("DEFAULT_ADDRESS_POOLS", "").split(";") if p.strip()]
    pools = tuple(DefaultPool.parse(t.strip()) for t in texts) if texts else DEFAULT_POOLS
    if args.leak_check_interval < 0:
        raise ValueError(f"--leak-check-interval {args.leak_check_interval:g}: expected 0 (off) or "
                         "a number of seconds")
    if args.leak_grace < MIN_LEAK_GRACE:
        raise ValueError(f"--leak-grace {args.leak_grace:g}: expected at least "
                         f"{MIN_LEAK_GRACE:g} seconds (Docker retries a plugin call for 30 s)")
    if not 1 <= args.vxlan_port <= 65535:
        raise ValueError(f"--vxlan-port {args.vxlan_port}: expected a UDP port (1-65535)")
    if args.overlay_peer_timeout < 3:
        raise ValueError(f"--overlay-peer-timeout {args.overlay_peer_timeout:g}: expected at least "
                         "3 seconds (hosts beat three times per timeout)")
    for flag, port in (("--wireguard-port", args.wireguard_port),
                       ("--encrypted-vxlan-port", args.encrypted_vxlan_port)):
        if not 1 <= port <= 65535:
            raise ValueError(f"{flag} {port}: expected a UDP port (1-65535)")
    if args.encrypted_vxlan_port == args.vxlan_port:
        raise ValueError(f"--encrypted-vxlan-port {args.encrypted_vxlan_port} is --vxlan-port too: "
                         "encrypted overlays need a VXLAN port of their own, which the firewall "
                         "closes to everything but the WireGuard link")
    wg_subnet = wireguard_subnet(args.wireguard_subnet)
    if args.wireguard_rotate_interval != 0 and not args.wireguard_rotate_interval >= 60:
        raise ValueError(f"--wireguard-rotate-interval {args.wireguard_rotate_interval:g}: expected 0 "
                         "(off) or at least 60 seconds (each rotation costs every peer a handshake)")
    # The host id is a store key level (v1/hosts/<host>/...): never '/' or '..'.
    host = args.host_id or socket.gethostname()
    problem = segment_problem(host, HOST_ID_MAX)
    if problem is not None:
        raise ValueError(f"host id {host!r} ({'--host-id' if args.host_id else 'the hostname'}) "
                         f"cannot name this host in the store: {problem}; pass --host-id")
    allow_remote = (_env_bool("METRICS_ALLOW_REMOTE", False) if args.metrics_allow_remote is None
                    else args.metrics_allow_remote)
    if args.metrics_addr:
        check_addr(args.metrics_addr, allow_remote)  # refuses a bad or public address before serving
    dns = _dns_settings(args)
    settings = Settings(socket=args.socket, state_dir=args.state_dir, store=args.store,
                        host_id=args.host_id, default_pools=pools, threads=args.threads,
                        log_level=args.log_level, docker_host=args.docker_host,
                        leak_check_interval=args.leak_check_interval, leak_grace=args.leak_grace,
                        data_path_addr=args.data_path_addr, vxlan_port=args.vxlan_port,
                        overlay_peer_timeout=args.overlay_peer_timeout, scope=args.scope,
                        wireguard=args.wireguard, wireguard_port=args.wireguard_port,
                        encrypted_vxlan_port=args.encrypted_vxlan_port, wireguard_subnet=wg_subnet,
                        wireguard_rotate_interval=args.wireguard_rotate_interval,
                        log_format=args.log_format, metrics_addr=args.metrics_addr,
                        metrics_allow_remote=allow_remote, **dns,
                        **_consul_settings(args))
    settings.consul_endpoint  # noqa: B018 - refuses a malformed --consul-addr before serving
    return settings


def wireguard_subnet(text: str) -> str:
    """--wireguard-subnet: an IPv4 prefix from /8 to /30 (room for hosts), as a network."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"--wireguard-subnet {text!r}: expected an IPv4 prefix such as "
                         f"{DEFAULT_WIREGUARD_SUBNET} ({exc})") from None
    if net.version != 4 or not 8 <= net.prefixlen <= 30:
        raise ValueError(f"--wireguard-subnet {text!r}: expected an IPv4 prefix from /8 to /30")
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_reserved or net.is_unspecified:
        raise ValueError(f"--wireguard-subnet {text!r}: a loopback, multicast, link-local or "
                         "reserved prefix cannot carry tunnel addresses")
    return str(net)


def _listed(values: list[str] | None, env: str) -> list[str]:
    """A repeatable flag's values, or its PYNET_* twin split at ','."""
    if values:
        return values
    return [v.strip() for v in _env(env, "").split(",") if v.strip()]


def _dns_settings(args: argparse.Namespace) -> dict:
    addrs = tuple(dns_endpoint(t, "--dns-addr") for t in _listed(getattr(args, "dns_addrs", None), "DNS_ADDR"))
    for host, port in addrs:
        if ipaddress.ip_address(host).is_unspecified:
            raise ValueError(f"--dns-addr {host}: name the address containers ask (e.g. the "
                             "docker0 or docker_gwbridge gateway), not every address")
    upstream_texts = _listed(getattr(args, "dns_upstreams", None), "DNS_UPSTREAM")
    upstreams = tuple(dns_endpoint(t, "--dns-upstream") for t in upstream_texts) or None
    allow = []
    for text in _listed(getattr(args, "dns_allow_from", None), "DNS_ALLOW_FROM"):
        try:
            allow.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueError(f"--dns-allow-from {text!r}: expected a subnet (CIDR)") from None
    if (upstreams or allow) and not addrs:
        raise ValueError("--dns-upstream and --dns-allow-from need --dns-addr")
    if upstreams and set(upstreams) & set(addrs):
        raise ValueError("--dns-upstream names an address pynet serves DNS on itself")
    rate = float(getattr(args, "dns_rate", 100.0))
    if not rate > 0:
        raise ValueError(f"--dns-rate {rate:g}: expected a number of queries per second above 0")
    return dict(dns_addrs=addrs, dns_upstreams=upstreams, dns_allow_from=tuple(allow),
                dns_rate=rate)


def dns_endpoint(text: str, flag: str) -> tuple[str, int]:
    """(address, port) of ADDR, ADDR:PORT, [V6ADDR] or [V6ADDR]:PORT (port 53 by default)."""
    text = text.strip()
    host, port = text, "53"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{flag} {text!r}: expected [IPV6] or [IPV6]:PORT")
        port = rest[1:] if rest else "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected an IP address (ADDR or ADDR:PORT), "
                         "not a name") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{flag} {text!r}: the port must be 1-65535")
    return str(address), int(port)


def check_addr(addr: str, allow_remote: bool) -> tuple[str, str | int]:
    """("unix", PATH) or (HOST, PORT) of --metrics-addr; ValueError saying why not."""
    if addr.startswith("unix:"):
        path = addr[len("unix:"):]
        if not path.startswith("/"):
            raise ValueError(f"--metrics-addr {addr!r}: a Unix socket needs an absolute path "
                             "(unix:/run/pynet/metrics.sock)")
        return "unix", path
    host, colon, port = addr.rpartition(":")
    host = host.strip("[]")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-addr {addr!r}: expected HOST:PORT (127.0.0.1:9474) or unix:PATH")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_remote:
        raise ValueError(f"--metrics-addr {addr!r}: {host or 'every address'} is not a loopback "
                         "address; the metrics page has no authentication and names every network "
                         "and pool of the host. Add --metrics-allow-remote to serve it there anyway")
    return host or "0.0.0.0", int(port)
