"""`pynet serve` refuses to start, in one line with exit code 2 and no traceback, when
something it needs is missing (pynet/preflight.py); the probes are stand-ins here, the real
ones run in tests/install."""
from __future__ import annotations

import dataclasses

import pytest

from pynet import cli, preflight
from pynet.preflight import Probes, check
from pynet.settings import Settings

READY = Probes(euid=lambda: 0, libnftables=lambda: None, which=lambda b: f"/usr/sbin/{b}",
               writable_dir=lambda path: None, readable=lambda path: True,
               socket_answers=lambda path: False)


def with_(**probes) -> Probes:
    return dataclasses.replace(READY, **probes)


def test_everything_present_passes():
    assert check(Settings(), READY) is None
    assert check(Settings(store="consul", consul_ca_cert="/etc/pynet/ca.pem"), READY) is None


@pytest.mark.parametrize("probes, settings, expected", [
    (with_(euid=lambda: 1000), Settings(), "must run as root"),
    (with_(libnftables=lambda: "cannot load libnftables.so.1 (not found): install libnftables1 "
                               "(Debian/Ubuntu: apt-get install libnftables1)"),
     Settings(), "libnftables is missing: cannot load libnftables.so.1 (not found): install libnftables1"),
    (with_(which=lambda b: None), Settings(), "iptables is not on PATH"),
    (with_(which=lambda b: None if b == "iptables-restore" else b), Settings(),
     "iptables-restore is not on PATH"),
    (with_(writable_dir=lambda p: "/run is not writable" if p == "/run/docker/plugins" else None),
     Settings(), "cannot make the plugin socket /run/docker/plugins/pynet.sock: /run is not writable "
                 "(choose another path with --socket or PYNET_SOCKET)"),
    (with_(socket_answers=lambda p: True), Settings(), "something already serves on "
                                                       "/run/docker/plugins/pynet.sock"),
    (with_(writable_dir=lambda p: "/var/lib is not writable" if p == "/var/lib/pynet" else None),
     Settings(), "cannot keep the embedded store in /var/lib/pynet: /var/lib is not writable "
                 "(choose another directory with --state-dir or PYNET_STATE_DIR)"),
    (with_(readable=lambda p: p != "/etc/pynet/key.pem"),
     Settings(store="consul", consul_client_cert="/etc/pynet/c.pem", consul_client_key="/etc/pynet/key.pem"),
     "--consul-client-key /etc/pynet/key.pem cannot be read: give a readable PEM file "
     "(or the PYNET_CONSUL_CLIENT_KEY setting)"),
])
def test_each_missing_piece_is_named_with_its_remedy(probes, settings, expected):
    problem = check(settings, probes)
    assert problem is not None and expected in problem
    assert "\n" not in problem


def test_the_state_dir_is_not_needed_with_consul():
    probes = with_(writable_dir=lambda p: "no" if p == "/var/lib/pynet" else None)
    assert check(Settings(store="consul"), probes) is None


def test_serve_prints_one_line_and_exits_2_before_gunicorn(monkeypatch, capsys):
    monkeypatch.setattr(preflight, "Probes", lambda: with_(euid=lambda: 1000))
    started = []
    monkeypatch.setattr(cli, "run_server", lambda settings: started.append(settings) or 0)
    assert cli.main(["serve", "--socket", "/tmp/pynet-x.sock"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pynet serve: pynet serve must run as root")
    assert "Traceback" not in err
    assert started == []


def test_serve_starts_the_server_when_nothing_is_missing(monkeypatch):
    monkeypatch.setattr(preflight, "Probes", lambda: READY)
    started = []
    monkeypatch.setattr(cli, "run_server", lambda settings: started.append(settings.socket) or 0)
    assert cli.main(["serve", "--socket", "/tmp/pynet-y.sock"]) == 0
    assert started == ["/tmp/pynet-y.sock"]


def test_real_probes(tmp_path):
    assert preflight.writable_dir(str(tmp_path / "a" / "b")) is None
    (tmp_path / "file").write_text("x")
    assert preflight.writable_dir(str(tmp_path / "file" / "sub")) == f"{tmp_path / 'file'} is not a directory"
    assert preflight.socket_answers(str(tmp_path / "none.sock")) is False
    import socket
    path = str(tmp_path / "live.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        assert preflight.socket_answers(path) is True
    assert preflight.socket_answers(path) is False  # a leftover socket file nobody serves
