"""How long the overlay's applier takes to program and to withdraw many peers, on the real kernel.

For each size (HOSTS x PEERS: that many remote hosts with that many endpoints each) it makes
a throwaway host namespace with an underlay address, an overlay namespace holding the bridge
and the VXLAN device exactly as CreateNetwork makes them, then times, through
driver/kinds/overlay/applier.py (the code every sync runs):

  program    every peer at once (HOSTS flood entries, HOSTS x PEERS unicast FDB entries with
             their bridge entries, HOSTS x PEERS neighbour entries)
  one more   one peer added to the full device (the cost of a sync that changes one entry)
  withdraw   every entry removed (what happens when the remote hosts die or leave)

and checks that the kernel then holds exactly what was asked. No dockerd, no store: only the
kernel work is measured.

Docker's overlay has no counterpart that can run alone (its peers arrive through Swarm's
gossip), so the same entries are also programmed, in a fresh namespace of their own, by
iproute2 in batch mode (`bridge -batch`, `ip -batch`): one netlink request per entry from a
compiled tool, as Docker's Go driver sends them (a neighbour and an FDB entry per peer).
Printed: pynet's applier / that baseline ("ratio pynet/iproute2").

Then (`--other-overlay HOSTSxPEERS`, default 3x1000) the case of issue 17: while a sync
programs that many peers into overlay A, the sync CreateNetwork runs for another overlay B:
how long B waited (the applier's locks; the store is not measured). Needs root. Example:

    sudo python3 bench/overlay_peers.py                      # 1 x 1000, 3 x 1000, A/B
    sudo python3 bench/overlay_peers.py --sizes 1x100 --withdraw-cap 60 --other-overlay none
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyroute2 import IPRoute  # noqa: E402

from driver import naming  # noqa: E402
from driver.netlink.api import FLOOD_MAC, FdbEntry, Neighbour  # noqa: E402
from driver.netlink.pyroute2_netlink import Pyroute2Netlink  # noqa: E402
from driver.kinds.overlay.applier import PeerApplier  # noqa: E402
from driver.kinds.overlay.peers import Desired  # noqa: E402
from tests.harness.netns import Namespaces  # noqa: E402

LOCAL = "198.18.9.1"
BRIDGE = naming.OVERLAY_BRIDGE
VXLAN = "pnxbench"


def want(hosts: int, peers: int) -> Desired:
    fdb, neigh = set(), set()
    for h in range(hosts):
        vtep = f"198.18.9.{10 + h}"
        fdb.add(FdbEntry(FLOOD_MAC, vtep))
        for i in range(peers):
            n = h * peers + i
            mac = f"02:42:0a:{h:02x}:{i >> 8:02x}:{i & 0xff:02x}"
            fdb.add(FdbEntry(mac, vtep))
            neigh.add(Neighbour(f"10.{60 + h}.{n >> 8 & 0xff}.{n & 0xff}", mac))
    return Desired(frozenset(fdb), frozenset(neigh))


def device(spaces: Namespaces, host: str | None = None, vni: int = 4242,
           vxlan: str = VXLAN) -> tuple[Pyroute2Netlink, str]:
    """A host namespace with LOCAL on a link (unless given), and an overlay namespace with
    br0 and the VXLAN device (made in the host namespace and moved in, as the overlay kind
    does)."""
    if host is not None:
        overlay = spaces.make("bo")
        netlink = Pyroute2Netlink(host)
        netlink.within(overlay).ensure_bridge(BRIDGE, 1450, [])
        netlink.add_vxlan(vxlan, vni, LOCAL, 4789, 1450, BRIDGE, netns=overlay)
        return netlink, overlay
    host = spaces.make("bh")
    with IPRoute(netns=host, flags=0) as ipr:
        # A veth pair: this kernel may lack the dummy driver; only the address matters.
        ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth1"})
        idx = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=idx, address=LOCAL, prefixlen=24)
        ipr.link("set", index=idx, state="up")
    overlay = spaces.make("bo")
    netlink = Pyroute2Netlink(host)
    netlink.within(overlay).ensure_bridge(BRIDGE, 1450, [])
    netlink.add_vxlan(vxlan, vni, LOCAL, 4789, 1450, BRIDGE, netns=overlay)
    return netlink, overlay


def timed_apply(applier: PeerApplier, overlay: str, desired: Desired, cap: float | None) -> float | None:
    """Seconds the apply took, or None if it had not finished after `cap` seconds (it is
    left to finish in the background: the old per-entry applier can take minutes)."""
    done = threading.Event()
    started = time.perf_counter()
    took: list[float] = []

    def run() -> None:
        applier.apply(overlay, VXLAN, BRIDGE, desired)
        took.append(time.perf_counter() - started)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    done.wait(cap)
    return took[0] if took else None


def iproute2_program(spaces: Namespaces, desired: Desired) -> float:
    """Seconds iproute2's batch mode takes to program `desired` into a fresh overlay device
    (the same three entries per unicast peer as the applier: the remote FDB entry, the
    bridge's entry beside it, the neighbour), checked like the applier's."""
    netlink, overlay = device(spaces)
    fdb, neigh = [], []
    for e in sorted(desired.fdb):
        if e.mac == FLOOD_MAC:
            fdb.append(f"fdb append {e.mac} dev {VXLAN} dst {e.dst} self permanent")
        else:
            fdb.append(f"fdb replace {e.mac} dev {VXLAN} dst {e.dst} self permanent")
            fdb.append(f"fdb replace {e.mac} dev {VXLAN} master static")
    neigh = [f"neigh replace {n.ip} lladdr {n.mac} dev {BRIDGE} nud permanent"
             for n in sorted(desired.neighbours)]
    with tempfile.TemporaryDirectory(prefix="pynet-bench-peers-") as tmp:
        batches = {"bridge": Path(tmp) / "fdb", "ip": Path(tmp) / "neigh"}
        batches["bridge"].write_text("\n".join(fdb) + "\n")
        batches["ip"].write_text("\n".join(neigh) + "\n")
        started = time.perf_counter()
        for tool, path in batches.items():
            subprocess.run([tool, "-n", overlay, "-batch", str(path)], check=True, capture_output=True,
                           timeout=600)
        took = time.perf_counter() - started
    assert kernel_holds(netlink, overlay) == (len(desired.fdb), len(desired.neighbours)), "iproute2"
    return took


def kernel_holds(netlink: Pyroute2Netlink, overlay: str) -> tuple[int, int]:
    inside = netlink.within(overlay)
    return len(inside.fdb_entries(VXLAN)), len(inside.neighbours(BRIDGE))


def one_size(hosts: int, peers: int, cap: float | None) -> None:
    spaces = Namespaces()
    try:
        netlink, overlay = device(spaces)
        applier = PeerApplier(netlink)
        full = want(hosts, peers)
        label = f"{hosts} x {peers} peers"
        program = timed_apply(applier, overlay, full, cap)
        if program is None:
            print(f"{label}: program did not finish within {cap:g} s", flush=True)
            return
        assert kernel_holds(netlink, overlay) == (len(full.fdb), len(full.neighbours)), "program"
        baseline = iproute2_program(spaces, full)
        extra = Desired(full.fdb | {FdbEntry("02:42:0a:ff:ff:ff", "198.18.9.10")},
                        full.neighbours | {Neighbour("10.59.255.255", "02:42:0a:ff:ff:ff")})
        one_more = timed_apply(applier, overlay, extra, cap)
        withdraw = timed_apply(applier, overlay, Desired(frozenset(), frozenset()), cap)
        if withdraw is None:
            left, _ = kernel_holds(netlink, overlay)
            gone = len(extra.fdb) - left
            print(f"{label}: program {program:.2f} s, one more {one_more:.3f} s, withdraw: only "
                  f"{gone} of {len(extra.fdb)} FDB entries gone after {cap:g} s", flush=True)
            return
        assert kernel_holds(netlink, overlay) == (0, 0), "withdraw"
        print(f"{label}: program {program:.2f} s ({len(full.fdb)} FDB + {len(full.neighbours)} "
              f"neighbour entries), one more {one_more:.3f} s, withdraw {withdraw:.2f} s", flush=True)
        print(f"{label}: program, pynet's applier {program:.2f} s, iproute2 -batch {baseline:.2f} s "
              f"ratio pynet/iproute2 {program / baseline:.3f}  (lower is better)", flush=True)
    finally:
        spaces.close()


def other_overlay(hosts: int, peers: int, cap: float | None) -> None:
    """A sync programs HOSTS x PEERS into overlay A (the watcher's); meanwhile CreateNetwork
    of overlay B runs the sync of B (one peer host): how long B's apply waited. Through the
    applier, where the sync's locks are (the watcher holds its own lock only while reading
    the store: before the per-overlay sync it held it for the whole apply, and the applier
    had one lock for every device)."""
    spaces = Namespaces()
    try:
        netlink, ns_a = device(spaces, vxlan="pnxa")
        _, ns_b = device(spaces, host=netlink._netns, vni=4243, vxlan="pnxb")
        applier = PeerApplier(netlink)
        background = threading.Thread(target=applier.apply, args=(ns_a, "pnxa", BRIDGE, want(hosts, peers)),
                                      daemon=True)
        started = time.perf_counter()
        background.start()
        time.sleep(0.2)  # A is being programmed by now
        asked = time.perf_counter()
        applier.apply(ns_b, "pnxb", BRIDGE, want(1, 2))
        waited = time.perf_counter() - asked
        background.join(cap)
        a_took = time.perf_counter() - started
        print(f"CreateNetwork's sync of overlay B while another sync programs {hosts} x {peers} peers into A: "
              f"B waited {waited:.3f} s; A's sync took {a_took:.2f} s"
              + ("" if not background.is_alive() else f" (not done after {cap:g} s)"), flush=True)
    finally:
        spaces.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1x1000,3x1000", help="HOSTSxPEERS,... (default 1x1000,3x1000)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--withdraw-cap", type=float, default=None,
                        help="give up waiting for one apply after this many seconds")
    parser.add_argument("--other-overlay", default="3x1000",
                        help="HOSTSxPEERS of overlay A in the A/B case, or none")
    args = parser.parse_args()
    for _ in range(args.rounds):
        for size in args.sizes.split(","):
            hosts, peers = (int(x) for x in size.split("x"))
            one_size(hosts, peers, args.withdraw_cap)
        if args.other_overlay != "none":
            hosts, peers = (int(x) for x in args.other_overlay.split("x"))
            other_overlay(hosts, peers, args.withdraw_cap)


if __name__ == "__main__":
    main()
