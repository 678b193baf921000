"""pynet's DNS server alone on loopback: query latency p50/p99 (issue 21 groundwork).

Not the issue's benchmark (a container through Docker's resolver to pynet, beside Docker's
own embedded DNS): this measures the server's own share. The server (and a fake upstream,
for the forwarded path) runs in a child process, so the client's timing does not share its
GIL; queries are sent one at a time with dnspython from 127.0.0.2, a container of the
table. Needs no root; touches nothing but 127.0.0.x. Docker's embedded DNS cannot run apart
from dockerd, so this has no counterpart of its own: bench/dns_names.py measures pynet beside
Docker's resolver, in containers, in one run.

    python3 bench/dns_loopback.py [--queries 1000]
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dns.message  # noqa: E402
import dns.query  # noqa: E402


def _serve(conn) -> None:
    from driver.names.server import DnsServer, Limits
    from tests.unit.test_dns_server import FakeUpstream, demo_table
    upstream = FakeUpstream()
    server = DnsServer([("127.0.0.1", 0)], table=demo_table(), upstreams=[upstream.endpoint],
                       limits=Limits(rate=1e9, burst=1e9)).start()
    conn.send(server.addresses[0])
    conn.recv()  # until told to stop
    server.close()
    upstream.close()


def measure(address, name: str, count: int, tcp: bool = False) -> list[float]:
    host, port = address
    times = []
    for i in range(count + 50):
        query = dns.message.make_query(name, "A")
        start = time.perf_counter()
        if tcp:
            response = dns.query.tcp(query, host, timeout=2, port=port, source="127.0.0.2")
        else:
            response = dns.query.udp(query, host, timeout=2, port=port, source="127.0.0.2")
        elapsed = time.perf_counter() - start
        assert response.answer, response
        if i >= 50:  # the first 50 warm up
            times.append(elapsed)
    return times


def _pct(times: list[float], p: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    try:
        address = parent.recv()
        print(f"{args.queries} queries each, one at a time, from 127.0.0.2 to {address}")
        print(f"{'path':<38}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}")
        for label, name, tcp in (("table answer, UDP", "web", False),
                                 ("table answer, 3 rotating, UDP", "svc", False),
                                 ("forwarded to loopback upstream, UDP", "example.org", False),
                                 ("table answer, TCP (new connection)", "web", True)):
            times = measure(address, name, args.queries, tcp)
            print(f"{label:<38}{_pct(times, 50):>10.0f}{_pct(times, 99):>10.0f}"
                  f"{statistics.mean(times) * 1e6:>10.0f}")
        print("(no Docker counterpart alone: Docker's DNS lives inside dockerd; bench/dns_names.py "
              "compares the two in containers, same run)")
    finally:
        parent.send("stop")
        proc.join(5)


if __name__ == "__main__":
    main()
