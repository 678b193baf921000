"""pynet's DNS server in a throwaway "host" namespace, asked from "container" namespaces over
veth links (198.18.53.0/24 and 198.18.54.0/24, inside the test's namespaces only): the
source address names the asker across a real link and a route, a stranger is refused (no
open resolver on a non-local address), and forwarding reaches a resolver on the host
namespace's loopback (as systemd-resolved's 127.0.0.53 would be).

Nothing leaves the namespaces this test makes; the server and the clients are processes
started inside them, killed by PID with the namespaces.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent("""
    import ipaddress, sys
    sys.path.insert(0, {repo!r})
    from driver.names.server import DnsServer
    from driver.names.table import NameRecord, NameTable
    from tests.unit.test_dns_server import FakeUpstream
    V4 = ipaddress.IPv4Address
    upstream = FakeUpstream("127.0.0.53")          # the host namespace's loopback resolver
    table = NameTable.of([
        NameRecord("c1", "c1", "n1", "front", "h", ipv4=V4("198.18.53.2")),
        NameRecord("web", "web", "n1", "front", "h", ipv4=V4("10.1.0.5"), aliases=("www",)),
    ])
    server = DnsServer([("198.18.53.1", 53), ("198.18.54.1", 53)], table=table,
                       upstreams=[upstream.endpoint]).start()
    print("ready", flush=True)
    sys.stdin.read()                               # until the test closes our stdin
    server.close()
    upstream.close()
""")

CLIENT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    import dns.message, dns.query
    out = []
    for server, name, tcp in {questions!r}:
        query = dns.message.make_query(name, "A")
        ask = dns.query.tcp if tcp else dns.query.udp
        response = ask(query, server, timeout=3, port=53)
        out.append([dns.rcode.to_text(response.rcode()),
                    sorted(rd.to_text() for rrset in response.answer for rd in rrset)])
    print(json.dumps(out))
""")


def ip(*args: str, ns: str | None = None) -> None:
    cmd = (["ip", "-n", ns] if ns else ["ip"]) + list(args)
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def ask(ns: str, questions: list[tuple[str, str, bool]]) -> list:
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                           CLIENT.format(repo=str(REPO), questions=questions)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_askers_are_named_by_their_source_address_across_a_link(make_netns):
    host, c1, c2 = make_netns("dnsh"), make_netns("dnsa"), make_netns("dnsb")
    for ns in (host, c1, c2):
        ip("link", "set", "lo", "up", ns=ns)
    ip("link", "add", "pnd-a", "netns", host, "type", "veth", "peer", "name", "eth0",
       "netns", c1, ns=host)
    ip("link", "add", "pnd-b", "netns", host, "type", "veth", "peer", "name", "eth0",
       "netns", c2, ns=host)
    ip("addr", "add", "198.18.53.1/24", "dev", "pnd-a", ns=host)
    ip("addr", "add", "198.18.54.1/24", "dev", "pnd-b", ns=host)
    ip("addr", "add", "127.0.0.53/8", "dev", "lo", ns=host)
    ip("addr", "add", "198.18.53.2/24", "dev", "eth0", ns=c1)
    ip("addr", "add", "198.18.54.2/24", "dev", "eth0", ns=c2)
    for ns, dev in ((host, "pnd-a"), (host, "pnd-b"), (c1, "eth0"), (c2, "eth0")):
        ip("link", "set", dev, "up", ns=ns)
    ip("route", "add", "default", "via", "198.18.53.1", ns=c1)
    ip("route", "add", "default", "via", "198.18.54.1", ns=c2)
    subprocess.run(["ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=0"],
                   check=True, timeout=30)

    server = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-c",
                               SERVER.format(repo=str(REPO))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        # c1 is a container of the table: its names, and forwarding to the host's loopback
        # resolver; also through the server's other address (routed, like asking the docker0
        # gateway from a pynet bridge): the source is still c1's address
        assert ask(c1, [("198.18.53.1", "web", False), ("198.18.53.1", "www.front", True),
                        ("198.18.53.1", "example.org", False),
                        ("198.18.54.1", "web", False)]) == [
            ["NOERROR", ["10.1.0.5"]], ["NOERROR", ["10.1.0.5"]],
            ["NOERROR", ["192.0.2.1"]], ["NOERROR", ["10.1.0.5"]]]
        # c2 is no container of the table and not on loopback: refused, names and forwards
        assert ask(c2, [("198.18.54.1", "web", False), ("198.18.54.1", "example.org", False),
                        ("198.18.54.1", "example.org", True)]) == [
            ["REFUSED", []], ["REFUSED", []], ["REFUSED", []]]
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
