"""Operating pynet, the parts that need no root: the metrics listener's address rule, the
store's timing wrapper, the state gauges (read back with prometheus_client's parser), JSON
log lines, aligned tables, the cross-host findings of `pynet ipam check`, and the systemd
unit (systemd-analyze verify) and console script that packaging ships."""
from __future__ import annotations

import argparse
import configparser
import io
import json
import logging
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driver.models import EndpointRecord
from ipam_driver.models import AddressClaim, encode
from ipam_driver.protocol import AddressRequest, PoolRequest
from ipam_driver.service import IpamService
from pynet import last_seen, metrics
from pynet_core.errors import BackendUnavailable
from pynet.logformat import JsonFormatter
from pynet.ops import ipam_check
from pynet.ops.context import Context
from pynet.ops.render import Output
from pynet.settings import Settings, add_serve_arguments, settings_from_args
from pynet_core.store import keys, records
from pynet_core.store.memory import MemoryStore

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("addr", ["127.0.0.1:9474", "[::1]:9474", "localhost:9474", "unix:/run/pynet/m.sock"])
def test_the_metrics_listener_takes_loopback_and_unix_sockets(addr):
    metrics.check_addr(addr, allow_remote=False)


@pytest.mark.parametrize("addr", ["0.0.0.0:9474", "192.0.2.7:9474", ":9474"])
def test_a_public_metrics_address_needs_the_operator_to_say_so(addr):
    with pytest.raises(ValueError, match="not a loopback address.*--metrics-allow-remote"):
        metrics.check_addr(addr, allow_remote=False)
    metrics.check_addr(addr, allow_remote=True)


def test_pynet_serve_refuses_a_public_metrics_address_before_serving(monkeypatch):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    with pytest.raises(ValueError, match="192.0.2.7"):
        settings_from_args(parser.parse_args(["--metrics-addr", "192.0.2.7:9474"]))
    monkeypatch.setenv("PYNET_METRICS_ALLOW_REMOTE", "true")
    s = settings_from_args(parser.parse_args(["--metrics-addr", "192.0.2.7:9474", "--log-format", "json"]))
    assert s.metrics_allow_remote and s.metrics_addr == "192.0.2.7:9474" and s.log_format == "json"
    for bad in ("unix:relative.sock", "127.0.0.1", "127.0.0.1:99999"):
        with pytest.raises(ValueError, match="--metrics-addr"):
            metrics.check_addr(bad, allow_remote=True)


def _samples(registry) -> dict:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class _Down(MemoryStore):
    def get(self, key):
        raise BackendUnavailable("consul at 127.0.0.1:8500 does not answer")

    def list(self, prefix):
        raise BackendUnavailable("consul at 127.0.0.1:8500 does not answer")


def test_the_store_wrapper_times_every_call_and_counts_failures():
    before = _samples(metrics.REGISTRY)
    store = metrics.MeasuredStore(MemoryStore())
    assert store.create("k", "v") and store.get("k").value == "v"
    with pytest.raises(BackendUnavailable):
        metrics.MeasuredStore(_Down()).get("k")
    after = _samples(metrics.REGISTRY)

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("pynet_store_call_duration_seconds_count", op="get") == 2
    assert grew("pynet_store_call_duration_seconds_count", op="create") == 1
    assert grew("pynet_store_errors_total", op="get") == 1
    assert grew("pynet_store_errors_total", op="create") == 0


def _ipam(store, host):
    return IpamService(store, host, block_size=0)


def test_the_state_gauges_count_pools_claims_and_endpoints():
    store = MemoryStore()
    ipam = _ipam(store, "h1")
    pool = ipam.request_pool(PoolRequest("LocalDefault", pool=__import__("ipaddress").ip_network("10.9.0.0/24")))
    ipam.request_address(AddressRequest(pool, kind="gateway"))
    ipam.request_address(AddressRequest(pool))
    ep = EndpointRecord("n1" * 32, "e1" * 32, "pnv1", "pnc1", ("10.9.0.2/24",), "02:42:0a:09:00:02")
    records.update(store, keys.endpoint("h1", ep.network_id, ep.id), lambda _: ep.to_dict(), "t")
    registry = CollectorRegistry()
    registry.register(metrics.StateCollector(store, "h1"))
    found = _samples(registry)
    assert found[("pynet_state_readable", ())] == 1
    assert found[("pynet_pools", (("space", "LocalDefault"),))] == 1
    assert found[("pynet_pools_held", (("space", "LocalDefault"),))] == 1
    assert found[("pynet_addresses_allocated", (("kind", "gateway"), ("pool", "10.9.0.0/24"),
                                                ("space", "LocalDefault")))] == 1
    assert found[("pynet_addresses_allocated", (("kind", "aux"), ("pool", "10.9.0.0/24"),
                                                ("space", "LocalDefault")))] == 1
    assert found[("pynet_endpoints", (("network", "n1" * 6),))] == 1
    registry = CollectorRegistry()
    registry.register(metrics.StateCollector(_Down(), "h1"))
    assert _samples(registry) == {("pynet_state_readable", ()): 0}


def test_a_json_log_line_carries_the_call_fields():
    record = logging.LogRecord("pynet", logging.INFO, __file__, 1, "IpamDriver.RequestAddress -> %d", (400,), None)
    for name, value in dict(call="IpamDriver.RequestAddress", pool="LocalDefault/10.9.0.0/24",
                            duration_ms=1.5, status=400, outcome="refused", error="bad \"pool\"\n").items():
        setattr(record, name, value)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "IpamDriver.RequestAddress -> 400" and data["level"] == "info"
    assert data["outcome"] == "refused" and data["duration_ms"] == 1.5 and data["error"] == "bad \"pool\"\n"
    assert data["time"].endswith("+00:00") and "network" not in data


def test_tables_are_aligned_and_plain_off_a_terminal():
    stream = io.StringIO()
    out = Output(False, stream)
    out.table(["NAME", "SUBNET"], [["a", "10.0.0.0/24"], ["longer-name", None]], tones=["bad", None])
    lines = stream.getvalue().splitlines()
    assert lines == ["NAME         SUBNET", "a            10.0.0.0/24", "longer-name  -"]
    assert "\033" not in stream.getvalue()


def _context(store, host) -> Context:
    ctx = Context(Settings(host_id=host, docker_host="unix:///nonexistent/docker.sock"), as_json=True)
    ctx.__dict__["store"] = store  # the cached store, as if opened from the settings
    ctx.out.stream = io.StringIO()
    return ctx


def test_ipam_check_reads_every_hosts_records(monkeypatch):
    import ipaddress
    store = MemoryStore()
    pools = {}
    for host in ("h1", "h2", "h3", "h4"):
        ipam = _ipam(store, host)
        pools[host] = ipam.request_pool(PoolRequest("LocalDefault", pool=ipaddress.ip_network("10.9.0.0/24")))
        ipam.request_address(AddressRequest(pools[host]))
    now = 1_000_000.0
    last_seen.report(store, "h1", clock=lambda: now)
    last_seen.report(store, "h2", clock=lambda: now - 15)      # reporting
    last_seen.report(store, "h3", clock=lambda: now - 3600)    # gone for an hour; h4 never reported
    monkeypatch.setattr(ipam_check.time, "time", lambda: now)
    # Two hosts' endpoint records naming one address, and an address no claim holds.
    for host, eid, address in (("h1", "a" * 64, "10.9.0.1/24"), ("h2", "b" * 64, "10.9.0.1/24"),
                               ("h2", "c" * 64, "10.9.0.200/24")):
        ep = EndpointRecord("n" * 64, eid, None, "pnc", (address,), "02:42:00:00:00:01")
        records.update(store, keys.endpoint(host, ep.network_id, eid), lambda _: ep.to_dict(), "t")
    # A swarm-scope claim: listed, never judged against this dockerd.
    store.create(keys.ipam_addr("GlobalDefault", "10.10.0.0/24", "10.10.0.5"),
                 encode(AddressClaim.new("aux", "", "h1", "x")))
    # h3's containers' DNS names stay stored while it is gone (never answered: docs/dns.md).
    for eid in ("d" * 64, "e" * 64):
        store.create(keys.name_record("h3", eid), "{}")
    ctx = _context(store, "h1")
    args = argparse.Namespace(older_than=60.0, host_timeout=600.0, repair=False, yes=False)
    before = store.list("")
    assert ipam_check.ipam_check(ctx, args) == 1
    doc = json.loads(ctx.out.stream.getvalue())
    assert store.list("") == before  # a dry run writes nothing
    assert doc["local"]["state"] == "unreachable"
    assert [(h["host"], h["last_seen_s"]) for h in doc["unseen_hosts"]] == [("h3", 3600), ("h4", None)]
    assert doc["unseen_hosts"][0]["pools"] == ["LocalDefault/10.9.0.0/24"]
    assert len(doc["unseen_hosts"][0]["addresses"]) == 1
    assert [h["names"] for h in doc["unseen_hosts"]] == [2, 0]
    text = Context(Settings(host_id="h1", docker_host="unix:///nonexistent/docker.sock"), as_json=False)
    text.__dict__["store"] = store
    text.out.stream = io.StringIO()
    assert ipam_check.ipam_check(text, args) == 1
    report = text.out.stream.getvalue()
    assert "h3: last seen 3600 s ago; 1 address claims, 1 pool holds, 0 blocks, 2 DNS name records" in report
    assert "consul kv delete -recurse pynet/v1/names/hosts/h3/" in report
    assert doc["duplicates"] == [{"address": "10.9.0.1", "endpoints": ["h1/" + "a" * 12, "h2/" + "b" * 12]}]
    assert [(u["host"], u["address"]) for u in doc["unclaimed"]] == [("h2", "10.9.0.200")]
    assert doc["swarm_scope"] == [{"pool": "10.10.0.0/24", "address": "10.10.0.5", "kind": "aux", "host": "h1"}]
    args.host_timeout = 5
    with pytest.raises(Exception, match="--host-timeout 5"):
        ipam_check.ipam_check(ctx, args)


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    text = (REPO / "packaging" / "pynet.service").read_text()
    unit.read_string(text)
    assert unit["Unit"]["Before"] == "docker.service"
    assert unit["Service"]["Restart"] == "always"
    # ...except after serve's start-up refusal (pynet/preflight.py): restarting cannot help.
    from pynet.preflight import EXIT_CODE
    assert unit["Service"]["RestartPreventExitStatus"] == str(EXIT_CODE)
    assert unit["Service"]["EnvironmentFile"].lstrip("-") == "/etc/default/pynet"
    exec_start = unit["Service"]["ExecStart"].split()
    assert exec_start[1:] == ["serve"]
    # verify checks that ExecStart's binary exists: point it at a stand-in of the console script.
    binary = tmp_path / "pynet"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    copy = tmp_path / "pynet.service"
    copy.write_text(text.replace(exec_start[0], str(binary)))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd)"
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [l for l in proc.stderr.splitlines() if "pynet.service" in l]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_the_console_script_is_pynet_cli_main():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"pynet": "pynet.cli:main"}
    assert any(d.startswith("prometheus-client") for d in project["dependencies"])
