"""Encrypted overlays on the real kernel, without Docker: simulated hosts (namespaces on a
bridged underlay, tests/harness/overlay_hosts.py) each running the whole plugin app with
wireguard-go (driver/wireguard/userspace.py, in the host's namespace) and the guard table
(driver/firewall/wireguard_guard.py); "containers" made as dockerd makes them.

Proven: containers on two hosts reach each other over ICMP, TCP and UDP through one
WireGuard link per host; the MTU is the underlay's - 50 - 60 with DF; a capture on the
underlay during a transfer of a marker finds only WireGuard (no VXLAN port, no marker); a
forged VXLAN frame sent from the underlay to the encrypted VXLAN port, or to the WireGuard
port, reaches no container (and reaches it once the guard table is taken away: the frame
is well formed, the guard is what stops it); a key rotated away gets no handshake from the
peer (the new one does); the last delete leaves no link, no process, no record. Addresses: underlay 198.18.0.0/24, tunnel addresses 198.19.250.0/24 (both inside
198.18.0.0/15), overlay 10.50.0.0/24 inside the namespaces only.

Needs root, wireguard-go, wg and libnftables: fails (never skips) without them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from driver import naming
from driver.netlink.api import FLOOD_MAC
from pynet_core.store.memory import MemoryStore
from tests.harness.netprobe import (CAPTURE, CLIENT, FORGE_VXLAN as FORGE, PEER_SERVER, PING_DF, RECEIVE,
                                    SEND_MARKER, SINK, UDP_PROBE as PROBE)
from tests.harness.overlay_hosts import OverlayBed
from tests.harness.wait import wait_until

SUBNET = "10.50.0.0/24"
WG_SUBNET = "198.19.250.0/24"
ENC_PORT, WG_PORT = 4799, 51820
TIMING: dict[str, float] = {}


@pytest.fixture
def bed(make_netns):
    made = OverlayBed(make_netns, MemoryStore())
    yield made
    left = made.close()
    assert all(not name.startswith("pnwg") or ":" not in name for name in left), left


@pytest.fixture
def pair(bed, tmp_path):
    hosts = [bed.host(f"h{i}", f"198.18.0.1{i}", state_dir=str(tmp_path / f"h{i}"),
                      wireguard="userspace", wireguard_subnet=WG_SUBNET) for i in (1, 2)]
    started = time.monotonic()
    nets = [h.network(SUBNET, encrypted="") for h in hosts]
    TIMING["two encrypted CreateNetwork (wireguard-go start included)"] = time.monotonic() - started
    a = hosts[0].container(nets[0], "10.50.0.2/24")
    b = hosts[1].container(nets[1], "10.50.0.3/24")
    return hosts, nets, a, b


def reach(bed, pair, timeout=20.0) -> None:
    """a pings b, or an error with what each host's link and device have."""
    (h1, h2), (n1, n2), a, b = pair
    try:
        wait_until(lambda: bed.pings(a, b.ip), timeout=timeout, what="a reaching b through WireGuard")
    except AssertionError as exc:
        state = {h.name: {"peers": [(str(p.endpoint), [str(n) for n in p.allowed_ips], p.last_handshake)
                                    for p in wg_peers(h)], "fdb": sorted(h.fdb(n))}
                 for h, n in ((h1, n1), (h2, n2))}
        raise AssertionError(f"{exc}; {state}") from None


def wg_peers(host) -> list:
    status = host.wireguard.status(host.wg_link)
    return [] if status is None else list(status.peers)


def test_containers_reach_each_other_through_one_wireguard_link_per_host(bed, pair):
    (h1, h2), (n1, n2), a, b = pair
    vx = h1.inside(n1).vxlan(naming.vxlan(n1))
    assert (vx.local, vx.port, vx.mtu) == ("198.19.250.1", ENC_PORT, 1390)
    wait_until(lambda: len(wg_peers(h1)) == 1 and len(wg_peers(h2)) == 1, timeout=10, what="WireGuard peers")
    wait_until(lambda: (FLOOD_MAC, "198.19.250.2") in h1.fdb(n1), timeout=10, what="h1's entries via h2's tunnel")
    assert all(dst.startswith("198.19.250.") for _, dst in h1.fdb(n1) | h2.fdb(n2))
    started = time.monotonic()
    wait_until(lambda: bed.pings(a, b.ip), timeout=10, what="a reaching b through WireGuard")
    TIMING["first ping across (handshake included)"] = time.monotonic() - started
    assert bed.pings(b, a.ip)
    proc = subprocess.Popen(["ip", "netns", "exec", b.ns, sys.executable, "-c", PEER_SERVER, "7000"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert bed.python(a.ns, CLIENT, "tcp", b.ip, "7000") == f"tcp {a.ip}"
        assert bed.python(a.ns, CLIENT, "udp", b.ip, "7000") == f"udp {a.ip} ping"
    finally:
        proc.kill()
        proc.wait()
    # One link per host, carrying it all: its peer is the other host, allowed its /32 only.
    (peer,) = wg_peers(h1)
    assert [str(n) for n in peer.allowed_ips] == ["198.19.250.2/32"] and peer.last_handshake
    assert str(peer.endpoint) == f"198.18.0.12:{WG_PORT}"


def test_the_encrypted_mtu_leaves_room_for_vxlan_and_wireguard(bed, pair):
    (h1, h2), _, a, b = pair
    reach(bed, pair)
    assert bed.python(a.ns, PING_DF, b.ip, "1362") == "ok 1362"        # 1362 + 8 + 20 = 1390
    assert bed.python(a.ns, PING_DF, b.ip, "1363") == "fail Message too long"
    assert "mtu 1390" in bed.run(a.ns, "ip", "link", "show", "eth0").stdout
    assert "mtu 1440" in bed.run(h1.ns, "ip", "link", "show", h1.wg_link).stdout


def test_the_underlay_sees_only_wireguard_no_vxlan_and_no_marker(bed, pair):
    (h1, h2), _, a, b = pair
    reach(bed, pair)
    marker = "PYNET-MARKER-7f3a"
    sink = subprocess.Popen(["ip", "netns", "exec", b.ns, sys.executable, "-c", SINK, "7100"],
                            stdout=subprocess.PIPE, text=True)
    cap = subprocess.Popen(["ip", "netns", "exec", bed.underlay, sys.executable, "-c", CAPTURE, f"v{h1.name}", "4", marker],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout.readline().strip() == "ready" and cap.stdout.readline().strip() == "ready"
        started = time.monotonic()
        assert bed.python(a.ns, SEND_MARKER, b.ip, "7100", marker, "2048") == "sent 2048"
        TIMING["2 MiB TCP across the encrypted overlay (s)"] = time.monotonic() - started
        found = json.loads(cap.communicate(timeout=20)[0])
    finally:
        for p in (sink, cap):
            p.kill()
            p.wait()
    assert found["marker_frames"] == 0, found
    assert str(ENC_PORT) not in found["udp_dports"] and "4789" not in found["udp_dports"], found
    assert found["udp_dports"].get(str(WG_PORT), 0) > 1000, found   # 2 MiB went, all of it WireGuard


def test_a_forged_vxlan_frame_from_the_underlay_reaches_no_container(bed, pair):
    (h1, h2), (n1, n2), a, b = pair
    reach(bed, pair)
    vni = str(h2.inside(n2).vxlan(naming.vxlan(n2)).vni)

    def forged_reaches_b(to_port: int) -> str:
        rx = subprocess.Popen(["ip", "netns", "exec", b.ns, sys.executable, "-c", RECEIVE, "7200", "2"],
                              stdout=subprocess.PIPE, text=True)
        try:
            assert rx.stdout.readline().strip() == "ready"
            # From h1's underlay address (any host on the underlay could send it).
            assert bed.python(h1.ns, FORGE, "198.18.0.12", str(to_port), vni, b.mac, b.ip, "7200") == "sent"
            return rx.communicate(timeout=10)[0].strip()
        finally:
            rx.kill()
            rx.wait()

    assert forged_reaches_b(ENC_PORT) == "none"       # the guard drops it off the WireGuard link
    assert forged_reaches_b(WG_PORT) == "none"        # WireGuard: sealed by no peer's key
    assert "4799" in bed.run(h2.ns, "nft", "list", "table", "inet", "pynet_wireguard").stdout
    # What a restarted plugin checks before keeping the table (nft's own listing format).
    guard = h2.client.overlay.wireguard.guard
    assert guard.covers(h2.wg_link, WG_PORT, ENC_PORT) and not guard.covers(h2.wg_link, WG_PORT, 4800)
    # The control: without the guard table the very same frame is delivered.
    bed.run(h2.ns, "nft", "delete", "table", "inet", "pynet_wireguard")
    try:
        assert forged_reaches_b(ENC_PORT) == "got FORGED"
    finally:
        h2.client.overlay.wireguard.guard.install(h2.wg_link, WG_PORT, ENC_PORT)
    assert forged_reaches_b(ENC_PORT) == "none"


def test_the_last_delete_leaves_no_link_no_process_no_record(bed, pair):
    (h1, h2), (n1, n2), a, b = pair
    pid = h1.wireguard.status(h1.wg_link).pid
    assert pid is not None
    for host, ctr in ((h1, a), (h2, b)):
        host.remove(ctr)
    h1.delete_network(n1)
    h2.delete_network(n2)
    for host in (h1, h2):
        assert host.wireguard.status(host.wg_link) is None
        assert host.wg_link not in bed.run(host.ns, "ip", "link").stdout
        assert bed.run(host.ns, "nft", "list", "table", "inet", "pynet_wireguard").returncode != 0
    assert not __import__("os").path.exists(f"/proc/{pid}") or \
        "wireguard-go" not in open(f"/proc/{pid}/comm").read()
    assert [e.key for e in bed.store.list("v1/overlay/")] == []
    # The private key stays in the state directory only.
    for host in (h1, h2):
        assert (__import__("pathlib").Path(host.state_dir) / "wireguard.key").stat().st_mode & 0o777 == 0o600


def test_a_rotated_key_keeps_the_hosts_talking_but_for_a_handshake(bed, pair):
    (h1, h2), _, a, b = pair
    reach(bed, pair)
    srv = subprocess.Popen(["ip", "netns", "exec", b.ns, sys.executable, "-c", PEER_SERVER, "7300"],
                           stdout=subprocess.PIPE, text=True)
    probe = subprocess.Popen(["ip", "netns", "exec", a.ns, sys.executable, "-c", PROBE, b.ip, "7300", "4"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready" and probe.stdout.readline().strip() == "ready"
        time.sleep(1)
        old = h1.wireguard.status(h1.wg_link)
        answer = h1.ok("Pynet.RotateWireGuardKey", {})
        found = json.loads(probe.communicate(timeout=20)[0])
    finally:
        for p in (srv, probe):
            p.kill()
            p.wait()
    TIMING["longest reply gap across a key rotation (s)"] = found["longest_gap_s"]
    assert answer["PublicKey"] != answer["Previous"]
    # The same wireguard-go (no restart), and h2 has the new key for h1.
    assert h1.wireguard.status(h1.wg_link).pid == old.pid
    wait_until(lambda: [p.public_key.base64 for p in wg_peers(h2)] == [answer["PublicKey"]],
               timeout=10, what="h2 taking h1's new key")
    assert found["replies"] > 50 and found["longest_gap_s"] < 2.0, found
    reach(bed, pair)



def test_a_killed_plugin_leaves_the_link_carrying_traffic_and_its_successor_adopts_it(bed, pair):
    (h1, h2), (n1, _), a, b = pair
    reach(bed, pair)
    pid = h1.wireguard.status(h1.wg_link).pid
    srv = subprocess.Popen(["ip", "netns", "exec", b.ns, sys.executable, "-c", PEER_SERVER, "7400"],
                           stdout=subprocess.PIPE, text=True)
    probe = subprocess.Popen(["ip", "netns", "exec", a.ns, sys.executable, "-c", PROBE, b.ip, "7400", "4"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready" and probe.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        h1.stop()       # the plugin gone as after kill -9: its wireguard-go and devices stay
        h1.wireguard.close()
        time.sleep(1)
        h1.start()      # a new plugin: restore re-adopts the link
        wait_until(lambda: h1.client.gate.restored, timeout=10, what="restore")
        found = json.loads(probe.communicate(timeout=20)[0])
    finally:
        for p in (srv, probe):
            p.kill()
            p.wait()
    TIMING["longest reply gap across a plugin kill and restart (s)"] = found["longest_gap_s"]
    assert found["longest_gap_s"] < 0.5 and found["replies"] > 50, found
    assert h1.wireguard.status(h1.wg_link).pid == pid     # adopted, not restarted
    vx = h1.inside(n1).vxlan(naming.vxlan(n1))
    assert vx.local == "198.19.250.1"
    reach(bed, pair)


def test_a_wireguard_peer_of_another_encrypted_overlay_cannot_send_into_this_one(bed, tmp_path):
    """h1 and h2 share X; h2 and h3 share Y: h3 is h2's WireGuard peer but no member of X.
    A frame for X's VNI that h3 sends through the tunnel to h2 reaches no container of X
    (the guard's per-overlay rule); without that rule it would (the control)."""
    h1, h2, h3 = (bed.host(f"h{i}", f"198.18.0.1{i}", state_dir=str(tmp_path / f"h{i}"),
                           wireguard="userspace", wireguard_subnet=WG_SUBNET) for i in (1, 2, 3))
    x1, x2 = h1.network(SUBNET, encrypted=""), h2.network(SUBNET, encrypted="")
    h2.network("10.51.0.0/24", encrypted=""), h3.network("10.51.0.0/24", encrypted="")
    a, b = h1.container(x1, "10.50.0.2/24"), h2.container(x2, "10.50.0.3/24")
    wait_until(lambda: bed.pings(a, b.ip), timeout=20, what="a reaching b")
    wait_until(lambda: len(wg_peers(h3)) == 1, timeout=10, what="h3 peered with h2")
    vni = str(h2.inside(x2).vxlan(naming.vxlan(x2)).vni)
    h2_tunnel = str(h2.client.overlay.wireguard.address)
    plane = h2.client.overlay.wireguard

    def delivered() -> str:
        rx = subprocess.Popen(["ip", "netns", "exec", b.ns, sys.executable, "-c", RECEIVE, "7500", "2"],
                              stdout=subprocess.PIPE, text=True)
        try:
            assert rx.stdout.readline().strip() == "ready"
            assert bed.python(h3.ns, FORGE, h2_tunnel, str(ENC_PORT), vni, b.mac, b.ip, "7500",
                              "10.50.0.99") == "sent"
            return rx.communicate(timeout=10)[0].strip()
        finally:
            rx.kill()
            rx.wait()

    assert delivered() == "none"
    plane.guard.install(h2.wg_link, WG_PORT, ENC_PORT, {})      # the control: no per-overlay rule
    try:
        assert delivered() == "got FORGED"
    finally:
        plane.guard.install(h2.wg_link, WG_PORT, ENC_PORT, plane._members)
    assert delivered() == "none"
    assert bed.pings(a, b.ip)


def test_a_killed_wireguard_go_is_restarted_with_its_peers_and_traffic_resumes(bed, pair):
    (h1, h2), (n1, _), a, b = pair
    reach(bed, pair)
    old = h1.wireguard.status(h1.wg_link)
    srv = subprocess.Popen(["ip", "netns", "exec", b.ns, sys.executable, "-c", PEER_SERVER, "7600"],
                           stdout=subprocess.PIPE, text=True)
    probe = subprocess.Popen(["ip", "netns", "exec", a.ns, sys.executable, "-c", PROBE, b.ip, "7600", "5"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready" and probe.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        import os
        import signal
        os.kill(old.pid, signal.SIGKILL)     # wireguard-go, which pynet started (its PID from the adapter)
        found = json.loads(probe.communicate(timeout=20)[0])
    finally:
        for p in (srv, probe):
            p.kill()
            p.wait()
    TIMING["longest reply gap across a kill -9 of wireguard-go (s)"] = found["longest_gap_s"]
    new = h1.wireguard.status(h1.wg_link)
    assert new.pid != old.pid and new.restarts == 1 and len(new.peers) == 1
    # The TUN went with the process: the new one has the tunnel address again, and the VXLAN
    # device (its UDP socket is the host's, not the TUN's) still sends through it.
    assert "198.19.250.1/24" in bed.run(h1.ns, "ip", "addr", "show", h1.wg_link).stdout
    assert found["longest_gap_s"] < 3.0 and found["replies"] > 50, found
    reach(bed, pair)

def test_a_rotated_away_key_no_longer_handshakes_and_the_new_one_does(bed, pair, tmp_path):
    """After h1 rotates, an impostor on the underlay holding h1's old private key (and h1's
    tunnel address) gets no handshake from h2 and no reply; the same impostor with h1's new
    key does (the control: the impostor itself works, only the key decides)."""
    (h1, h2), _, a, b = pair
    reach(bed, pair)
    key_file = tmp_path / "h1" / "wireguard.key"
    old_key = key_file.read_text().strip()
    answer = h1.ok("Pynet.RotateWireGuardKey", {})
    new_key = key_file.read_text().strip()
    assert new_key != old_key
    wait_until(lambda: [p.public_key.base64 for p in wg_peers(h2)] == [answer["PublicKey"]],
               timeout=10, what="h2 taking h1's new key")
    h1_tunnel = str(h1.client.overlay.wireguard.address)
    h2_tunnel = str(h2.client.overlay.wireguard.address)
    h2_key = h2.client.overlay.wireguard.record.public_key
    impostor = bed.host("hx", "198.18.0.19")     # a plain namespace on the underlay (no WireGuard)
    link, sock = "pnwgimp", "/var/run/wireguard/pnwgimp.sock"
    proc = subprocess.Popen(["ip", "netns", "exec", impostor.ns, "env", "WG_PROCESS_FOREGROUND=1",
                             "wireguard-go", "-f", link], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(sock), timeout=10, what="the impostor's wireguard-go socket")

        def handshakes_with(private_key: str) -> tuple[bool, bool]:
            keyfile = tmp_path / "impostor.key"
            keyfile.write_text(private_key + "\n")
            keyfile.chmod(0o600)
            bed.run(impostor.ns, "wg", "set", link, "peer", h2_key, "remove")  # a fresh session
            wg = bed.run(impostor.ns, "wg", "set", link, "private-key", str(keyfile), "peer",
                         h2_key, "endpoint", f"{h2.vtep}:{WG_PORT}",
                         "allowed-ips", f"{h2_tunnel}/32")
            assert wg.returncode == 0, wg.stderr
            replied = any(bed.run(impostor.ns, "busybox", "ping", "-c", "1", "-W", "1", h2_tunnel).returncode == 0
                          for _ in range(3))
            shakes = bed.run(impostor.ns, "wg", "show", link, "latest-handshakes").stdout.split()
            return replied, len(shakes) == 2 and shakes[1] != "0"

        for argv in (("ip", "addr", "add", f"{h1_tunnel}/24", "dev", link), ("ip", "link", "set", link, "up")):
            assert bed.run(impostor.ns, *argv).returncode == 0
        assert handshakes_with(old_key) == (False, False)
        assert handshakes_with(new_key) == (True, True)          # the control
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # The control left h2 a session with the impostor under h1's key; h1 would wait for
    # WireGuard's 15 s keepalive timeout to re-handshake. One more rotation starts afresh.
    again = h1.ok("Pynet.RotateWireGuardKey", {})
    wait_until(lambda: [p.public_key.base64 for p in wg_peers(h2)] == [again["PublicKey"]],
               timeout=10, what="h2 taking h1's next key")
    reach(bed, pair)


def test_zz_report_timing():
    print("\nencrypted overlay timings:", {k: round(v, 3) for k, v in TIMING.items()})
