"""pynet DNS's firewall table (driver/firewall/dns_rules.py) in a throwaway "host" namespace:
DNS to the served address comes in from a container link named as the guard's askers
(a pynet bridge, docker_gwbridge), and is dropped from any other link (a LAN host routing
to the gateway address), unless its subnet is --dns-allow-from. Addresses 198.18.55.0/24
and 198.18.56.0/24 inside the test's namespaces only; root; fails, never skips, without it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from driver.firewall.dns_guard import DnsGuard
from driver.firewall.nft import Nft

REPO = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent("""
    import ipaddress, sys
    sys.path.insert(0, {repo!r})
    from driver.names.server import DnsServer
    from driver.names.table import NameRecord, NameTable
    table = NameTable.of([NameRecord("c1", "c1", "n1", "front", "h",
                                     ipv4=ipaddress.IPv4Address("198.18.55.2"))])
    server = DnsServer([("198.18.55.1", 53)], table=table, upstreams=[]).start()
    print("ready", flush=True)
    sys.stdin.read()
    server.close()
""")

CLIENT = textwrap.dedent("""
    import json, sys
    import dns.exception, dns.message, dns.query, dns.rcode
    out = []
    for tcp in (False, True):
        query = dns.message.make_query("c1", "A")
        try:
            response = (dns.query.tcp if tcp else dns.query.udp)(query, "198.18.55.1", timeout=1.5)
            out.append(dns.rcode.to_text(response.rcode()))
        except (dns.exception.Timeout, OSError):
            out.append("NO ANSWER")
    print(json.dumps(out))
""")


def ip(*args: str, ns: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=30)


def ask(ns: str) -> list[str]:
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_dns_comes_in_from_container_links_only_unless_a_subnet_is_allowed(make_netns):
    host, ctr, lan = make_netns("dnfh"), make_netns("dnfc"), make_netns("dnfl")
    for ns in (host, ctr, lan):
        ip("link", "set", "lo", "up", ns=ns)
    ip("link", "add", "pn-dnsfw", "netns", host, "type", "veth", "peer", "name", "eth0", "netns", ctr, ns=host)
    ip("link", "add", "lan0", "netns", host, "type", "veth", "peer", "name", "eth0", "netns", lan, ns=host)
    ip("addr", "add", "198.18.55.1/24", "dev", "pn-dnsfw", ns=host)
    ip("addr", "add", "198.18.56.1/24", "dev", "lan0", ns=host)
    ip("addr", "add", "198.18.55.2/24", "dev", "eth0", ns=ctr)
    ip("addr", "add", "198.18.56.2/24", "dev", "eth0", ns=lan)
    for ns, dev in ((host, "pn-dnsfw"), (host, "lan0"), (ctr, "eth0"), (lan, "eth0")):
        ip("link", "set", dev, "up", ns=ns)
    ip("route", "add", "default", "via", "198.18.56.1", ns=lan)

    server = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-c",
                               SERVER.format(repo=str(REPO))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        # Without the table, the LAN host reaches the server (which refuses it).
        assert ask(lan) == ["REFUSED", "REFUSED"]
        guard = DnsGuard([("198.18.55.1", 53)], nft=Nft(netns=host))
        assert guard.update({"pn-dnsfw", "docker_gwbridge"})
        assert ask(ctr) == ["NOERROR", "NOERROR"]
        assert ask(lan) == ["NO ANSWER", "NO ANSWER"]     # dropped before the server
        allowing = DnsGuard([("198.18.55.1", 53)], ["198.18.56.0/24"], nft=Nft(netns=host))
        assert allowing.update({"pn-dnsfw"})
        assert ask(lan) == ["REFUSED", "REFUSED"]         # let in; the server decides
        allowing.remove()
        assert Nft(netns=host).text("table inet pynet_dns") == ""
        assert ask(lan) == ["REFUSED", "REFUSED"]
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
