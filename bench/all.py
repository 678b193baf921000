#!/usr/bin/env python3
"""Every benchmark in one run, and one table of every ratio they printed.

    sudo python3 bench/all.py [--quick] [--only bridge,scale] [--log-dir DIR]

Takes the machine-wide lock (/run/lock/pynet-tests.lock) for the whole run, then runs, one
after another (each starts and removes its own dockerd/plugin/bed): datapath.py, bridge.py,
published_ports.py, macvlan_throughput.py, consul_ipam.py, overlay.py, overlay_vs_docker.py,
scale.py (`--quick` by default; `--full-scale` for N up to 1,000), network_create.py, overlay_peers.py,
overlay_encrypted.py, dns_names.py, dns_loopback.py, and control_path.py (its run() is
called). Each script's whole output goes to DIR/<name>.txt; the table at the end collects every line that states a ratio
("ratio A/B X", "ratio: X", "Nx the throughput"), so it is exactly what the scripts measured.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (argv after the script, what it compares)
BENCHES = {
    "datapath": (["--rounds", "5", "--seconds", "3"], "netfilter variants, pynet vs Docker bridge"),
    "bridge": (["--runs", "10", "--seconds", "5", "--rounds", "5"], "docker run, TCP on a bridge"),
    "published_ports": ([], "-p throughput and connection rate"),
    "macvlan_throughput": ([], "macvlan container <-> LAN host"),
    "consul_ipam": ([], "cluster-wide IPAM, blocks vs lowest-free"),
    "overlay": ([], "overlay vs underlay, convergence"),
    "overlay_vs_docker": (["--no-settings"], "pynet overlay vs Docker's overlay vs underlay, 1 and 4 streams"),
    "scale": (["--quick"], "per-op cost vs N, restore, RSS, store"),
    "network_create": (["--networks", "200", "--rounds", "1"], "network create/rm growth to 200 networks"),
    "overlay_peers": (["--rounds", "1"], "the overlay's peer programming vs iproute2 -batch"),
    "overlay_encrypted": ([], "encrypted overlay vs WireGuard, the overlay, the underlay"),
    "dns_names": ([], "names across hosts, pynet beside Docker's DNS"),
    "dns_loopback": ([], "pynet's DNS server alone (no counterpart)"),
}
QUICK_ARGS = {"datapath": ["--rounds", "3", "--seconds", "2"],
              "bridge": ["--runs", "4", "--seconds", "2", "--rounds", "2"],
              "network_create": ["--networks", "50", "--rounds", "1"],
              "overlay_peers": ["--sizes", "1x1000", "--other-overlay", "none"],
              "dns_names": ["--queries", "200", "--containers", "10", "--per-host", "20"],
              "dns_loopback": ["--queries", "300"],
              "overlay_vs_docker": ["--no-settings", "--rounds", "3", "--seconds", "3"]}

RATIO = re.compile(r"ratio\s+(?P<what>[\w.]+/[\w.]+):?\s+(?P<value>[0-9]+\.[0-9]+)")
COLON_RATIO = re.compile(r"^(?P<title>.*?)\s+ratio:\s+(?P<value>[0-9]+\.[0-9]+)")
TIMES = re.compile(r"^(?P<title>[^:]+):\s+(?P<value>[0-9]+\.[0-9]+)x the (?P<what>\w+)")


def ratios(bench: str, text: str) -> list[tuple[str, str, str, str]]:
    """(bench, title, what is over what, value) for every ratio line of one script's output."""
    rows = []
    for line in text.splitlines():
        if m := RATIO.search(line):
            head = line[:m.start()]
            title = re.split(r"\s+(?:pynet|overlay)\s+[0-9]", head)[0].strip()
            rows.append((bench, title or head.strip(), m["what"], m["value"]))
        elif m := COLON_RATIO.match(line):
            rows.append((bench, m["title"].strip(), "pynet/docker", m["value"]))
        elif m := TIMES.match(line):
            rows.append((bench, f"{m['title'].strip()} ({m['what']})", "x", m["value"]))
    return rows


def run_script(name: str, argv: list[str], log_dir: Path) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *argv], capture_output=True,
                          text=True, timeout=4 * 3600)
    text = proc.stdout + (f"\n--- stderr ---\n{proc.stderr}" if proc.returncode else "")
    (log_dir / f"{name}.txt").write_text(text)
    return proc.returncode, text, time.monotonic() - t0


def run_control_path(quick: bool, log_dir: Path) -> tuple[str, str, float]:
    """The control-path bench's run(), when the branch has bench/control_path.py."""
    path = HERE / "control_path.py"
    if not path.exists():
        return "not present", "", 0.0
    t0 = time.monotonic()
    sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location("control_path", path)
    module = importlib.util.module_from_spec(spec)
    out = io.StringIO()
    try:
        spec.loader.exec_module(module)
        run = getattr(module, "run", None)
        if run is None:
            return "present, but has no run()", "", 0.0
        kwargs = {"quick": quick} if "quick" in inspect.signature(run).parameters else {}
        with contextlib.redirect_stdout(out):
            result = run(**kwargs)
        text = out.getvalue()
        if result is not None:
            text += "\nresult: " + json.dumps(result, default=str, indent=1)
        (log_dir / "control_path.txt").write_text(text)
        return "ok", text, time.monotonic() - t0
    except Exception as e:  # one bench failing must not lose the others' figures
        (log_dir / "control_path.txt").write_text(out.getvalue() + f"\nfailed: {e!r}")
        return f"failed: {e!r}", out.getvalue(), time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds everywhere (a smoke run)")
    parser.add_argument("--full-scale", action="store_true", help="scale.py to N = 1,000 (long)")
    parser.add_argument("--only", help="comma-separated bench names (default: all)")
    parser.add_argument("--log-dir", default="/tmp/pynet-bench-all")
    args = parser.parse_args()
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else [*BENCHES, "control_path"]
    rows, status = [], {}
    sys.path.insert(0, str(HERE))
    from common import machine_lock  # the benches' own (needs the repo's test harness)
    with machine_lock():  # each bench below runs under it (common.machine_lock sees the ancestor)
        for name in names:
            print(f"=== {name} ...", flush=True)
            if name == "control_path":
                state, text, secs = run_control_path(args.quick, log_dir)
            else:
                argv = list(BENCHES[name][0])
                if args.quick and name in QUICK_ARGS:
                    argv = QUICK_ARGS[name]
                if name == "scale" and args.full_scale:
                    argv = []
                rc, text, secs = run_script(name, argv, log_dir)
                state = "ok" if rc == 0 else f"exit {rc} (see {log_dir / (name + '.txt')})"
            found = ratios(name, text)
            rows += found
            status[name] = (state, secs, len(found))
            print(f"    {state}, {secs:.0f} s, {len(found)} ratios", flush=True)
    print("\nAll ratios from this run (pynet/docker: > 1 is pynet higher; read each row's unit:"
          " for times lower is better, for throughput higher)\n")
    print("| bench | what | ratio | value |")
    print("|---|---|---|---|")
    for bench, title, what, value in rows:
        print(f"| {bench} | {title} | {what} | {value} |")
    print("\n| bench | status | seconds | ratios |")
    print("|---|---|---|---|")
    for name, (state, secs, count) in status.items():
        print(f"| {name} | {state} | {secs:.0f} | {count} |")
    print(f"\nfull outputs in {log_dir}/")


if __name__ == "__main__":
    main()
