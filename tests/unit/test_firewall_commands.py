"""ForwardAccept and KernelKnobs built without their binaries: an injected `which` and
`run` (driver/firewall/commands.py) show every command they would run, and how they read
the answers. Nft (in-process libnftables) over a fake context."""
from __future__ import annotations

import subprocess

import pytest

from driver.firewall.forward_accept import CHAIN, FirewallError, ForwardAccept
from driver.firewall.nft import Nft
from driver.firewall.sysctl import KernelKnobs
from driver.models import NetworkRecord
from driver.options import parse_network_options


class Commands:
    """A fake runner: records (argv, stdin); answers from `answers` (argv prefix -> (rc, out, err))."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]] | None = None) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.answers = answers or {}
        self.hang = False

    def __call__(self, argv, stdin, timeout):
        argv = list(argv)
        self.calls.append((argv, stdin))
        if self.hang:
            raise subprocess.TimeoutExpired(argv, timeout)
        for prefix, (rc, out, err) in self.answers.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return subprocess.CompletedProcess(argv, rc, out, err)
        return subprocess.CompletedProcess(argv, 0, "", "")

    def argvs(self) -> list[list[str]]:
        return [argv for argv, _ in self.calls]


def installed(*names: str):
    return lambda binary: f"/usr/sbin/{binary}" if binary in names else None


def network(nid: str) -> NetworkRecord:
    return NetworkRecord(id=nid, options=parse_network_options({}), bridge=f"pn-{nid[:12]}",
                         bridge_created=True, gateways=(), subnets=("198.18.100.0/24",))


def test_forward_accept_needs_iptables_and_runs_nothing_to_be_built():
    with pytest.raises(FirewallError, match="iptables is not installed"):
        ForwardAccept(which=installed("ip6tables"), run=Commands())
    commands = Commands()
    ForwardAccept(which=installed("iptables", "ip6tables"), run=commands)
    assert commands.calls == []


def test_forward_accept_rewrites_its_chain_and_adds_the_jump_once():
    commands = Commands(answers={("iptables", "-w", "5", "-C"): (1, "", "no such rule")})
    shim = ForwardAccept(which=installed("iptables"), run=commands)  # no ip6tables here: IPv4 only
    shim.network_added(network("a" * 64))
    script, = [stdin for argv, stdin in commands.calls if argv[0] == "iptables-restore"]
    assert script == (f"*filter\n:{CHAIN} - [0:0]\n-A {CHAIN} -i pn-aaaaaaaaaaaa -j ACCEPT\n"
                      f"-A {CHAIN} -o pn-aaaaaaaaaaaa -j ACCEPT\nCOMMIT\n")
    assert commands.argvs() == [["iptables-restore", "-w", "5", "--noflush"],
                                ["iptables", "-w", "5", "-C", "FORWARD", "-j", CHAIN],
                                ["iptables", "-w", "5", "-I", "FORWARD", "1", "-j", CHAIN]]
    # Later networks edit only their own two rules (issue 22: flat in the number of networks).
    commands.calls.clear()
    commands.answers.clear()  # the jump is there now
    shim.network_added(network("b" * 64))
    assert commands.argvs() == [["iptables-restore", "-w", "5", "--noflush"],
                                ["iptables", "-w", "5", "-C", "FORWARD", "-j", CHAIN]]
    assert commands.calls[0][1] == (f"*filter\n-A {CHAIN} -i pn-bbbbbbbbbbbb -j ACCEPT\n"
                                    f"-A {CHAIN} -o pn-bbbbbbbbbbbb -j ACCEPT\nCOMMIT\n")
    commands.calls.clear()
    shim.network_removed(network("a" * 64))
    assert commands.argvs() == [["iptables-restore", "-w", "5", "--noflush"],
                                ["iptables", "-w", "5", "-C", "FORWARD", "-j", CHAIN]]
    assert commands.calls[0][1] == (f"*filter\n-D {CHAIN} -i pn-aaaaaaaaaaaa -j ACCEPT\n"
                                    f"-D {CHAIN} -o pn-aaaaaaaaaaaa -j ACCEPT\nCOMMIT\n")
    assert shim.rules() == [f"-A {CHAIN} -i pn-bbbbbbbbbbbb -j ACCEPT",
                            f"-A {CHAIN} -o pn-bbbbbbbbbbbb -j ACCEPT"]
    # The last network gone: the jump and the chain go too (issue 9, F).
    commands.calls.clear()
    commands.answers[("iptables", "-w", "5", "-D")] = (1, "", "Bad rule (does a matching rule exist?)")
    shim.network_removed(network("b" * 64))
    assert commands.argvs() == [["iptables", "-w", "5", "-D", "FORWARD", "-j", CHAIN],
                                ["iptables", "-w", "5", "-F", CHAIN],
                                ["iptables", "-w", "5", "-X", CHAIN]]


def test_forward_accept_writes_the_chain_whole_when_an_edit_is_refused_or_repeated():
    """An edit the kernel refuses (the chain or a rule deleted by hand) falls back to the
    whole chain from pynet's state; a network added again (replayed CreateNetwork) writes
    it whole too, which repairs any drift."""
    whole = f"*filter\n:{CHAIN} - [0:0]\n"
    commands = Commands()
    shim = ForwardAccept(which=installed("iptables", "ip6tables"), run=commands)
    shim.network_added(network("a" * 64))
    shim.network_added(network("b" * 64))
    commands.calls.clear()
    commands.answers[("iptables-restore",)] = (1, "", "Bad rule (does a matching rule exist?)")

    def refuse_edits(argv, stdin, timeout):
        rc = 1 if argv[0] == "iptables-restore" and not stdin.startswith(whole) else 0
        commands.calls.append((list(argv), stdin))
        return subprocess.CompletedProcess(argv, rc, "", "Bad rule" if rc else "")

    shim._command = refuse_edits
    shim.network_removed(network("a" * 64))
    restores = [stdin for argv, stdin in commands.calls if argv[0].endswith("-restore")]
    assert restores[0].startswith("*filter\n-D ")  # the edit, refused
    assert restores[1:] == [whole + f"-A {CHAIN} -i pn-bbbbbbbbbbbb -j ACCEPT\n"
                            f"-A {CHAIN} -o pn-bbbbbbbbbbbb -j ACCEPT\nCOMMIT\n"] * 2
    assert shim.rules() == [f"-A {CHAIN} -i pn-bbbbbbbbbbbb -j ACCEPT",
                            f"-A {CHAIN} -o pn-bbbbbbbbbbbb -j ACCEPT"]
    commands.calls.clear()
    shim._command = commands
    commands.answers.clear()
    shim.network_added(network("b" * 64))  # again: whole, for both binaries
    restores = [stdin for argv, stdin in commands.calls if argv[0].endswith("-restore")]
    assert len(restores) == 2 and all(r.startswith(whole) for r in restores)


def test_forward_accept_state_stays_as_before_when_one_binary_refuses():
    """ip6tables refusing an edit iptables took (and then the whole chain): the error is
    raised and the state is the one before (NftFirewall then syncs that state back)."""
    commands = Commands()
    shim = ForwardAccept(which=installed("iptables", "ip6tables"), run=commands)
    shim.network_added(network("a" * 64))
    commands.answers[("ip6tables-restore",)] = (4, "", "ip6tables is broken")
    with pytest.raises(FirewallError, match="ip6tables is broken"):
        shim.network_added(network("b" * 64))
    assert shim.rules() == [f"-A {CHAIN} -i pn-aaaaaaaaaaaa -j ACCEPT",
                            f"-A {CHAIN} -o pn-aaaaaaaaaaaa -j ACCEPT"]


def test_forward_accept_in_a_namespace_and_a_refusal():
    commands = Commands(answers={("ip", "netns", "exec", "pnt-x", "ip6tables-restore"): (2, "", "bad table")})
    shim = ForwardAccept(netns="pnt-x", which=installed("iptables", "ip6tables"), run=commands)
    with pytest.raises(FirewallError, match="ip netns exec pnt-x ip6tables-restore .* failed: bad table"):
        shim.sync([network("b" * 64)])
    assert all(argv[:4] == ["ip", "netns", "exec", "pnt-x"] for argv in commands.argvs())


def test_forward_accept_remove_all_deletes_every_jump_then_the_chain():
    class TwoJumps(Commands):
        jumps = 2

        def __call__(self, argv, stdin, timeout):
            done = super().__call__(argv, stdin, timeout)
            if "-D" in argv:
                self.jumps -= 1
                done.returncode = 0 if self.jumps >= 0 else 1  # "no such rule" once both are gone
            return done

    commands = TwoJumps()
    ForwardAccept(which=installed("iptables"), run=commands).remove_all()
    assert [argv[3:] for argv in commands.argvs()] == [["-D", "FORWARD", "-j", CHAIN]] * 3 + [
        ["-F", CHAIN], ["-X", CHAIN]]


class FakeContext:
    """What Nft uses of a libnftables context: cmd(text) -> (rc, out, err)."""

    def __init__(self, answers=None):
        self.scripts, self.answers = [], answers or {}

    def cmd(self, text):
        self.scripts.append(text)
        return self.answers.get(text.split()[0], (0, "", ""))

    def json_cmd(self, doc):
        raise AssertionError("pynet writes nft scripts, not JSON")


def test_nft_runs_scripts_in_process_and_reports_refusals():
    ctx = FakeContext(answers={"list": (1, "", "No such file or directory")})
    nft = Nft(context=lambda: ctx)
    nft.apply("add table inet pynet\n")
    assert ctx.scripts == ["add table inet pynet\n"]
    assert nft.text() == ""  # no table yet
    ctx.answers = {"add": (1, "", "Error: syntax error")}
    with pytest.raises(FirewallError, match="nft refused pynet's rules: Error: syntax error"):
        nft.apply("add table inet pynet\n")


def test_nft_without_libnftables_says_what_to_install(monkeypatch):
    from driver.firewall import libnftables

    def absent(soname=libnftables.SONAME):
        raise libnftables.LibnftablesUnavailable(f"cannot load {soname}: {libnftables.INSTALL_HINT}")

    monkeypatch.setattr(libnftables, "load", absent)
    with pytest.raises(FirewallError, match="apt-get install libnftables1"):
        Nft()


def test_kernel_knobs_in_a_namespace_go_through_the_runner():
    commands = Commands(answers={("ip", "netns", "exec", "pnt-x", "cat"): (0, "0\n", "")})
    KernelKnobs("pnt-x", run=commands).ensure_ip_forward()
    assert commands.argvs() == [
        ["ip", "netns", "exec", "pnt-x", "cat", "/proc/sys/net/ipv4/ip_forward"],
        ["ip", "netns", "exec", "pnt-x", "sh", "-c", 'printf %s "$1" > "$2"', "sh", "1",
         "/proc/sys/net/ipv4/ip_forward"]]
    refused = Commands(answers={("ip", "netns", "exec", "pnt-x", "sh"): (1, "", "read-only file system")})
    refused.answers[("ip", "netns", "exec", "pnt-x", "cat")] = (0, "0\n", "")
    with pytest.raises(FirewallError, match="cannot set /proc/sys/net/ipv4/ip_forward to 1 in netns pnt-x"):
        KernelKnobs("pnt-x", run=refused).ensure_ip_forward()


def test_commands_run_within_the_plugin_calls_budget():
    """Issue 9, F: nft and iptables may stall; inside a plugin call they get only what is left
    of its budget, so dockerd still gets an answer in time."""
    from pynet_core import deadline

    seen: list[float] = []
    commands = Commands()

    def run(argv, stdin, timeout):
        seen.append(timeout)
        return commands(argv, stdin, timeout)

    shim = ForwardAccept(which=installed("iptables"), run=run)
    with deadline.budget(0.5):
        shim.network_added(network("a" * 64))
    assert seen and all(0 < t <= 0.5 for t in seen)
    assert all(argv[1:3] == ["-w", "1"] for argv in commands.argvs() if argv[0].startswith("iptables"))
    seen.clear()
    shim.network_added(network("b" * 64))  # outside a call: the commands' own limit
    assert seen and set(seen) == {15.0}


def test_uplinks_are_the_bridges_with_a_default_route_among_many_routes():
    """Only default routes count (IPv4: destination and mask 0, up; IPv6: ::/0, not a
    reject route, not lo), and only bridges; the many other lines (a few per network) are
    passed over without being split (issue 22: this runs on every network change)."""
    route = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
             "br-up\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
             "br-down\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"
             + "".join(f"pn-{i:04d}\t00{i:02X}12C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
                       for i in range(200)))
    zero = "0" * 32
    ipv6 = (f"{zero} 00 {zero} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003   br-six\n"
            f"{zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200       br-rej\n"
            f"{zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00000001       lo\n"
            + "".join(f"fe800000000000000000000000000000 40 {zero} 00 {zero} 00000100 00000001 "
                      f"00000000 00000001 pn-{i:04d}\n" for i in range(200)))
    commands = Commands(answers={
        ("ip", "netns", "exec", "pnt-x", "cat", "/proc/net/route"): (0, route, ""),
        ("ip", "netns", "exec", "pnt-x", "cat", "/proc/net/ipv6_route"): (0, ipv6, ""),
        ("ip", "netns", "exec", "pnt-x", "test", "-e", "/sys/class/net/eth0/bridge"): (1, "", "")})
    assert KernelKnobs("pnt-x", run=commands).uplinks() == {"br-up", "br-six"}
    checked = sorted(argv[-1] for argv in commands.argvs() if argv[4] == "test")
    assert checked == ["/sys/class/net/br-six/bridge", "/sys/class/net/br-up/bridge"]
