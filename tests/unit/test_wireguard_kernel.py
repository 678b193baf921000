"""driver/wireguard: the kernel adapter (kernel.py) over fakes, the --wireguard choice
(choice.py), and userspace.py's start failures without root.

The kernel adapter is only unit-tested: the kernel this was written on has no wireguard
module (choice.kernel_has_wireguard() is False here, so auto picks wireguard-go)."""
from __future__ import annotations

from ipaddress import IPv4Interface, ip_address, ip_network

import pytest

from driver.wireguard.api import (BadWireGuardConfig, Endpoint, LinkNotFound, Peer, PrivateKey,
                                  PublicKey, UapiProtocolError, WireGuardUnavailable, check_peers)
from driver.wireguard.choice import choose, kernel_has_wireguard, make_links
from driver.wireguard.kernel import KernelWireGuard
from driver.wireguard.userspace import UserspaceWireGuard

A, B, C = (PublicKey(bytes([n]) * 32) for n in (1, 2, 3))
PRIV = PrivateKey(b"\x05" * 32)


class FakeLinks:
    def __init__(self):
        self.links: dict[str, tuple] = {}
        self.calls: list[tuple] = []

    def exists(self, name):
        return name in self.links

    def create_wireguard(self, name):
        self.calls.append(("create", name))
        if name in self.links:
            return False
        self.links[name] = ()
        return True

    def configure(self, name, mtu, address):
        self.calls.append(("configure", name, mtu, address))
        self.links[name] = (mtu, address)

    def delete(self, name):
        self.calls.append(("delete", name))
        return self.links.pop(name, None) is not None


class FakeGenl:
    def __init__(self):
        self.device: dict = {}
        self.peers: dict[str, dict] = {}
        self.calls: list = []

    def set_device(self, name, private_key_b64, listen_port):
        self.calls.append(("device", name, listen_port))
        self.device = {"key": private_key_b64, "port": listen_port}

    def set_peer(self, name, peer):
        self.calls.append(("peer", name, dict(peer)))
        if peer.get("remove"):
            self.peers.pop(peer["public_key"], None)
        else:
            self.peers[peer["public_key"]] = peer

    def info(self, name):
        return {"listen_port": self.device.get("port"), "peers": [
            {"public_key": key, "allowed_ips": p["allowed_ips"], "keepalive": p["persistent_keepalive"],
             "endpoint": f"{p['endpoint_addr']}:{p['endpoint_port']}" if "endpoint_addr" in p else None,
             "handshake": (0, 0), "rx": 0, "tx": 0} for key, p in self.peers.items()]}


@pytest.fixture
def kernel():
    return KernelWireGuard(links=FakeLinks(), genl=FakeGenl())


def peer(key, last, keepalive=0):
    return Peer(key, Endpoint(ip_address(f"198.19.0.{last}"), 51820),
                (ip_network(f"198.18.0.{last}/32"),), keepalive)


def test_kernel_ensure_creates_once_and_configures_each_time(kernel):
    addr = IPv4Interface("198.18.0.1/24")
    assert kernel.ensure("pwg0", PRIV, 51820, 1440, addr) is True
    assert kernel.ensure("pwg0", PRIV, 51821, 1440, addr) is False
    assert kernel.genl.device == {"key": PRIV.reveal_base64(), "port": 51821}
    assert kernel.links.links["pwg0"] == (1440, addr)


def test_kernel_set_peers_is_a_diff_that_keeps_unchanged_peers(kernel):
    kernel.ensure("pwg0", PRIV, 51820, 1440)
    kernel.set_peers("pwg0", [peer(A, 2), peer(B, 3, 25)])
    kernel.genl.calls.clear()
    kernel.set_peers("pwg0", [peer(B, 3, 25), peer(C, 4)])
    removed = [c[2]["public_key"] for c in kernel.genl.calls if c[2].get("remove")]
    assert removed == [A.base64]
    status = kernel.status("pwg0")
    assert {p.public_key for p in status.peers} == {B, C}
    assert status.peer(B).keepalive == 25 and status.peer(B).endpoint == Endpoint(ip_address("198.19.0.3"), 51820)
    assert all(c[2].get("replace_allowed_ips") for c in kernel.genl.calls if not c[2].get("remove"))
    assert status.implementation == "kernel" and status.listen_port == 51820


def test_kernel_refuses_peers_for_a_missing_link_and_bad_peer_sets(kernel):
    with pytest.raises(LinkNotFound):
        kernel.set_peers("pwg0", [])
    kernel.ensure("pwg0", PRIV, 51820, 1440)
    with pytest.raises(BadWireGuardConfig, match="listed twice"):
        kernel.set_peers("pwg0", [peer(A, 2), peer(A, 3)])
    with pytest.raises(BadWireGuardConfig, match="given to two peers"):
        kernel.set_peers("pwg0", [peer(A, 2), Peer(B, None, (ip_network("198.18.0.2/32"),))])


def test_kernel_status_of_an_unparseable_answer_is_a_protocol_error(kernel):
    kernel.ensure("pwg0", PRIV, 51820, 1440)
    kernel.genl.info = lambda name: {"listen_port": 1, "peers": [{"public_key": "junk"}]}
    with pytest.raises(UapiProtocolError, match="does not parse"):
        kernel.status("pwg0")


def test_kernel_remove(kernel):
    assert kernel.status("pwg0") is None
    kernel.ensure("pwg0", PRIV, 51820, 1440)
    assert kernel.remove("pwg0") is True and kernel.remove("pwg0") is False


def test_choice():
    assert choose("userspace", probe=lambda: True) == "userspace"
    assert choose("auto", probe=lambda: True) == "kernel"
    assert choose("auto", probe=lambda: False) == "userspace"
    assert choose("kernel", probe=lambda: True) == "kernel"
    with pytest.raises(WireGuardUnavailable, match="no wireguard module"):
        choose("kernel", probe=lambda: False)
    with pytest.raises(BadWireGuardConfig, match="auto, kernel, userspace"):
        choose("fast")
    assert isinstance(make_links("auto", probe=lambda: False), UserspaceWireGuard)


def test_this_kernel_is_probed_consistently():
    # On the machine this was written on there is no module: auto gives userspace.
    assert choose("auto") == ("kernel" if kernel_has_wireguard() else "userspace")


@pytest.mark.parametrize("listing, has", [
    ("kernel/drivers/net/wireguard/wireguard.ko.xz: kernel/lib/crypto/libchacha.ko.xz\n", True),
    ("kernel/drivers/net/wireguard/wireguard.ko:\n", True),
    ("kernel/drivers/net/vxlan/vxlan.ko:\n", False),
    ("kernel/drivers/net/notwireguard.ko:\n", False),
])
def test_the_module_is_found_in_the_module_listings(tmp_path, listing, has):
    (tmp_path / "6.1.0").mkdir()
    (tmp_path / "6.1.0" / "modules.dep").write_text(listing)
    assert kernel_has_wireguard(tmp_path / "absent", tmp_path, "6.1.0") is has
    assert kernel_has_wireguard(tmp_path, tmp_path / "none", "6.1.0") is True  # loaded


def test_check_peers_refuses_non_peers():
    with pytest.raises(BadWireGuardConfig):
        check_peers("abc")
    with pytest.raises(BadWireGuardConfig):
        check_peers([object()])


def test_userspace_names_a_missing_binary(tmp_path):
    wg = UserspaceWireGuard(binary="/nonexistent/wireguard-go", run_dir=tmp_path, links=FakeLinks(),
                            supervise=False)
    with pytest.raises(WireGuardUnavailable, match="apt-get install wireguard-go"):
        wg.ensure("pwg0", PRIV, 51820, 1420)


def test_userspace_reports_a_binary_that_exits_at_start(tmp_path):
    wg = UserspaceWireGuard(binary="/bin/false", run_dir=tmp_path, links=FakeLinks(),
                            supervise=False, log_dir=tmp_path / "logs")
    with pytest.raises(WireGuardUnavailable, match="exited with 1 at start"):
        wg.ensure("pwg0", PRIV, 51820, 1420)


def test_userspace_gives_up_on_a_binary_that_never_serves_its_socket(tmp_path):
    wg = UserspaceWireGuard(binary="/bin/sleep", run_dir=tmp_path, links=FakeLinks(), supervise=False,
                            start_timeout=0.3)
    # `sleep -f pwg0` exits at once with a usage error; either way ensure() fails, named.
    with pytest.raises(WireGuardUnavailable, match="/bin/sleep for pwg0"):
        wg.ensure("pwg0", PRIV, 51820, 1420)


@pytest.mark.parametrize("name", ["", "a" * 16, "a/b", "..", "-x", "a b", None])
def test_userspace_refuses_bad_link_names(tmp_path, name):
    wg = UserspaceWireGuard(run_dir=tmp_path, links=FakeLinks(), supervise=False)
    with pytest.raises(BadWireGuardConfig):
        wg.ensure(name, PRIV, 51820, 1420)


def test_userspace_set_peers_needs_ensure_first(tmp_path):
    wg = UserspaceWireGuard(run_dir=tmp_path, links=FakeLinks(), supervise=False)
    with pytest.raises(LinkNotFound):
        wg.set_peers("pwg0", [])


@pytest.mark.parametrize("make", [lambda tmp: KernelWireGuard(links=FakeLinks(), genl=FakeGenl()),
                                  lambda tmp: UserspaceWireGuard(run_dir=tmp, links=FakeLinks(), supervise=False)])
def test_ensure_wants_a_private_key_object(tmp_path, make):
    from driver.wireguard.api import BadKey
    with pytest.raises(BadKey):
        make(tmp_path).ensure("pwg0", PRIV.reveal_base64(), 51820, 1420)
