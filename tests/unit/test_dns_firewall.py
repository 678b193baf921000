"""pynet DNS's firewall (driver/firewall/dns_rules.py, dns_guard.py): DNS to a served address
is let in from pynet bridges, docker_gwbridge and lo, and from --dns-allow-from subnets;
from anywhere else it is dropped (no open resolver on a bridge gateway the LAN can reach).
The rules' text here; the kernel's verdicts in tests/kernel/test_dns_firewall.py."""
from __future__ import annotations

import pytest

from driver.firewall.dns_guard import DnsGuard
from driver.firewall.dns_rules import delete, script
from driver.firewall.nft import Nft
from driver.firewall.nft_rules import ScriptValueError
from driver.models import NetworkRecord
from driver.names.service import Names
from driver.options import NetworkOptions
from pynet_core.store.memory import MemoryStore


def test_the_table_lets_in_pynet_bridges_gwbridge_lo_and_allowed_subnets_and_drops_the_rest():
    text = script([("172.17.0.1", 53), ("fd00::1", 5353)], ["pn-aaaaaaaaaaaa", "docker_gwbridge"],
                  ["10.0.0.0/8"])
    lines = text.splitlines()
    assert lines[:3] == ["add table inet pynet_dns", "delete table inet pynet_dns",
                         "add table inet pynet_dns"]
    assert 'add element inet pynet_dns askers { "docker_gwbridge", "lo", "pn-aaaaaaaaaaaa" }' in lines
    assert "add element inet pynet_dns served4 { 172.17.0.1 . udp . 53, 172.17.0.1 . tcp . 53 }" in lines
    assert "add element inet pynet_dns served6 { fd00::1 . udp . 5353, fd00::1 . tcp . 5353 }" in lines
    assert "add element inet pynet_dns allowed4 { 10.0.0.0/8 }" in lines
    assert not any("allowed6 {" in l and "element" in l for l in lines)
    rules = [l for l in lines if l.startswith("add rule")]
    assert [r.rsplit(" comment", 1)[0].split(" input ", 1)[1] for r in rules] == [
        "ip daddr . meta l4proto . th dport @served4 iifname @askers accept",
        "ip daddr . meta l4proto . th dport @served4 ip saddr @allowed4 accept",
        "ip daddr . meta l4proto . th dport @served4 drop",
        "ip6 daddr . meta l4proto . th dport @served6 iifname @askers accept",
        "ip6 daddr . meta l4proto . th dport @served6 ip6 saddr @allowed6 accept",
        "ip6 daddr . meta l4proto . th dport @served6 drop",
    ]
    assert "priority filter - 1; policy accept;" in text
    assert delete() == "add table inet pynet_dns\ndelete table inet pynet_dns\n"


@pytest.mark.parametrize("ifname", ['x"; flush ruleset; "', "a" * 16, "", "a b"])
def test_nothing_but_an_interface_name_gets_into_the_script(ifname):
    with pytest.raises(ScriptValueError):
        script([("172.17.0.1", 53)], [ifname])


class FakeContext:
    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.refuse = False

    def cmd(self, text):
        self.scripts.append(text)
        return (1, "", "no") if self.refuse else (0, "", "")

    def json_cmd(self, root):
        return 0, {"nftables": []}, ""


def test_the_guard_installs_once_per_change_and_says_when_nft_refuses(caplog):
    ctx = FakeContext()
    guard = DnsGuard([("172.17.0.1", 53)], nft=Nft(context=lambda: ctx))
    assert guard.update({"pn-a", "docker_gwbridge"}) and guard.update({"docker_gwbridge", "pn-a"})
    assert len(ctx.scripts) == 1
    ctx.refuse = True
    assert guard.update({"pn-b"}) is False and "could not be installed" in caplog.text
    ctx.refuse = False
    assert guard.update({"pn-b"}) and len(ctx.scripts) == 3
    guard.remove()
    assert ctx.scripts[-1] == delete()


class Source:
    gwbridge = "pnt-gwbridge"

    def read(self):
        return [], {}

    def follow(self, stop, changed):
        stop.wait()


class Records:
    def networks(self):
        return [NetworkRecord("a" * 64, NetworkOptions(), bridge="pn-aaaaaaaaaaaa",
                              subnets=("10.9.0.0/24",)),
                NetworkRecord("b" * 64, NetworkOptions(type="overlay"), bridge="pno-br",
                              subnets=("10.77.0.0/24",))]

    def endpoints(self, nid=None):
        return []


def test_the_names_tell_the_guard_the_bridges_containers_ask_from():
    told = []
    names = Names(MemoryStore(), "h1", Records(), Source(), 30.0, lambda t: None,
                  on_interfaces=lambda i: told.append(i))
    names.look()
    names.look()
    assert told == [frozenset({"pn-aaaaaaaaaaaa", "pnt-gwbridge"})]
