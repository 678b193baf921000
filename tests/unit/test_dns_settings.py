"""`pynet serve --dns-addr/--dns-upstream/--dns-allow-from` and their PYNET_* twins: off by
default, refused before serving when they cannot work (issue 21 item 1)."""
import argparse

import pytest

from pynet.settings import add_serve_arguments, settings_from_args


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DNS_ADDR", "DNS_UPSTREAM", "DNS_ALLOW_FROM", "DNS_RATE"):
        monkeypatch.delenv(f"PYNET_{name}", raising=False)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def test_off_by_default():
    s = parse()
    assert (s.dns_addrs, s.dns_upstreams, s.dns_allow_from) == ((), None, ())


def test_flags_repeat_and_take_a_port():
    s = parse("--dns-addr", "172.17.0.1", "--dns-addr", "172.18.0.1:5353", "--dns-addr", "[fd00::1]:54",
              "--dns-addr", "fd00::2", "--dns-upstream", "127.0.0.53", "--dns-upstream", "[::1]:5300",
              "--dns-allow-from", "10.0.0.0/8")
    assert s.dns_addrs == (("172.17.0.1", 53), ("172.18.0.1", 5353), ("fd00::1", 54), ("fd00::2", 53))
    assert s.dns_upstreams == (("127.0.0.53", 53), ("::1", 5300))
    assert s.dns_allow_from == ("10.0.0.0/8",)
    assert s.dns_rate == 100.0 and parse("--dns-addr", "172.17.0.1", "--dns-rate", "500").dns_rate == 500.0


def test_environment_twins(monkeypatch):
    monkeypatch.setenv("PYNET_DNS_ADDR", "172.17.0.1, 172.18.0.1:53")
    monkeypatch.setenv("PYNET_DNS_UPSTREAM", "192.0.2.53")
    s = parse()
    assert s.dns_addrs == (("172.17.0.1", 53), ("172.18.0.1", 53))
    assert s.dns_upstreams == (("192.0.2.53", 53),)
    assert parse("--dns-addr", "172.19.0.1").dns_addrs == (("172.19.0.1", 53),)  # a flag wins


@pytest.mark.parametrize("argv,match", [
    (["--dns-addr", "0.0.0.0"], "not every address"),
    (["--dns-addr", "[::]:53"], "not every address"),
    (["--dns-addr", "dns.example"], "not a name"),
    (["--dns-addr", "172.17.0.1:0"], "1-65535"),
    (["--dns-addr", "172.17.0.1:99999"], "1-65535"),
    (["--dns-addr", "[fd00::1"], r"\[IPV6\]"),
    (["--dns-upstream", "192.0.2.53"], "need --dns-addr"),
    (["--dns-addr", "172.17.0.1", "--dns-upstream", "172.17.0.1"], "serves DNS on itself"),
    (["--dns-addr", "172.17.0.1", "--dns-allow-from", "ten"], "subnet"),
    (["--dns-addr", "172.17.0.1", "--dns-rate", "0"], "above 0"),
])
def test_bad_values_are_refused_before_serving(argv, match):
    with pytest.raises(ValueError, match=match):
        parse(*argv)
