"""`pynet ipam check` and `pynet status` on the three-host bed (--store consul).

Every host's records are compared: a host whose plugin died for good (kill -9, never
restarted) stops its heartbeat, and once it is older than --host-timeout its claims are
named; the hosts that beat are not. --repair on another host never touches them (only
this host's claims are ever released, on its own dockerd's word).
"""
from __future__ import annotations

import json
import sys
import time

from tests.harness.multihost import CONSUL_HTTP, REPO_ROOT, Host, MultiHost
from tests.harness.wait import wait_until
from tests.multihost.support import claims, container_ip, network_create, run_container

POOL = "10.213.0.0/24"
HOST_TIMEOUT = 20  # the smallest --host-timeout: two heartbeats (pynet/last_seen.py)


def pynet(h: Host, *args: str, timeout: float = 120) -> tuple[int, dict]:
    proc = h.run("env", f"PYTHONPATH={REPO_ROOT}", sys.executable, "-m", "pynet.cli", *args, "--json",
                 "--store", "consul", "--consul-addr", f"127.0.0.1:{CONSUL_HTTP}", "--host-id", h.name,
                 "--state-dir", str(h.dir / "pynet"), "--docker-host", f"unix://{h.docker_socket}",
                 check=False, timeout=timeout)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"pynet {' '.join(args)} on {h}: exit {proc.returncode}\n"
                             f"{proc.stdout}\n{proc.stderr}") from None


def test_ipam_check_names_the_claims_of_a_host_gone_for_good(bed: MultiHost) -> None:
    h1, h2, h3 = bed.hosts
    for h in bed.hosts:
        network_create(h, "shared", POOL)
        run_container(h, f"ops-{h}", "shared")
    ips = {h.name: container_ip(h, f"ops-{h}") for h in bed.hosts}

    code, status = pynet(h1, "status")
    assert code == 0 and status["store"]["backend"] == "consul", status
    assert status["store"]["reachable"] and status["store"]["leader"], status
    # Every plugin beats once its Consul has a leader (a bed just made may still elect one).
    wait_until(lambda: pynet(h1, "ipam", "check", "--host-timeout", str(HOST_TIMEOUT))[1]["unseen_hosts"] == [],
               15, "every host's first heartbeat")
    code, doc = pynet(h1, "ipam", "check", "--host-timeout", str(HOST_TIMEOUT))
    assert code == 0 and doc["unseen_hosts"] == [] and doc["duplicates"] == [], json.dumps(doc, indent=1)
    assert doc["local"]["state"] == "proven", doc

    h3.plugin.kill()  # gone for good: its heartbeat stands still from now on
    died = time.monotonic()
    wait_until(lambda: time.monotonic() - died > HOST_TIMEOUT + 1, HOST_TIMEOUT + 5, "the timeout")
    code, doc = pynet(h1, "ipam", "check", "--host-timeout", str(HOST_TIMEOUT))
    assert code == 1, doc
    assert [u["host"] for u in doc["unseen_hosts"]] == [h3.name], doc
    gone = doc["unseen_hosts"][0]
    assert gone["last_seen_s"] > HOST_TIMEOUT
    assert f"LocalDefault/{POOL}" in gone["pools"]
    assert any(ips[h3.name] in a for a in gone["addresses"]), gone
    assert doc["local"]["unused"] == [], doc  # h1's own claims are all in use
    shown = h1.run("env", f"PYTHONPATH={REPO_ROOT}", sys.executable, "-m", "pynet.cli", "ipam", "check",
                   "--store", "consul", "--consul-addr", f"127.0.0.1:{CONSUL_HTTP}", "--host-id", h1.name,
                   "--docker-host", f"unix://{h1.docker_socket}", "--host-timeout", str(HOST_TIMEOUT),
                   check=False)
    print(f"$ pynet ipam check --host-timeout {HOST_TIMEOUT}   (on {h1}, exit {shown.returncode})\n{shown.stdout}")
    assert shown.returncode == 1 and f"{h3.name}: last seen" in shown.stdout

    before = claims(bed, POOL)
    code, doc = pynet(h2, "ipam", "check", "--repair", "--yes", "--host-timeout", str(HOST_TIMEOUT))
    assert code == 1 and doc["released"] == [] and [u["host"] for u in doc["unseen_hosts"]] == [h3.name]
    assert claims(bed, POOL) == before and before[ips[h3.name]]["host"] == h3.name
    h3.plugin.start()
    bed.wait_plugin(h3)
    wait_until(lambda: pynet(h1, "ipam", "check", "--host-timeout", str(HOST_TIMEOUT))[1]["unseen_hosts"] == [],
               15, f"{h3} seen again once its plugin beats")
