"""Network options from `docker network create -o KEY=VALUE` into typed settings.

Docker's own drivers' key names are accepted where pynet does the same thing, plus short
aliases. An unknown key or a bad value is refused with the key, the value and the reason:
a typo silently ignored is a network that does not do what its user believes.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, fields
from typing import Any, Callable

from pynet_core.defaults import parse_bool
from pynet_core.errors import BadRequest
from pynet_core.wire import printable

GENERIC = "com.docker.network.generic"
ENABLE_IPV4 = "com.docker.network.enable_ipv4"  # Docker 28+; absent before: IPv4 is on
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
INTERNAL = "com.docker.network.internal"

NETWORK_TYPES = ("bridge", "macvlan", "overlay")
# Types whose code has landed. The others are refused with a clear message until then.
# (An overlay needs --store consul: with the local store its kind refuses it, saying so.)
IMPLEMENTED_TYPES = ("bridge", "macvlan", "overlay")

# VXLAN network identifiers: 24 bits, 0 reserved.
VNI_MIN, VNI_MAX = 1, 16777215

IFNAMSIZ = 15
# What the kernel takes as a link name: ':' is refused (it meant an alias), '/' and
# white space too; 'all' and 'default' name sysctl directories, not links.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_RESERVED_IFNAMES = (".", "..", "all", "default")


def parse_flag(key: str, value: str) -> bool:
    flag = parse_bool(value)
    if flag is None:
        raise BadRequest(f"option {key}={printable(value)}: expected true or false")
    return flag


def parse_mtu(key: str, value: str) -> int:
    try:
        mtu = int(str(value).strip())
    except ValueError:
        raise BadRequest(f"option {key}={printable(value)}: the MTU must be a whole number") from None
    if not 68 <= mtu <= 65535:
        raise BadRequest(f"option {key}={printable(value)}: the MTU must be between 68 and 65535")
    return mtu


def parse_ifname(key: str, value: str) -> str:
    if not _IFNAME.fullmatch(value) or value in _RESERVED_IFNAMES:
        raise BadRequest(f"option {key}={printable(value)}: an interface name is 1-{IFNAMSIZ} characters "
                         f"of letters, digits and _ . -, and not {' or '.join(_RESERVED_IFNAMES)}")
    return value


def parse_host_ipv4(key: str, value: str) -> str:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        address = None
    if address is None or address.version != 4:
        raise BadRequest(f"option {key}={printable(value)}: expected an IPv4 address of this host")
    return str(address)


def parse_prefix(key: str, value: str) -> str:
    # Docker appends an index (eth0, eth1...), so leave room for it within IFNAMSIZ.
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,11}", value):
        raise BadRequest(f"option {key}={printable(value)}: a container interface prefix is 1-12 letters, "
                         "digits, _ or -, starting with a letter")
    return value


def parse_type(key: str, value: str, available: tuple[str, ...] = IMPLEMENTED_TYPES) -> str:
    if value not in NETWORK_TYPES:
        raise BadRequest(f"option {key}={printable(value)}: the network type must be one of "
                         f"{', '.join(NETWORK_TYPES)}")
    if value not in available:
        raise BadRequest(f"option {key}={printable(value)}: {value} networks are not available in this "
                         f"version of pynet (available: {', '.join(available)})")
    return value


def parse_vni(key: str, value: str) -> int:
    try:
        vni = int(str(value).strip())
    except ValueError:
        vni = None
    if vni is None or not VNI_MIN <= vni <= VNI_MAX:
        raise BadRequest(f"option {key}={printable(value)}: a VXLAN network identifier is a whole "
                         f"number from {VNI_MIN} to {VNI_MAX}")
    return vni


def parse_encrypted(key: str, value: str) -> bool:
    """Docker's `-o encrypted` (given without a value: the key's presence turns it on, as in
    Docker's overlay driver), or `-o encrypted=true|false`."""
    if value.strip() == "":
        return True
    return parse_flag(key, value)


MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
# Docker's bridge gateway modes pynet implements (per address family): nat (outbound
# masquerade, ports published by DNAT on host ports) and routed (no NAT: published ports
# are open at the container's own address, and ICMP reaches the containers).
GATEWAY_MODES = ("nat", "routed")


def parse_gateway_mode(key: str, value: str) -> str:
    if value not in GATEWAY_MODES:
        raise BadRequest(f"option {key}={printable(value)}: the gateway mode must be one of "
                         f"{', '.join(GATEWAY_MODES)} (nat is the default; Docker's nat-unprotected "
                         "and isolated are not implemented by pynet)")
    return value


def parse_parent(key: str, value: str) -> str | None:
    # `-o parent=` (empty) means no parent, as with Docker's macvlan driver.
    return parse_ifname(key, value) if value != "" else None


def parse_macvlan_mode(key: str, value: str) -> str:
    if value not in MACVLAN_MODES:
        raise BadRequest(f"option {key}={printable(value)}: the macvlan mode must be one of "
                         f"{', '.join(MACVLAN_MODES)} (bridge is the default)")
    return value


@dataclass(frozen=True, slots=True)
class OptionSpec:
    field: str
    parse: Callable[[str, str], Any]
    types: tuple[str, ...]  # network types the key applies to


# key -> what it sets. Aliases share a field; giving both with different values is refused.
OPTIONS: dict[str, OptionSpec] = {
    "type": OptionSpec("type", parse_type, NETWORK_TYPES),
    "com.docker.network.driver.mtu": OptionSpec("mtu", parse_mtu, NETWORK_TYPES),
    "mtu": OptionSpec("mtu", parse_mtu, NETWORK_TYPES),
    "com.docker.network.container_iface_prefix": OptionSpec("iface_prefix", parse_prefix, NETWORK_TYPES),
    "com.docker.network.bridge.name": OptionSpec("bridge_name", parse_ifname, ("bridge",)),
    "bridge_name": OptionSpec("bridge_name", parse_ifname, ("bridge",)),
    # macvlan: the host interface the containers' macvlan links sit on ("eth0", or
    # "eth0.42" for an 802.1q sub-interface pynet creates when missing). No parent: an
    # internal network on a link made for it.
    "parent": OptionSpec("parent", parse_parent, ("macvlan",)),
    "macvlan_mode": OptionSpec("macvlan_mode", parse_macvlan_mode, ("macvlan",)),
    # bridge firewall (driver/firewall): outbound NAT, traffic between containers of the
    # network, and the default host address of published ports.
    "com.docker.network.bridge.enable_ip_masquerade": OptionSpec("masquerade", parse_flag, ("bridge",)),
    "masquerade": OptionSpec("masquerade", parse_flag, ("bridge",)),
    "com.docker.network.bridge.enable_icc": OptionSpec("icc", parse_flag, ("bridge",)),
    "icc": OptionSpec("icc", parse_flag, ("bridge",)),
    "com.docker.network.bridge.host_binding_ipv4": OptionSpec("host_binding_ipv4", parse_host_ipv4, ("bridge",)),
    "com.docker.network.bridge.gateway_mode_ipv4": OptionSpec("gateway_mode_ipv4", parse_gateway_mode, ("bridge",)),
    "com.docker.network.bridge.gateway_mode_ipv6": OptionSpec("gateway_mode_ipv6", parse_gateway_mode, ("bridge",)),
    # overlay: the VXLAN network identifier, chosen cluster-wide when not given. Docker's
    # overlay spells it as a list (one VNI per subnet); pynet's overlay has one subnet.
    "vni": OptionSpec("vni", parse_vni, ("overlay",)),
    "com.docker.network.driver.kinds.overlay.vxlanid_list": OptionSpec("vni", parse_vni, ("overlay",)),
    # overlay: carried between hosts inside WireGuard (docs/overlay.md "Encryption"). Docker's
    # name (netlabel.OverlayEncrypted), from `docker network create` and from Swarm's
    # AllocateNetwork options alike.
    "encrypted": OptionSpec("encrypted", parse_encrypted, ("overlay",)),
}


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    type: str = "bridge"
    mtu: int | None = None
    iface_prefix: str = "eth"
    bridge_name: str | None = None
    parent: str | None = None
    macvlan_mode: str | None = None
    internal: bool = False
    ipv4: bool = True
    ipv6: bool = False
    masquerade: bool = True
    icc: bool = True
    host_binding_ipv4: str | None = None
    gateway_mode_ipv4: str = "nat"
    gateway_mode_ipv6: str = "nat"
    vni: int | None = None
    encrypted: bool = False

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def parse_network_options(options: dict, available: tuple[str, ...] = IMPLEMENTED_TYPES) -> NetworkOptions:
    """CreateNetwork's Options map -> NetworkOptions, or BadRequest naming the problem.
    `available`: the types the running plugin serves (its kinds)."""
    if not isinstance(options, dict):
        raise BadRequest(f"Options must be an object, got {type(options).__name__}")
    generic = options.get(GENERIC) or {}
    if not isinstance(generic, dict):
        raise BadRequest(f"{GENERIC} must be an object of strings, got {type(generic).__name__}")
    chosen_type = generic.get("type", "bridge")
    if not isinstance(chosen_type, str):
        raise BadRequest(f"option type: expected a string value, got {printable(chosen_type)}")
    parse_type("type", chosen_type, available)  # the type names the options that apply: check it first
    values: dict[str, tuple[str, Any]] = {}
    for key, raw in sorted(generic.items()):
        spec = OPTIONS.get(key)
        if spec is None:
            accepted = sorted(k for k, spec in OPTIONS.items() if chosen_type in spec.types)
            raise BadRequest(f"unknown option {printable(key)} for a {chosen_type} network; accepted "
                             f"options: {', '.join(accepted)}")
        if not isinstance(raw, str):
            raise BadRequest(f"option {printable(key)}: expected a string value, got {printable(raw)}")
        if spec.field == "encrypted" and chosen_type not in spec.types:
            raise BadRequest(f"option {printable(key)}: only overlay networks can be encrypted "
                             f"(WireGuard between hosts); a {chosen_type} network never leaves "
                             "this host's links through pynet, so there is nothing to encrypt")
        if chosen_type not in spec.types:
            raise BadRequest(f"option {printable(key)} does not apply to {chosen_type} networks "
                             f"(only to {', '.join(spec.types)})")
        value = raw if spec.field == "type" else spec.parse(key, raw)  # type: checked above
        if spec.field in values and values[spec.field][1] != value:
            other = values[spec.field][0]
            raise BadRequest(f"options {other} and {key} both set {spec.field} but disagree "
                             f"({values[spec.field][1]!r} vs {printable(value)})")
        values[spec.field] = (key, value)
    parsed = {name: value for name, (_, value) in values.items()}
    parsed["internal"] = _flag(options, INTERNAL)
    parsed["ipv4"] = _flag(options, ENABLE_IPV4, default=True)
    parsed["ipv6"] = _flag(options, ENABLE_IPV6)
    if not parsed["ipv4"] and not parsed["ipv6"]:
        raise BadRequest(f"{ENABLE_IPV4} and {ENABLE_IPV6} are both false: a network needs one of them")
    if parsed.get("type") == "macvlan":
        parsed.setdefault("macvlan_mode", "bridge")
        # Like Docker's macvlan driver: with no parent the network is internal.
        parsed["internal"] = parsed["internal"] or not parsed.get("parent")
    if parsed["ipv6"] and parsed.get("mtu", 1500) < 1280:
        raise BadRequest(f"MTU {parsed['mtu']} is below 1280, the minimum for IPv6")
    return NetworkOptions(**parsed)


def _flag(options: dict, key: str, default: bool = False) -> bool:
    value = options.get(key, default)
    if isinstance(value, bool):
        return value
    return parse_flag(key, value)
