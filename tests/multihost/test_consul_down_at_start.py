"""pynet starts while its host's Consul is down (a reboot during an outage), answers each
call with an error naming Consul, and restores its state once Consul is back."""

from __future__ import annotations

import time

from tests.harness.multihost import MultiHost
from tests.multihost.support import container_ip, network_create, run_container

POOL, GATEWAY = "10.216.0.0/24", "10.216.0.1"  # test_cluster_ipam uses 10.211-215
CALL_LIMIT = 5.0
CONSUL_ERR = "consul at 127.0.0.1:8500"
NOT_YET = "pynet has not restored its state yet"


def test_plugin_starts_while_consul_is_down_and_restores_when_it_is_back(bed: MultiHost) -> None:
    leader = bed.consul_leader()
    host = next(h for h in bed.hosts if h is not leader)  # the rest of the cluster keeps a leader
    network_create(host, "late", POOL)
    bridge = "pn-" + host.docker("network", "inspect", "-f", "{{.Id}}", "late").stdout.strip()[:12]
    assert bridge in _links(host)
    try:
        # A reboot during a Consul outage: pynet and the bridge are gone, Consul does not answer.
        host.plugin.stop()
        host.run("ip", "link", "del", bridge)
        bed.kill_consul(host)
        host.plugin.start()
        bed.wait_plugin(host)  # it came up: Plugin.Activate answers
        assert host.plugin_call("/NetworkDriver.GetCapabilities")[0] == 200
        assert "cannot restore pynet's state at start" in host.plugin.log_tail(200)

        started = time.monotonic()
        status, answer = host.plugin_call("/IpamDriver.RequestPool",
                                          {"AddressSpace": "LocalDefault", "Pool": POOL})
        assert time.monotonic() - started < CALL_LIMIT
        assert status == 503 and NOT_YET in answer["Err"] and CONSUL_ERR in answer["Err"], answer
        started = time.monotonic()
        proc = run_container(host, "early", "late", check=False)
        assert time.monotonic() - started < 3 * CALL_LIMIT
        assert proc.returncode != 0 and CONSUL_ERR in proc.stderr and NOT_YET in proc.stderr, proc.stderr
        assert bridge not in _links(host)  # nothing restored, nothing made
        host.docker("rm", "-f", "early", check=False)  # `docker run -d` created it before failing

        bed.start_consul(host)
        bed.wait_for_cluster(timeout=60)
        run_container(host, "web", "late")
        run_container(host, "client", "late")
        assert bridge in _links(host)  # the late restore re-created it
        host.docker("exec", "client", "ping", "-c", "1", "-W", "2", GATEWAY)
        host.docker("exec", "client", "ping", "-c", "1", "-W", "2", container_ip(host, "web"))
        host.docker("rm", "-f", "web", "client")
        host.docker("network", "rm", "late")
        assert bridge not in _links(host)
    finally:  # the bed is shared by the session: its Consul and plugin run again, whatever failed
        if not host.consul.running():
            bed.start_consul(host)
            bed.wait_for_cluster(timeout=60)
        if not host.plugin.running():
            host.plugin.start()
            bed.wait_plugin(host)


def _links(host) -> str:
    return host.run("ip", "-br", "link").stdout
