"""Cluster-wide IPAM on three hosts sharing one Consul cluster, under contention and faults.

Every check reads Consul directly: an address is claimed iff its key exists, and the key
names the host that owns it.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import time

import pytest

from tests.harness.multihost import MultiHost
from tests.multihost.support import (
    Storm,
    blocks,
    claims,
    container_ip,
    duplicates,
    network_create,
    pool_record,
    release_address,
    request_address,
    run_container,
)
from tests.harness.wait import wait_until

CALL_LIMIT = 5.0  # dockerd must get an answer within this, whatever Consul does
CONSUL_ERR = "consul at 127.0.0.1:8500"


def _parallel(fn, items, workers: int = 9) -> list:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def _everywhere(bed: MultiHost, fn) -> list:
    return _parallel(fn, bed.hosts, len(bed.hosts))


def _assert_pool_gone(bed: MultiHost, pool: str) -> None:
    assert pool_record(bed, pool) is None
    assert claims(bed, pool) == {}
    assert blocks(bed, pool) == {}


def test_hosts_are_separate_machines_on_one_underlay(bed: MultiHost) -> None:
    assert [h.run("hostname").stdout.strip() for h in bed.hosts] == ["h1", "h2", "h3"]
    engine_ids = {h.docker("info", "--format", "{{.ID}}").stdout.strip() for h in bed.hosts}
    assert len(engine_ids) == 3
    for h in bed.hosts:
        assert "default" not in h.run("ip", "route").stdout  # no way out
        assert h.run("ip", "route", "get", "192.0.2.1", check=False).returncode != 0
        other = bed.hosts[h.index % 3]
        h.run("busybox", "ping", "-c", "1", "-W", "2", other.address)
    # One Consul cluster of the three servers (serf may take ~20 s to see a healed host alive).
    wait_until(lambda: sorted((m["Name"], m["Status"]) for m in bed.consul_get("/v1/agent/members"))
               == [("h1", 1), ("h2", 1), ("h3", 1)], 40, "all three Consul servers alive")


def test_same_subnet_on_several_hosts_is_one_pool_and_conflicts_are_refused(bed: MultiHost) -> None:
    h1, h2, h3 = bed.hosts
    pool = "10.211.0.0/24"
    for h in (h1, h2):
        network_create(h, "shared", pool)
    record = pool_record(bed, pool)
    assert record is not None and record["holders"] == {"h1": 1, "h2": 1}
    gateway = claims(bed, pool)["10.211.0.1"]
    assert gateway["kind"] == "gateway" and sorted(gateway["holders"]) == ["h1", "h2"]

    refused = {
        "other range": (["--ip-range", "10.211.0.128/25"], "already defined with IP range"),
        "other gateway": (["--gateway", "10.211.0.254"], "already has gateway 10.211.0.1"),
        "overlap": (["--subnet", "10.211.0.0/16"], "overlaps pool 10.211.0.0/24"),
    }
    for what, (extra, message) in refused.items():
        subnet = [] if "--subnet" in extra else ["--subnet", pool]
        proc = h3.docker("network", "create", "-d", "pynet", "--ipam-driver", "pynet", *subnet, *extra,
                         f"bad-{what.replace(' ', '-')}", check=False)
        assert proc.returncode != 0 and message in proc.stderr, (what, proc.stderr)
    # Nothing half made on h3: no network, no bridge, no hold on the pool, no record.
    assert "bad-" not in h3.docker("network", "ls").stdout
    assert "pn-" not in h3.run("ip", "-br", "link").stdout
    assert pool_record(bed, pool)["holders"] == {"h1": 1, "h2": 1}
    assert not bed.kv("pynet/v1/hosts/h3/")
    assert sorted(claims(bed, pool)) == ["10.211.0.1"]

    # Containers on both hosts share the pool without clashing; h3 joins the same pool too.
    network_create(h3, "shared", pool)
    for h in bed.hosts:
        run_container(h, f"web-{h}", "shared")
    ips = [container_ip(h, f"web-{h}") for h in bed.hosts]
    assert len(set(ips)) == 3
    owners = claims(bed, pool)
    assert [owners[ip]["host"] for ip in ips] == ["h1", "h2", "h3"]
    for h in bed.hosts:
        h.docker("rm", "-f", f"web-{h}")
        h.docker("network", "rm", "shared")
    _assert_pool_gone(bed, pool)

    # Automatic subnets, asked for on every host at once, never overlap across the cluster.
    _everywhere(bed, lambda h: h.docker("network", "create", "-d", "pynet", "--ipam-driver", "pynet", "auto"))
    subnets = [ipaddress.ip_network(h.docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}",
                                             "auto").stdout.strip()) for h in bed.hosts]
    assert all(not a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:]), subnets
    _everywhere(bed, lambda h: h.docker("network", "rm", "auto"))
    for subnet in subnets:
        _assert_pool_gone(bed, str(subnet))


def test_allocation_storm_from_docker_run_and_direct_calls(bed: MultiHost) -> None:
    pool = "10.212.0.0/22"
    _everywhere(bed, lambda h: network_create(h, "storm", pool))
    runs = [(h, f"storm-{h}-{i}") for h in bed.hosts for i in range(4)]
    storm = Storm(bed, pool, threads_per_host=3, per_thread=30, pause=0.05).start()
    _parallel(lambda hn: run_container(hn[0], hn[1], "storm"), runs, workers=6)
    storm.join()

    assert storm.failed == [], storm.failed[:5]
    direct = [a.address for a in storm.granted]
    docker = [container_ip(h, name) for h, name in runs]
    assert len(direct) == 270 and len(docker) == 12
    assert duplicates(direct + docker) == {}
    owners = claims(bed, pool)
    assert set(owners) == set(direct) | set(docker) | {"10.212.0.1"}
    for a in storm.granted:
        assert (owners[a.address]["host"], owners[a.address]["name"]) == (a.host, a.name)
    for h, name in runs:
        assert owners[container_ip(h, name)]["host"] == h.name
    # Each host took addresses from blocks of its own: one race per block, not per address.
    held = blocks(bed, pool)
    assert set(held.values()) == {"h1", "h2", "h3"}
    in_own_block = sum(1 for a in storm.granted if any(
        held.get(b) == a.host for b in held if _in(a.address, b)))
    assert in_own_block >= 0.9 * len(storm.granted), (in_own_block, held)

    statuses = _parallel(lambda a: release_address(bed[a.host], pool, a.address)[0], storm.granted)
    assert set(statuses) == {200}
    for h, name in runs:
        h.docker("rm", "-f", name)
    assert set(claims(bed, pool)) == {"10.212.0.1"}  # all released; the shared gateway stays
    assert len(blocks(bed, pool)) <= 3  # at most one warm block per host
    _everywhere(bed, lambda h: h.docker("network", "rm", "storm"))
    _assert_pool_gone(bed, pool)


def test_consul_leader_killed_mid_storm(bed: MultiHost) -> None:
    pool = "10.213.0.0/20"  # room for a storm of ~15 s at full speed
    _everywhere(bed, lambda h: network_create(h, "kill", pool))
    leader = bed.consul_leader()
    assert leader is not None
    survivors = [h for h in bed.hosts if h is not leader]
    storm = Storm(bed, pool, threads_per_host=3).start()
    try:
        # Windows defined by what happened, not by fixed sleeps: at least 10 allocations
        # before the kill, and at least 10 on the survivors once a new leader is elected.
        wait_until(lambda: len(storm.granted) >= 10, 60, "10 allocations before the leader is killed",
                   interval=0.1)
        killed_at = time.monotonic()
        bed.kill_consul(leader)
        new_leader = bed.wait_for_leader(timeout=30, among=survivors)
        elected_at = time.monotonic()
        wait_until(lambda: sum(1 for a in storm.granted if a.host != leader.name and a.started > elected_at)
                   >= 10, 60, f"10 allocations on the surviving hosts after {new_leader} took over",
                   interval=0.2)  # allocation goes on without anyone's help
    finally:
        storm.stop()

    granted, failed = storm.granted, storm.failed
    assert duplicates([a.address for a in granted]) == {}
    assert failed, "killing the leader should have failed some calls"
    slow = [a for a in storm.attempts if a.seconds > CALL_LIMIT]
    assert slow == [], [(a.host, round(a.seconds, 1), a.error) for a in slow[:5]]
    unclear = {(a.status, a.error) for a in failed if CONSUL_ERR not in a.error}
    assert not unclear, unclear
    resumed = [a for a in granted if a.host != leader.name and a.started > elected_at]
    assert len(resumed) >= 10, f"only {len(resumed)} allocations after {new_leader} took over"
    before = [a for a in granted if a.started + a.seconds < killed_at]
    assert len(before) >= 10

    # The killed server comes back (as a supervisor would restart it); so does its host.
    bed.start_consul(leader)
    bed.wait_for_cluster(timeout=60)
    again = request_address(leader, pool, "after-restart")
    assert again.status == 200, again.error
    granted.append(again)
    # Calls that timed out may still have been committed: each plugin settles those in the
    # background. Then Consul holds exactly the addresses that were handed out.
    wanted = {a.address for a in granted} | {"10.213.0.1"}
    _wait_claims(bed, pool, wanted, storm.attempts)
    owners = claims(bed, pool)
    assert all(owners[a.address]["name"] == a.name for a in granted)

    assert set(_parallel(lambda a: release_address(bed[a.host], pool, a.address)[0], granted)) == {200}
    assert set(claims(bed, pool)) == {"10.213.0.1"}
    _everywhere(bed, lambda h: h.docker("network", "rm", "kill"))
    _assert_pool_gone(bed, pool)


def test_a_cut_off_host_fails_fast_and_recovers_without_leaks(bed: MultiHost) -> None:
    pool = "10.214.0.0/24"
    _everywhere(bed, lambda h: network_create(h, "cut", pool))
    _everywhere(bed, lambda h: run_container(h, f"before-{h}", "cut"))
    cut = bed.consul_leader()  # the hardest host to lose: the others must elect a leader
    assert cut is not None
    rest = [h for h in bed.hosts if h is not cut]
    before_claim = claims(bed, pool)[container_ip(cut, f"before-{cut}")]["claim"]

    bed.cut(cut)
    try:
        # Direct calls on the cut host: a clear error, in time.
        for i in range(3):
            a = request_address(cut, pool, f"cut-{i}")
            assert a.status != 200 and a.seconds < CALL_LIMIT, (a.status, a.seconds)
            assert CONSUL_ERR in a.error, a.error
        # docker run there fails with the same message, and leaves no claim behind later.
        started = time.monotonic()
        proc = run_container(cut, f"during-{cut}", "cut", check=False, timeout=60)
        assert proc.returncode != 0 and CONSUL_ERR in proc.stderr, proc.stderr
        assert time.monotonic() - started < 3 * CALL_LIMIT
        # A new network there: refused in time, and no bridge is left behind.
        started = time.monotonic()
        status, answer = cut.plugin_call("/NetworkDriver.CreateNetwork", {
            "NetworkID": "f" * 64, "Options": {"com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.215.0.0/24",
                          "Gateway": "10.215.0.1/24"}], "IPv6Data": []})
        assert status != 200 and CONSUL_ERR in answer["Err"], answer
        assert time.monotonic() - started < CALL_LIMIT
        proc = network_create(cut, "during", "10.215.0.0/24", check=False)
        assert proc.returncode != 0 and CONSUL_ERR in proc.stderr, proc.stderr
        assert "pn-" not in cut.run("ip", "-br", "link").stdout.replace(f"pn-{_bridge_of(cut)}", "")
        # Removing a container there: Docker ignores the failed ReleaseAddress; pynet queues it.
        cut.docker("rm", "-f", f"before-{cut}")
        # The rest of the cluster elects a leader and goes on allocating.
        bed.wait_for_leader(timeout=30, among=rest)
        for h in rest:
            run_container(h, f"during-{h}", "cut")
        majority = [request_address(h, pool, f"majority-{h}-{i}") for h in rest for i in range(5)]
        assert {a.status for a in majority} == {200}, [a.error for a in majority]
    finally:
        bed.heal(cut)
    bed.wait_for_leader(timeout=60)
    healed: list = []

    def allocate_on_healed_host() -> bool:
        healed.append(request_address(cut, pool, f"after-heal-{len(healed)}"))
        return healed[-1].status == 200

    wait_until(allocate_on_healed_host, 60, "the healed host allocates again")
    after_heal = {healed[-1].address}
    docker_ips = {container_ip(h, f"{p}-{h}") for h in rest for p in ("before", "during")}
    granted = {a.address for a in majority}
    wait_until(lambda: all(o["claim"] != before_claim for o in claims(bed, pool).values()), 30,
               "the release queued during the cut is applied")
    # Exactly what was handed out is claimed: no duplicates, nothing left in doubt.
    wait_until(lambda: set(claims(bed, pool)) == docker_ips | granted | after_heal | {"10.214.0.1"}, 30,
               "Consul's claims match what was handed out")
    assert duplicates(list(docker_ips) + list(granted) + list(after_heal)) == {}

    for h in rest:
        h.docker("rm", "-f", f"before-{h}", f"during-{h}")
    cut.docker("rm", "-f", f"during-{cut}")
    for ip in granted:
        owner = claims(bed, pool)[ip]["host"]
        assert release_address(bed[owner], pool, ip)[0] == 200
    assert release_address(cut, pool, after_heal.pop())[0] == 200
    assert set(claims(bed, pool)) == {"10.214.0.1"}
    _everywhere(bed, lambda h: h.docker("network", "rm", "cut"))
    _assert_pool_gone(bed, pool)


def _wait_claims(bed: MultiHost, pool: str, wanted: set[str], attempts: list, timeout: float = 30) -> None:
    """Wait until Consul holds exactly `wanted`; on failure, say what differs and why."""
    deadline = time.monotonic() + timeout
    while (held := claims(bed, pool)).keys() != wanted:
        if time.monotonic() > deadline:
            extra = {ip: held[ip] for ip in set(held) - wanted}
            missing = wanted - set(held)
            names = {o["name"] for o in extra.values()}
            raise AssertionError(
                f"Consul's claims differ from what was handed out after {timeout}s: extra {extra}, "
                f"missing {sorted(missing)}; calls for the extra names: "
                f"{[(a.name, a.status, round(a.seconds, 2), a.error[:120]) for a in attempts if a.name in names]}")
        time.sleep(0.5)


def _bridge_of(host) -> str:
    """The 12-character ID prefix in the bridge name of the host's "cut" network."""
    return host.docker("network", "inspect", "-f", "{{.Id}}", "cut").stdout.strip()[:12]


def _in(address: str, block: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(block)


@pytest.fixture(autouse=True)
def _time_each(request: pytest.FixtureRequest):
    started = time.monotonic()
    yield
    print(f"\n{request.node.name}: {time.monotonic() - started:.1f}s")
