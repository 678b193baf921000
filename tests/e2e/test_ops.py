"""The operator commands, metrics and JSON logs against the real dockerd and plugin.

- `pynet ports` shows the host port Docker chose for `-p 0:80`, and that port serves;
- `pynet status`, `networks`, `endpoints`, `ipam show` read the same records;
- `pynet doctor` says all fine, then finds a bridge deleted by hand and an nft rule deleted
  by hand (each with its fix), and all fine again once the fix (a plugin restart) is done;
- `pynet ipam check` reports an address leaked by a kill -9 between RequestAddress and
  CreateEndpoint, touches nothing while pointed at a dockerd that does not know the
  networks, and with --repair gives it back (and only it);
- the metrics page, read with prometheus_client's own parser, counts exactly the calls made;
  every log line of a --log-format json plugin is one JSON object with the call's fields.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import IPRoute

from driver.firewall.nft_rules import FAMILY, TABLE
from tests.harness.dockerd import SECOND, DockerDaemon
from tests.harness.e2e_support import DRIVER, claimed, ip_of, name, run
from tests.harness.plugin import REPO_ROOT
from tests.harness.wait import wait_until

VIEW_SUBNET = "198.19.223.0/28"
LEAK_SUBNET = "198.19.222.0/28"
LEAK_GATEWAY = "198.19.222.1"
OLDER_THAN = 60  # the smallest --older-than (the leak check's smallest grace)


def pynet(plugin, dockerd, *args: str, docker_host: str | None = None,
          timeout: float = 200) -> tuple[int, object]:
    """Run `pynet ARGS --json` as an operator would, against the plugin's store."""
    cmd = [sys.executable, "-m", "pynet.cli", *args, "--json", "--state-dir", str(plugin.state_dir),
           "--docker-host", docker_host or dockerd.base_url]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("PYNET_DOCKER_HOST", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL, cwd=REPO_ROOT)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"{' '.join(args)}: not JSON (exit {proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}") from None


def text(plugin, dockerd, *args: str) -> tuple[int, str]:
    """The same without --json: what a person reads."""
    cmd = [sys.executable, "-m", "pynet.cli", *args, "--state-dir", str(plugin.state_dir),
           "--docker-host", dockerd.base_url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdin=subprocess.DEVNULL)
    print(f"$ pynet {' '.join(args)}   (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
    return proc.returncode, proc.stdout


def network_id(dockerd, net: str) -> str:
    return dockerd.cli("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()


def delete_nft_rule(comment: str) -> None:
    listing = json.loads(subprocess.run(["nft", "-a", "-j", "list", "table", FAMILY, TABLE],
                                        capture_output=True, text=True, check=True).stdout)
    for item in listing["nftables"]:
        rule = item.get("rule")
        if rule and rule.get("comment") == comment:
            subprocess.run(["nft", "delete", "rule", FAMILY, TABLE, rule["chain"], "handle",
                            str(rule["handle"])], check=True)
            return
    raise AssertionError(f"no nft rule with comment {comment!r}")


def delete_icc_element(bridge: str) -> None:
    subprocess.run(["nft", "delete", "element", FAMILY, TABLE, "icc",
                    f'{{ "{bridge}" . "{bridge}" }}'], check=True)


def test_ports_status_and_doctor_against_the_kernel(dockerd, busybox_image, plugin):
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", VIEW_SUBNET, net)
    nid = network_id(dockerd, net)
    ctr = name("web")
    dockerd.cli("run", "-d", "--pull", "never", "--name", ctr, "--network", net, "-p", "0:80",
                busybox_image, "sh", "-c", "echo pynet-ops > /tmp/index.html; exec httpd -f -p 80 -h /tmp")
    code, ports = pynet(plugin, dockerd, "ports")
    assert code == 0, ports
    mine = [p for p in ports["ports"] if p["container"] == ctr]
    assert len(mine) == 1, ports
    port = mine[0]
    assert port["host_port"] > 0 and port["container_port"] == 80 and port["proto"] == "tcp"
    assert port["requested"] == "0" and port["container_ip"] == ip_of(dockerd, ctr)
    wait_until(lambda: _serves(port["host_port"]), 15, f"127.0.0.1:{port['host_port']} serving")
    assert fetch(f"http://127.0.0.1:{port['host_port']}/").strip() == "pynet-ops"
    text(plugin, dockerd, "ports")

    code, status = pynet(plugin, dockerd, "status")
    assert code == 0 and status["store"]["reachable"] and status["problems"] == [], status
    assert any(n["id"] == nid and n["name"] == net and n["endpoints"] == 1 for n in status["networks"])
    text(plugin, dockerd, "status")
    code, eps = pynet(plugin, dockerd, "endpoints", net)
    assert code == 0 and [e["container"] for e in eps["endpoints"]] == [ctr], eps
    code, pool = pynet(plugin, dockerd, "ipam", "show", VIEW_SUBNET)
    assert code == 0 and {c["address"] for c in pool["claims"]} == claimed(plugin, VIEW_SUBNET)

    code, doc = pynet(plugin, dockerd, "doctor")
    assert code == 0 and doc["differences"] == [], doc
    text(plugin, dockerd, "doctor")

    # An nft rule removed by hand, and a network's element: each named, with its fix; the
    # fix (a restart) brings them back.
    delete_nft_rule("isolated from other bridges")
    delete_icc_element(f"pn-{nid[:12]}")
    code, doc = pynet(plugin, dockerd, "doctor")
    assert code == 1, doc
    assert [d["what"] for d in doc["differences"]] == [
        f"nft element of icc missing: 'net {nid[:12]}: icc=on'",
        "nft rule in chain forward missing: 'isolated from other bridges'"], doc
    assert all("restart pynet" in d["fix"] for d in doc["differences"])
    text(plugin, dockerd, "doctor")
    plugin.restart()
    code, doc = pynet(plugin, dockerd, "doctor")
    assert code == 0 and doc["differences"] == [], doc

    # The bridge deleted by hand (its veth stays, without a master).
    bridge = f"pn-{nid[:12]}"
    with IPRoute() as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname=bridge)[0])
    code, doc = pynet(plugin, dockerd, "doctor")
    assert code == 1, doc
    found = [d["what"] for d in doc["differences"]]
    assert f"bridge {bridge} of network {nid[:12]} is missing" in found, found
    assert any(w.startswith("veth ") and "is not a port of" in w for w in found), found
    text(plugin, dockerd, "doctor")
    plugin.restart()  # the fix it names: restore re-creates the bridge, re-attaches the veth
    wait_until(lambda: pynet(plugin, dockerd, "doctor")[0] == 0, 15, "doctor all fine again")
    wait_until(lambda: _serves(port["host_port"]), 15, "the published port serving again")


def _serves(port: int) -> bool:
    try:
        return fetch(f"http://127.0.0.1:{port}/").strip() == "pynet-ops"
    except OSError:
        return False


def test_ipam_check_finds_a_real_leak_and_repair_gives_only_it_back(dockerd, busybox_image, plugin,
                                                                     tmp_path: Path):
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", LEAK_SUBNET, "--gateway", LEAK_GATEWAY, net)
    keeper = ip_of(dockerd, run(dockerd, busybox_image, net))
    # What Docker does for a container: RequestAddress... and then pynet is killed -9.
    status, answer = plugin.call("/IpamDriver.RequestAddress",
                                 {"PoolID": f"LocalDefault/{LEAK_SUBNET}", "Address": "", "Options": {}})
    assert status == 200, answer
    leaked = answer["Address"].split("/")[0]
    plugin.kill9()
    plugin.start()  # its own leak check waits 300 s: the operator is faster
    before = claimed(plugin, LEAK_SUBNET)
    assert before == {LEAK_GATEWAY, keeper, leaked}

    code, doc = pynet(plugin, dockerd, "ipam", "check")
    assert code == 1, doc
    assert doc["local"]["state"] == "proven", doc
    assert [u["address"] for u in doc["local"]["unused"]] == [leaked], doc
    assert claimed(plugin, LEAK_SUBNET) == before  # a dry run
    text(plugin, dockerd, "ipam", "check")

    # Pointed at a dockerd that knows none of pynet's networks: nothing judged, nothing touched.
    with DockerDaemon(tmp_path / "empty-dockerd", layout=SECOND, extra_args=("--iptables=false",)) as empty:
        code, doc = pynet(plugin, dockerd, "ipam", "check", "--repair", "--yes",
                          docker_host=empty.base_url)
        assert code == 3 and doc["local"]["state"] == "not proven", doc
        assert doc["released"] == [] and doc["local"]["unused"] == []
        assert claimed(plugin, LEAK_SUBNET) == before

    started = time.monotonic()
    code, doc = pynet(plugin, dockerd, "ipam", "check", "--repair", "--yes",
                      "--older-than", str(OLDER_THAN))
    assert time.monotonic() - started >= OLDER_THAN, "released before --older-than was up"
    assert code == 0, doc
    assert doc["released"] == [f"v1/ipam/addrs/LocalDefault/{LEAK_SUBNET.replace('/', '_')}/{leaked}"], doc
    assert claimed(plugin, LEAK_SUBNET) == {LEAK_GATEWAY, keeper}
    code, doc = pynet(plugin, dockerd, "ipam", "check")
    assert code == 0 and doc["local"]["unused"] == [], doc
    text(plugin, dockerd, "ipam", "check")
    # The address serves a container again.
    assert ip_of(dockerd, run(dockerd, busybox_image, net, "--ip", leaked)) == leaked


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _samples(url: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(fetch(url)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_calls_made_and_json_logs_carry_them(dockerd, busybox_image, plugin):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    saved = dict(plugin.extra_env)
    plugin.extra_env.update(PYNET_METRICS_ADDR=f"127.0.0.1:{port}", PYNET_LOG_FORMAT="json")
    try:
        plugin.restart()
        before = _samples(url)
        assert _value(before, "pynet_restore_duration_seconds") > 0
        for _ in range(3):
            assert plugin.call("/IpamDriver.GetCapabilities")[0] == 200
        for _ in range(2):  # refused: a PoolID pynet never wrote
            status, answer = plugin.call("/IpamDriver.RequestAddress", {"PoolID": "nonsense", "Address": ""})
            assert status == 400, answer
        net = name("net")
        dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.221.0/28", net)
        nid = network_id(dockerd, net)
        run(dockerd, busybox_image, net)
        after = _samples(url)

        def delta(method: str, outcome: str) -> float:
            key = dict(method=method, outcome=outcome)
            return _value(after, "pynet_plugin_calls_total", **key) - _value(before, "pynet_plugin_calls_total", **key)

        assert delta("IpamDriver.GetCapabilities", "ok") == 3
        assert delta("IpamDriver.RequestAddress", "refused") == 2
        assert delta("NetworkDriver.CreateNetwork", "ok") == 1
        assert delta("NetworkDriver.CreateEndpoint", "ok") == 1
        assert delta("IpamDriver.RequestPool", "ok") >= 1
        assert _value(after, "pynet_plugin_call_duration_seconds_count", method="IpamDriver.GetCapabilities") - \
            _value(before, "pynet_plugin_call_duration_seconds_count", method="IpamDriver.GetCapabilities") == 3
        assert _value(after, "pynet_endpoints", network=nid[:12]) == 1
        # The container's address (Docker 20.10 names no container in RequestAddress: kind aux).
        assert sum(_value(after, "pynet_addresses_allocated", space="LocalDefault", pool="198.19.221.0/28",
                          kind=kind) for kind in ("endpoint", "aux")) == 1
        assert _value(after, "pynet_addresses_allocated", space="LocalDefault", pool="198.19.221.0/28",
                      kind="gateway") == 1
        assert _value(after, "pynet_pools_held", space="LocalDefault") >= 1
        assert _value(after, "pynet_store_call_duration_seconds_count", op="get") > \
            _value(before, "pynet_store_call_duration_seconds_count", op="get")
        assert _value(after, "pynet_state_readable") == 1

        log = plugin.log_tail(4000).rsplit("===== pynet test start", 1)[-1].split("\n", 1)[1]
        lines = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line JSON
        calls = [entry for entry in lines if entry.get("call")]
        for entry in lines:
            assert {"time", "level", "logger", "message"} <= set(entry), entry
        caps = [c for c in calls if c["call"] == "IpamDriver.GetCapabilities"]
        assert len(caps) == 3 and all(c["outcome"] == "ok" and c["status"] == 200 for c in caps)
        assert all(isinstance(c["duration_ms"], float) for c in calls)
        refused = [c for c in calls if c["call"] == "IpamDriver.RequestAddress" and c["outcome"] == "refused"]
        assert len(refused) == 2 and all("nonsense" in c["error"] and c["pool"] == "nonsense" for c in refused)
        created = [c for c in calls if c["call"] == "NetworkDriver.CreateEndpoint"]
        assert len(created) == 1 and created[0]["network"] == nid and created[0]["endpoint"]
    finally:
        plugin.extra_env.clear()
        plugin.extra_env.update(saved)
        plugin.restart()
