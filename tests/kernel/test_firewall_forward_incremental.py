"""The iptables shim (PYNET-FORWARD) is edited per network on a real kernel (issue 22): a
network added appends exactly its two rules, one removed deletes exactly its two, in one
iptables-restore per binary that touches nothing else; the chain is written whole only
for the first network, a repeated add, a refused edit and at start (sync). Whatever the
drift or the crash in between, the kernel ends with exactly the networks' rules, and
`pynet doctor`'s audit names any difference while it lasts."""
from __future__ import annotations

from driver.firewall import audit, commands
from driver.firewall.nft_rules import FAMILY, TABLE
from tests.kernel.firewall_topology import sh

NID_A, NID_B, NID_C = "a" * 64, "b" * 64, "c" * 64
BINARIES = ("iptables", "ip6tables")


def bridge(nid: str) -> str:
    return f"pn-{nid[:12]}"


def rules_of(*nids: str) -> list[str]:
    return sorted(f"-A PYNET-FORWARD -{d} {bridge(n)} -j ACCEPT" for n in nids for d in "io")


def chain(topo, binary: str = "iptables") -> list[str]:
    """PYNET-FORWARD's rules as the kernel holds them (sorted: only the set matters)."""
    out = sh(binary, "-S", "PYNET-FORWARD", ns=topo.host, check=False).stdout.splitlines()
    return sorted(line for line in out if line.startswith("-A "))


def jumps(topo, binary: str = "iptables") -> int:
    out = sh(binary, "-S", "FORWARD", ns=topo.host).stdout.splitlines()
    return out.count("-A FORWARD -j PYNET-FORWARD")


def exactly(topo, *nids: str) -> bool:
    return all(chain(topo, b) == rules_of(*nids) and jumps(topo, b) == (1 if nids else 0)
               for b in BINARIES)


def restores(topo) -> list[tuple[str, str]]:
    """Record (binary, script) of every iptables-restore the shim runs from now on."""
    seen: list[tuple[str, str]] = []
    shim = topo.deps.firewall.forward
    real = shim._command

    def run(argv, stdin, timeout):
        restore = [a for a in argv if a.endswith("-restore")]
        if restore:  # ip netns exec NS BINARY-restore -w N --noflush
            seen.append((restore[0], stdin))
        return real(argv, stdin, timeout)

    shim._command = run
    return seen


def records(topo):
    return topo.service.networks(), topo.service.endpoints()


def doctor(topo) -> list[str]:
    """What `pynet doctor`'s firewall audit reports, run inside the test's namespace."""
    def run(argv, stdin, timeout):
        return commands.run_command(["ip", "netns", "exec", topo.host, *argv], stdin, timeout)

    nets, eps = records(topo)
    found = audit.differences(nets, eps, run=run,
                              read_table=lambda: topo.nft.json(f"table {FAMILY} {TABLE}"))
    return [d.what for d in found if "iptables" in d.what]


def test_each_network_edits_only_its_own_two_rules(topo):
    topo.network(NID_A, "198.18.100.0/24")
    seen = restores(topo)
    topo.network(NID_B, "198.18.101.0/24")
    topo.network(NID_C, "198.18.102.0/24")
    assert exactly(topo, NID_A, NID_B, NID_C)
    # One transaction per binary per network, with its two rules only: no flush, no chain.
    assert [s for _, s in seen] == [
        f"*filter\n-A PYNET-FORWARD -i {bridge(n)} -j ACCEPT\n-A PYNET-FORWARD -o {bridge(n)} -j ACCEPT\nCOMMIT\n"
        for n in (NID_B, NID_B, NID_C, NID_C)]
    seen.clear()
    assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID_B})[0] == 200
    assert exactly(topo, NID_A, NID_C)
    assert [s for _, s in seen] == [
        f"*filter\n-D PYNET-FORWARD -i {bridge(NID_B)} -j ACCEPT\n"
        f"-D PYNET-FORWARD -o {bridge(NID_B)} -j ACCEPT\nCOMMIT\n"] * 2
    assert doctor(topo) == []
    for nid in (NID_A, NID_C):
        assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": nid})[0] == 200
    assert exactly(topo)  # the last one took the chain and the jump with it


def test_another_programs_rule_in_the_chain_survives_edits_until_a_restart(topo):
    """An edit touches nothing but its own rules: a rule someone put into pynet's chain
    stays (doctor names it) until the chain is next written whole, at restart."""
    topo.network(NID_A, "198.18.100.0/24")
    sh("iptables", "-A", "PYNET-FORWARD", "-i", "pnt-foreign", "-j", "ACCEPT", ns=topo.host)
    topo.network(NID_B, "198.18.101.0/24")
    assert chain(topo) == sorted(rules_of(NID_A, NID_B) + ["-A PYNET-FORWARD -i pnt-foreign -j ACCEPT"])
    assert doctor(topo) == ["iptables rule of no pynet network: -A PYNET-FORWARD -i pnt-foreign -j ACCEPT"]
    topo.start_plugin()
    topo.network(NID_C, "198.18.102.0/24")  # the first call restores (sync: whole), then edits
    assert exactly(topo, NID_A, NID_B, NID_C)
    assert doctor(topo) == []


def test_a_rule_deleted_by_hand_is_detected_and_healed_by_the_next_change(topo):
    topo.network(NID_A, "198.18.100.0/24")
    topo.network(NID_B, "198.18.101.0/24")
    sh("iptables", "-D", "PYNET-FORWARD", "-o", bridge(NID_A), "-j", "ACCEPT", ns=topo.host)
    assert doctor(topo) == [f"iptables rule missing: -A PYNET-FORWARD -o {bridge(NID_A)} -j ACCEPT"]
    # Deleting A's two rules is refused (one is gone): the chain is written whole for B.
    assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID_A})[0] == 200
    assert exactly(topo, NID_B)
    assert doctor(topo) == []
    # The same for an add: B's rule gone, C's edit goes in, B's stays missing (an edit
    # touches only C) until the next whole write: here, B's CreateNetwork replayed.
    sh("iptables", "-D", "PYNET-FORWARD", "-i", bridge(NID_B), "-j", "ACCEPT", ns=topo.host)
    topo.network(NID_C, "198.18.102.0/24")
    assert chain(topo) == sorted(set(rules_of(NID_B, NID_C))
                                 - {f"-A PYNET-FORWARD -i {bridge(NID_B)} -j ACCEPT"})
    assert doctor(topo) == [f"iptables rule missing: -A PYNET-FORWARD -i {bridge(NID_B)} -j ACCEPT"]
    topo.network(NID_B, "198.18.101.0/24")
    assert exactly(topo, NID_B, NID_C)


def test_the_chain_and_its_jump_deleted_by_hand_come_back_with_the_next_network(topo):
    topo.network(NID_A, "198.18.100.0/24")
    for binary in BINARIES:
        sh(binary, "-D", "FORWARD", "-j", "PYNET-FORWARD", ns=topo.host)
        sh(binary, "-F", "PYNET-FORWARD", ns=topo.host)
        sh(binary, "-X", "PYNET-FORWARD", ns=topo.host)
    assert doctor(topo) == ["iptables chain PYNET-FORWARD is missing"]
    topo.network(NID_B, "198.18.101.0/24")  # the edit is refused (no chain): written whole
    assert exactly(topo, NID_A, NID_B)
    # Only the jump gone: an edit puts it back (it is checked on every change).
    sh("iptables", "-D", "FORWARD", "-j", "PYNET-FORWARD", ns=topo.host)
    assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID_B})[0] == 200
    assert exactly(topo, NID_A)


def test_a_crash_between_the_shim_and_the_record_converges_at_restart(topo):
    """A process killed after it edited the chain for a network but before the network's
    record was committed (and, for another, between iptables and ip6tables): the rules of
    networks that are not recorded as ready go at restart, and edits then work on top."""
    from driver.models import NetworkRecord
    from driver.options import parse_network_options

    topo.network(NID_A, "198.18.100.0/24")
    ghost = NetworkRecord(id=NID_C, options=parse_network_options({}), bridge=bridge(NID_C),
                          bridge_created=True, subnets=("198.18.102.0/24",))
    topo.deps.firewall.forward.network_added(ghost)  # the edit went in, then the crash
    sh("iptables", "-A", "PYNET-FORWARD", "-i", bridge(NID_B), "-j", "ACCEPT", ns=topo.host)
    assert chain(topo) == sorted(rules_of(NID_A, NID_C) + [f"-A PYNET-FORWARD -i {bridge(NID_B)} -j ACCEPT"])
    assert set(doctor(topo)) == {f"iptables rule of no pynet network: {r}"
                                 for r in rules_of(NID_C) + [f"-A PYNET-FORWARD -i {bridge(NID_B)} -j ACCEPT"]}
    topo.start_plugin()
    topo.network(NID_B, "198.18.101.0/24")
    assert exactly(topo, NID_A, NID_B)
    assert doctor(topo) == []
    assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID_A})[0] == 200
    assert exactly(topo, NID_B)
