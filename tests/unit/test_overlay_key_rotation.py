"""Key rotation of encrypted overlays (issue 20): keys.rotate (real `wg`), the plane's
rotate (new key on the link, in the file, in the store; peers take it at their next sync),
the plugin method and `pynet overlay rotate-key` over the plugin socket, the schedule's
setting."""
from __future__ import annotations

import argparse
import io
import json
import os
import socketserver
import stat
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from driver.kinds.overlay.tunnels import LINK
from driver.wireguard.keys import load_or_create, rotate
from pynet_core.store.memory import MemoryStore
from tests.harness.overlay_fake import FakeOverlayHosts

SUBNET = "10.50.0.0/24"
N1, N2 = "1" * 64, "2" * 64


# --- the key file ------------------------------------------------------------------------
def test_rotate_applies_the_new_key_then_replaces_the_file_0600(tmp_path):
    old = load_or_create(tmp_path)
    applied = []
    new = rotate(tmp_path, applied.append)
    assert applied == [new] and new.public != old.public and new.private != old.private
    assert load_or_create(tmp_path).public == new.public
    st = os.stat(tmp_path / "wireguard.key")
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wireguard.key"]   # no temporary left


def test_a_rotation_whose_apply_fails_leaves_the_old_key(tmp_path):
    old = load_or_create(tmp_path)

    def refuse(_keys):
        raise RuntimeError("link refused")
    with pytest.raises(RuntimeError):
        rotate(tmp_path, refuse)
    assert load_or_create(tmp_path).public == old.public
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wireguard.key"]


# --- the plane, the plugin method ------------------------------------------------------------
@pytest.fixture
def hosts():
    made = FakeOverlayHosts(MemoryStore())
    yield made
    made.close()


def test_a_rotated_key_is_on_the_link_in_the_store_and_at_the_peers_without_a_new_link(hosts):
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    h1.sync(), h2.sync()
    (before,) = h2.wireguard.links[LINK].peers
    old_private = h1.wireguard.links[LINK].private_key
    answer = h1.ok("Pynet.RotateWireGuardKey", {})
    assert answer["Previous"] == before.public_key.base64 and answer["PublicKey"] != answer["Previous"]
    assert answer["Link"] is True
    assert h1.wireguard.links[LINK].private_key != old_private and h1.wireguard.created == 1
    record = json.loads(hosts.store.get("v1/overlay/hosts/h1/wireguard").value)
    assert record["public_key"] == answer["PublicKey"]
    h2.sync()
    (after,) = h2.wireguard.links[LINK].peers
    assert after.public_key.base64 == answer["PublicKey"]
    assert (after.endpoint, after.allowed_ips) == (before.endpoint, before.allowed_ips)


def test_rotation_is_refused_by_a_plugin_without_encrypted_overlays():
    hosts = FakeOverlayHosts(MemoryStore())
    try:
        h1 = hosts.add("h1", "198.18.0.11")
        status, answer = h1.call("Pynet.RotateWireGuardKey", {})
        assert status == 400 and "no WireGuard key to rotate" in answer["Err"]
    finally:
        hosts.close()


def test_without_a_link_only_the_key_changes(hosts):
    h1 = hosts.add("h1", "198.18.0.11", encrypted=True)
    answer = h1.ok("Pynet.RotateWireGuardKey", {})
    assert answer["Link"] is False and answer["Previous"] is None
    assert h1.wireguard.links == {} and hosts.store.list("v1/overlay/") == []


# --- `pynet overlay rotate-key` over the plugin socket -----------------------------------------
class _Plugin(BaseHTTPRequestHandler):
    answer = (200, {"PublicKey": "K" * 43 + "=", "Previous": "P" * 43 + "=", "Link": True})
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        self.seen.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
        status, body = self.answer
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _UnixHTTP(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)


@pytest.fixture
def plugin_socket(tmp_path):
    path = str(tmp_path / "pynet.sock")
    server = _UnixHTTP(path, _Plugin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def _run_cli(path, as_json):
    from pynet.ops.context import Context
    from pynet.ops.overlay import rotate_key
    from pynet.ops.render import Output
    from pynet.settings import Settings
    ctx = Context(Settings(socket=path), as_json=as_json)
    ctx.out = Output(as_json, io.StringIO())
    code = rotate_key(ctx, argparse.Namespace())
    return code, ctx.out.stream.getvalue()


def test_the_cli_asks_the_running_plugin_and_says_what_changed(plugin_socket):
    _Plugin.seen.clear()
    code, text = _run_cli(plugin_socket, False)
    assert code == 0 and "public key KKKK" in text and "was PPPP" in text and "re-handshake" in text
    assert _Plugin.seen == [("/Pynet.RotateWireGuardKey", b"{}")]
    code, text = _run_cli(plugin_socket, True)
    assert json.loads(text)["Link"] is True


def test_the_cli_names_a_refusal_and_a_plugin_not_running(plugin_socket, tmp_path):
    from pynet.ops.context import CannotLook
    _Plugin.answer = (400, {"Err": "this plugin serves no encrypted overlays"})
    try:
        with pytest.raises(CannotLook, match="refused to rotate the key: this plugin serves no"):
            _run_cli(plugin_socket, False)
    finally:
        _Plugin.answer = (200, {"PublicKey": "K" * 43 + "=", "Previous": "P" * 43 + "=", "Link": True})
    with pytest.raises(CannotLook, match="does not answer on"):
        _run_cli(str(tmp_path / "absent.sock"), False)


def test_the_cli_command_is_registered():
    from pynet.ops.commands import add_commands
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["overlay", "rotate-key", "--json"])
    assert args.json and callable(args.run)


# --- the schedule's setting -------------------------------------------------------------------
@pytest.mark.parametrize("value, ok", [("0", True), ("3600", True), ("60", True), ("59", False),
                                       ("-1", False)])
def test_the_rotation_interval_is_0_or_at_least_a_minute(monkeypatch, value, ok):
    from pynet.settings import add_serve_arguments, settings_from_args
    monkeypatch.delenv("PYNET_WIREGUARD_ROTATE_INTERVAL", raising=False)
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--wireguard-rotate-interval", value])
    if ok:
        assert settings_from_args(args).wireguard_rotate_interval == float(value)
    else:
        with pytest.raises(ValueError, match="at least 60"):
            settings_from_args(args)


def test_the_schedule_rotates_only_while_a_link_exists(hosts, monkeypatch):
    import pynet.app as app_module
    jobs = []
    monkeypatch.setattr(app_module, "every", lambda interval, fn, name, **kw: jobs.append((interval, fn, name))
                        or threading.Event())
    h1 = hosts.add("h1", "198.18.0.11", encrypted=True, wireguard_rotate_interval=3600.0)
    (interval, job, name) = next(j for j in jobs if j[2] == "WireGuard key rotation")
    assert interval == 3600.0
    job()
    assert h1.client.overlay.wireguard.rotations == 0          # no link: nothing to renew
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    job()
    assert h1.client.overlay.wireguard.rotations == 1


def test_the_metrics_count_peers_and_rotations(hosts):
    from pynet import metrics
    rotations = metrics.WIREGUARD_ROTATIONS._value.get()
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    h1.sync()
    assert metrics.WIREGUARD_PEERS._value.get() == 1
    h1.ok("Pynet.RotateWireGuardKey", {})
    assert metrics.WIREGUARD_ROTATIONS._value.get() == rotations + 1
    h1.ok("NetworkDriver.DeleteNetwork", {"NetworkID": N1})
    assert metrics.WIREGUARD_PEERS._value.get() == 0


def test_a_rotation_whose_publish_met_an_outage_is_published_by_the_next_sync(hosts):
    from pynet_core.errors import BackendUnavailable
    h1, h2 = (hosts.add(f"h{i}", f"198.18.0.1{i}", encrypted=True) for i in (1, 2))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    assert h2.create_network(N2, SUBNET, encrypted="")[0] == 200
    plane = h1.client.overlay.wireguard
    real = plane.registry.publish_wireguard

    def down(record):
        raise BackendUnavailable("consul could not be reached (a test outage)")
    plane.registry.publish_wireguard = down
    try:
        with pytest.raises(BackendUnavailable):
            plane.rotate()
    finally:
        plane.registry.publish_wireguard = real
    old = json.loads(hosts.store.get("v1/overlay/hosts/h1/wireguard").value)["public_key"]
    assert old != plane.record.public_key          # the link has the new key, the store not yet
    h1.sync()
    stored = json.loads(hosts.store.get("v1/overlay/hosts/h1/wireguard").value)["public_key"]
    assert stored == plane.record.public_key != old
    h2.sync()
    assert [p.public_key.base64 for p in h2.wireguard.links[LINK].peers] == [stored]
