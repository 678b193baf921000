"""Smoke runs of the benchmarks that are cheap enough for CI (a few seconds in all).

Benchmarks are not tests: these only check that a bench still runs and prints sane figures.
bench/scale.py's `api` section runs the real plugin in a network namespace of its own (no
dockerd, nothing of the host touched); bench/all.py's table is built from the ratio lines
every bench prints, checked here on lines in each bench's format. The benches that start a
dockerd of their own (datapath, bridge, scale's other sections, ...) are not run here: they
would collide with the e2e tier's dockerd, and take minutes.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_scale_api_section_prints_sane_figures():
    assert os.geteuid() == 0, "the scale bench's api section needs root (a network namespace)"
    proc = subprocess.run([sys.executable, str(BENCH / "scale.py"), "--only", "api",
                           "--max-containers", "12", "--publish", "yes"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for method in ("RequestAddress", "CreateEndpoint", "Join", "ProgramExternalConnectivity",
                   "DeleteEndpoint", "ReleaseAddress"):
        m = re.search(rf"^\s+{method}\s+([0-9.]+)\s*$", out, re.M)
        assert m, f"no per-call figure for {method} in:\n{out}"
        assert 0 < float(m[1]) < 2000, f"{method} took {m[1]} ms"
    restore = re.search(r"restore after kill -9 with 12 endpoints recorded .*?([0-9.]+) s", out)
    assert restore and 0 < float(restore[1]) < 30, out
    rss = re.search(r"plugin RSS ([0-9.]+) MiB", out)
    assert rss and 10 < float(rss[1]) < 2000, out


def _all_module():
    spec = importlib.util.spec_from_file_location("bench_all", BENCH / "all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_collects_every_bench_s_ratio_lines():
    lines = "\n".join([
        "container->container TCP, 1 stream           pynet    12.700 Gbit/s   docker    13.800 Gbit/s"
        "   ratio pynet/docker  0.920  (higher is better; median of 3)",
        "TCP 1 stream h1->h2: overlay 13.20 Gbit/s, underlay 19.00 Gbit/s, ratio overlay/underlay 0.700",
        "pynet/docker macvlan throughput ratio: 0.990",
        "blocks vs lowest-free: 9.7x the throughput, 3.1x lower p50",
        "docker run -d (one network) at N=100  pynet 274.7 ms docker 271.5 ms ratio pynet/docker 1.012",
        "round 1 baseline           pynet  16.17  docker  15.93 Gbit/s",
    ])
    rows = _all_module().ratios("b", lines)
    assert [(r[2], r[3]) for r in rows] == [("pynet/docker", "0.920"), ("overlay/underlay", "0.700"),
                                            ("pynet/docker", "0.990"), ("x", "9.7"),
                                            ("pynet/docker", "1.012")]
    assert rows[0][1] == "container->container TCP, 1 stream"
    assert rows[4][1] == "docker run -d (one network) at N=100"


def test_all_collects_the_ratio_lines_of_the_other_benches():
    lines = "\n".join([
        "TCP 1 stream, encrypted overlay vs raw WireGuard  ratio encrypted/wireguard 0.850  (goal >= 0.9)",
        "1 x 1000 peers: program, pynet's applier 1.33 s, iproute2 -batch 0.04 s ratio pynet/iproute2 3.204"
        "  (lower is better)",
        "query p99, a name on another host (via pynet) vs one of Docker's own  ratio pynet/docker 1.020"
        "  (lower is better)",
        "network create, median of all 200: ratio pynet/docker 0.644",
    ])
    rows = _all_module().ratios("b", lines)
    assert [(r[2], r[3]) for r in rows] == [("encrypted/wireguard", "0.850"), ("pynet/iproute2", "3.204"),
                                            ("pynet/docker", "1.020"), ("pynet/docker", "0.644")]
    assert rows[3][1] == "network create, median of all 200:"


def test_overlay_peers_bench_prints_its_baseline_ratio():
    assert os.geteuid() == 0, "the overlay peers bench needs root (network namespaces)"
    proc = subprocess.run([sys.executable, str(BENCH / "overlay_peers.py"), "--sizes", "1x50",
                           "--other-overlay", "none"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"^1 x 50 peers: program, .* ratio pynet/iproute2 ([0-9.]+)", proc.stdout, re.M)
    assert m and 0 < float(m[1]) < 1000, proc.stdout


def test_dns_loopback_bench_answers_every_path():
    proc = subprocess.run([sys.executable, str(BENCH / "dns_loopback.py"), "--queries", "30"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in ("table answer, UDP", "forwarded to loopback upstream, UDP", "table answer, TCP"):
        m = re.search(rf"^{re.escape(path)}[^\n]*?\s+([0-9]+)\s+([0-9]+)\s+([0-9]+)$", proc.stdout, re.M)
        assert m and 0 < int(m[1]) <= int(m[2]), f"{path}:\n{proc.stdout}"


LOCK_PROBE = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
              "from common import _lock_held_by_ancestor; print(_lock_held_by_ancestor(Path(sys.argv[2])))")


def test_a_bench_under_flock_sees_the_lock_its_ancestor_holds(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    alone = subprocess.run([sys.executable, "-c", LOCK_PROBE, str(BENCH), str(lock)],
                           capture_output=True, text=True, timeout=60)
    assert alone.stdout.strip() == "False", alone.stdout + alone.stderr
    under = subprocess.run(["flock", str(lock), "sh", "-c", f'"{sys.executable}" -c "$0" "$1" "$2"',
                            LOCK_PROBE, str(BENCH), str(lock)], capture_output=True, text=True, timeout=60)
    assert under.stdout.strip() == "True", under.stdout + under.stderr


def test_control_path_summary_is_what_all_collects(capsys):
    """bench/control_path.py's run() prints one "ratio pynet/docker" line per figure with both
    drivers (all.py's table is built from them); per-method rows print pynet's figure alone."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_control_path", BENCH / "control_path.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.print_summary([
        ("docker run -d -p, 50 at once: per-container start p50 (s, 5 rounds x 50)", 1.1, 1.2, 1.1 / 1.2),
        ("docker run -d -p, 50 at once: per-container start p99 (s, 5 rounds x 50)", 2.0, 1.6, 1.25),
        ("NetworkDriver.Join p99 (ms, n=250)", 12.5, None, None),
    ])
    rows = _all_module().ratios("control_path", capsys.readouterr().out)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("docker run -d -p, 50 at once: per-container start p50 (s, 5 rounds x 50)", "pynet/docker", "0.917"),
        ("docker run -d -p, 50 at once: per-container start p99 (s, 5 rounds x 50)", "pynet/docker", "1.250")]


def test_overlay_vs_docker_summary_gives_all_py_its_ratio_lines():
    """bench/overlay_vs_docker.py's figures (no bed: its summary of made-up rounds) come out
    as the ratio lines all.py's table collects, per stream count, variants beside them."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_overlay_vs_docker", BENCH / "overlay_vs_docker.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    rounds = {module.PYNET: [13.0, 12.0, 14.0], module.DOCKER: [12.0, 12.5, 13.0],
              module.UNDERLAY: [16.0, 17.0, 16.5], module.VARIANT_PREFIX + "veth-gro": [14.0, 14.5, 15.0]}
    text = "\n".join(module.summary({1: rounds, 4: {k: v for k, v in rounds.items() if "+" not in k}}))
    rows = [(title.split(",")[0], what, value) for _, title, what, value in _all_module().ratios("o", text)]
    assert rows == [("TCP 1 stream h1->h2", "pynet/docker", "1.040"), ("TCP 1 stream h1->h2", "pynet/underlay", "0.788"),
                    ("TCP 1 stream h1->h2", "docker/underlay", "0.758"),
                    ("TCP 4 streams h1->h2", "pynet/docker", "1.040"), ("TCP 4 streams h1->h2", "pynet/underlay", "0.788"),
                    ("TCP 4 streams h1->h2", "docker/underlay", "0.758")]
    assert "pynet overlay + veth-gro: 1.115 of pynet overlay" in text
    assert "13.00 [12.00-14.00]" in text
