"""The crash storm: docker run/rm cycles on bridge (-p) and macvlan networks, networks made and
deleted meanwhile, while the plugin is killed -9 inside CreateNetwork/DeleteNetwork, between
RequestAddress and CreateEndpoint, inside other calls and at random moments, and restarted;
dockerd restarts once too. At a midpoint, with containers running, the kernel must match the
records; at the end, after a clean restart, the removal of everything the storm made and the
leak check's grace, nothing may be duplicated, leaked, orphaned or half made.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

from tests.storm import checks
from tests.storm.storm import CUSTOM_BRIDGE_PREFIX, KINDS, MUST_HIT, PREFIX, KillPolicy, Storm

EXTRA = (CUSTOM_BRIDGE_PREFIX,)


def _state(storm_plugin_pair, cfg) -> checks.Records:
    plugin, _ = storm_plugin_pair
    return checks.read_records(plugin, cfg["host"])


def test_crash_storm(dockerd, busybox_image, macvlan_parents, storm_plugin, storm_config, capsys):
    plugin, proxy = storm_plugin
    seed, cycles, grace = storm_config["seed"], storm_config["cycles"], storm_config["grace"]
    baseline = plugin.baseline_links
    policy = KillPolicy(random.Random(seed ^ 0x5EED))
    proxy.policy = policy
    storm = Storm(dockerd, busybox_image, proxy, policy, random.Random(seed))
    report: dict = {"seed": seed, "cycles": cycles}
    began = time.monotonic()
    dup_seen: list[str] = []

    def quiesce() -> None:
        policy.armed = False
        proxy.wait_up()
        assert not proxy.errors, f"seed {seed}: {proxy.errors}\n{plugin.log_tail()}"

    for kind in KINDS:
        storm.create_network(kind)
    policy.armed = True
    storm.churn_first()  # the windows every run must hit: the policy takes the first chance
    midpoint: dict = {}
    for i in range(1, cycles + 1):
        storm.cycle()
        assert not proxy.errors, f"seed {seed}, cycle {i}: {proxy.errors}\n{plugin.log_tail()}"
        if i % 5 == 0:
            dup_seen += checks.duplicates(dockerd, _state(storm_plugin, storm_config), PREFIX).containers
        if i == cycles // 2:
            quiesce()
            rec = _state(storm_plugin, storm_config)
            running = len(checks.live_containers(dockerd, PREFIX))
            problems = (checks.kernel_vs_records(rec, baseline, EXTRA)
                        + checks.docker_vs_records(dockerd, rec, PREFIX))
            dups = checks.duplicates(dockerd, rec, PREFIX)
            unknown = checks.endpoints_docker_lacks(dockerd, rec)
            midpoint = {"endpoint records Docker does not know": unknown,"cycle": i, "running containers": running, "ready networks": len(rec.ready_networks),
                        "endpoint records": len(rec.endpoints), "kernel/docker vs records problems": problems,
                        "duplicates": dups.all(), "non-ready records": rec.not_ready()}
            assert running > 0, "the midpoint check needs running containers"
            assert not problems and not dups.count(), f"seed {seed}, midpoint: {json.dumps(midpoint, indent=1)}"
            policy.armed = True
        if i == (3 * cycles) // 4:
            dockerd.restart()  # clean: containers stop; Docker cleans their endpoints on the way up
            storm.outcomes[("dockerd restart", "ok")] += 1
    quiesce()
    storm_seconds = time.monotonic() - began

    # Reconcile: a clean restart (the leak check's grace starts now), then remove everything.
    plugin.stop()
    plugin.start()
    reconciled = time.monotonic()
    left_in_docker = storm.remove_everything()

    def settled() -> bool:
        rec = _state(storm_plugin, storm_config)
        return not (rec.claims or rec.pools or rec.networks or rec.endpoints)

    # Past the grace in any case (what the leak check does then is part of the outcome), and
    # until the store is empty or a generous bound.
    past_grace, deadline = reconciled + grace + 6, reconciled + grace + 40
    while time.monotonic() < past_grace or (not settled() and time.monotonic() < deadline):
        time.sleep(2)
    rec = _state(storm_plugin, storm_config)
    dups = checks.duplicates(dockerd, rec, PREFIX)
    kernel = checks.kernel_vs_records(rec, baseline, EXTRA)
    nft_net_rules = [c for c in checks.nft_rule_comments() if c.startswith("net ")]
    counts = {
        "duplicate addresses": len(dup_seen) + dups.count(),
        "leaked addresses": sum(1 for _, c in rec.claims if not c.gateway),
        "leaked gateways": sum(1 for _, c in rec.claims if c.gateway),
        "leaked pools": len(rec.pools),
        "orphan links": len(checks.pynet_links(baseline, EXTRA)),
        "nft rules for unrecorded networks": len(nft_net_rules),
        "PYNET-FORWARD entries": len(checks.forward_entries()),
        "non-ready records": len(rec.not_ready()),
        "network records": len(rec.networks),
        "endpoint records": len(rec.endpoints),
        "kernel name records": len(rec.names),
        "kernel vs records problems": len(kernel),
        "docker objects not removable": len(left_in_docker),
    }
    report.update({
        "kills": dict(policy.kills), "kills total": sum(policy.kills.values()),
        "docker commands": {f"{w} {o}": n for (w, o), n in sorted(storm.outcomes.items())},
        "midpoint": midpoint, "final counts": counts,
        "storm seconds": round(storm_seconds), "total seconds": round(time.monotonic() - began),
        "details": {"duplicates": dup_seen + dups.all(), "claims": [k for k, _ in rec.claims],
                    "pools": rec.pools, "links": sorted(checks.pynet_links(baseline, EXTRA)),
                    "nft": nft_net_rules, "forward": checks.forward_entries(),
                    "not ready": rec.not_ready(), "kernel": kernel, "docker left": left_in_docker,
                    "first failures": storm.failures[:15]},
    })
    text = json.dumps(report, indent=1)
    if os.environ.get("PYNET_STORM_REPORT"):
        Path(os.environ["PYNET_STORM_REPORT"]).write_text(text + "\n")
    with capsys.disabled():
        print(f"\n===== pynet crash storm (PYNET_STORM_SEED={seed} replays it)\n{text}")
    missed = [w for w in MUST_HIT if not policy.kills[w]]
    assert not missed, f"seed {seed}: the storm never killed the plugin {missed}\n{text}"
    assert all(v == 0 for v in counts.values()), f"seed {seed}:\n{text}\n--- plugin log ---\n{plugin.log_tail(80)}"
