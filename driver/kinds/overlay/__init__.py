"""Overlay networks: one VXLAN segment across hosts, coordinated through the shared store.

    model.py     the records (definition, member, peer) and the pure rules (MTU, VNI, conflicts)
    underlay.py  which local address is the VTEP (--data-path-addr), pure
    peers.py     desired FDB/neighbour entries from the store's view, and the diff, pure
    liveness.py  which hosts are alive, judged on this host's own clock, pure
    registry.py  the store side: definitions, the VNI allocator, members, peers, heartbeats
    applier.py   the one writer of peer entries into the kernel
    watcher.py   the background job: store.watch -> view -> applier
    runtime.py   what the overlay kind and the composition root share
    check.py     what `pynet doctor` compares (OverlayKind.check), by the watcher's own rules
    tunnels.py   encrypted overlays: which hosts' WireGuard records are believed, the peer set, pure
    encryption.py  encrypted overlays: this host's one WireGuard link, its record and tunnel address

The kind itself is driver/kinds/overlay/kind.py; docs/overlay.md says how it all fits.
"""
