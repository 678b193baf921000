"""The least-privilege ACL policy in docs/consul-policy.hcl is enough for everything pynet
does in Consul, and grants nothing outside its prefix."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from pynet_core.errors import BackendUnavailable
from pynet_core.store.consul import ConsulStore
from pynet_core.retry_queue import RetryQueue
from ipam_driver.service import IpamService
from tests.fakes.ipam_client import DockerIpam
from tests.harness.consul import ConsulAgent

POLICY = Path(__file__).resolve().parents[2] / "docs" / "consul-policy.hcl"
MASTER = "8f0c2a4e-1b3d-4e5f-9a7b-6c8d0e2f4a6b"


def _api(agent: ConsulAgent, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"http://{agent.addr}{path}", data=json.dumps(body).encode(), method="PUT",
                                 headers={"X-Consul-Token": MASTER})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.consul
def test_documented_policy_is_enough_for_ipam_and_no_more() -> None:
    with ConsulAgent(acl_token=MASTER) as agent:
        _api(agent, "/v1/acl/policy", {"Name": "pynet", "Rules": POLICY.read_text()})
        token = _api(agent, "/v1/acl/token", {"Policies": [{"Name": "pynet"}]})["SecretID"]
        store = ConsulStore(agent.addr, token=token, prefix="pynet/")
        ipam = DockerIpam(IpamService(store, "h1", retries=RetryQueue(background=False)))
        pool, _ = ipam.request_pool("LocalDefault", "10.9.0.0/24", "", {}, False)
        gateway = ipam.request_address(pool, "", {"RequestAddressType": "com.docker.network.gateway"})
        address = ipam.request_address(pool, "", {"com.docker.network.endpoint.name": "web"})
        assert (gateway, address) == ("10.9.0.1/24", "10.9.0.2/24")
        ipam.release_address(pool, "10.9.0.2")
        ipam.release_address(pool, "10.9.0.1")
        ipam.release_pool(pool)
        assert [e.key for e in store.list("v1/ipam/addrs/")] == []
        outside = ConsulStore(agent.addr, token=token, prefix="other/")
        with pytest.raises(BackendUnavailable, match="refused access"):
            outside.create("k", "v")
        store.close()
        outside.close()
