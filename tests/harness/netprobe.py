"""Tiny Python peers for connectivity tests, run inside a namespace with `ip netns exec`
or `nsenter --net=...` (busybox-static here has no `nc -u`, so UDP needs these).

PEER_SERVER PORT: answers each TCP connection with "tcp <address it saw>" and each UDP
datagram with "udp <address it saw> <payload>": what NAT did is visible to the client.
CLIENT PROTO HOST PORT: prints the answer, or "fail <error>" (3 s timeout).
"""

# A TCP server that answers each connection with the address it saw, and a UDP echo
# server that does the same: what NAT did is visible to the client.
# Both families where the namespace has IPv6 (one dual-stack socket each; an IPv4 peer
# is printed without its ::ffff: prefix), IPv4 only where IPv6 is off (a container of a
# network without IPv6).
PEER_SERVER = r"""
import socket, sys, threading
port = int(sys.argv[1])
def bound(kind):
    try:
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr = "::"
    except OSError:
        s, addr = socket.socket(socket.AF_INET, kind), "0.0.0.0"
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((addr, port))
    except OSError:
        if addr == "0.0.0.0":
            raise
        s.close(); s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", port))
    return s
def who(peer):
    return peer[0][7:] if peer[0].startswith("::ffff:") else peer[0]
t = bound(socket.SOCK_STREAM); t.listen(64)
u = bound(socket.SOCK_DGRAM)
def udp():
    while True:
        data, peer = u.recvfrom(2048)
        u.sendto(b"udp " + who(peer).encode() + b" " + data, peer)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, peer = t.accept()
    c.sendall(("tcp " + who(peer) + "\n").encode()); c.close()
"""

CLIENT = r"""
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=3)
        print(s.recv(200).decode().strip())
    else:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(b"ping", (host, port)); print(s.recv(200).decode().strip())
except OSError as e:
    print("fail", type(e).__name__)
"""

# An ICMP echo with the don't-fragment bit forced on (IP_PMTUDISC_DO): larger than the
# route's MTU fails locally with EMSGSIZE instead of being fragmented. Prints "ok", or
# "fail <reason>". Args: HOST PAYLOAD_BYTES.
PING_DF = r"""
import os, socket, struct, sys, time
host, size = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
s.settimeout(1.5)
def checksum(data):
    if len(data) % 2: data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xffff); total += total >> 16
    return ~total & 0xffff
ident = os.getpid() & 0xffff
payload = b"x" * size
for seq in range(3):
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload
    try:
        s.sendto(packet, (host, 0))
    except OSError as e:
        print("fail", e.strerror); sys.exit(0)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            break
        ihl = (data[0] & 0x0f) * 4
        kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if kind == 0 and rid == ident and peer[0] == host:
            print("ok", len(data) - ihl - 8); sys.exit(0)
print("fail timeout")
"""

# Waits for an ARP request asking for TARGET on eth0 and prints "seen <sender ip>", or
# "none" after SECONDS. Args: TARGET SECONDS. Started before the request is sent: prints
# "ready" once listening.
ARP_WATCH = r"""
import socket, sys, time
target, seconds = socket.inet_aton(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0)); s.settimeout(0.2)
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        frame = s.recv(2048)
    except socket.timeout:
        continue
    arp = frame[14:]
    if arp[6:8] == b"\x00\x01" and arp[24:28] == target:
        print("seen", socket.inet_ntoa(arp[14:18]), flush=True); sys.exit(0)
print("none", flush=True)
"""

# One ICMP echo (IPv4 or IPv6) without the `ping` binary (not installed everywhere): prints
# "ok" on a reply, "fail <reason>" otherwise. Args: HOST.
PING = r"""
import os, socket, struct, sys, time
host = sys.argv[1]
v6 = ":" in host
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
s.settimeout(1)
def checksum(data):
    if len(data) % 2: data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xffff); total += total >> 16
    return ~total & 0xffff
ident, request, reply = os.getpid() & 0xffff, (128 if v6 else 8), (129 if v6 else 0)
header = struct.pack("!BBHHH", request, 0, 0, ident, 1)
# The kernel fills in the ICMPv6 checksum (it covers a pseudo-header).
packet = header + b"pynet" if v6 else struct.pack("!BBHHH", 8, 0, checksum(header + b"pynet"), ident, 1) + b"pynet"
try:
    s.sendto(packet, (host, 0))
except OSError as e:
    print("fail", e.strerror); sys.exit(0)
end = time.monotonic() + 1.5
while time.monotonic() < end:
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        break
    icmp = data if v6 else data[(data[0] & 0x0f) * 4:]
    kind, _, _, rid, _ = struct.unpack("!BBHHH", icmp[:8])
    if kind == reply and rid == ident and peer[0] == host:
        print("ok"); sys.exit(0)
print("fail timeout")
"""


# --- encrypted overlays (tests/kernel/test_overlay_encrypted.py, tests/multihost/test_overlay_encrypted.py)

# Sends one VXLAN datagram (flags I, VNI) carrying an Ethernet frame to DST_MAC with an IPv4
# UDP packet SRC_IP:9 -> DST_IP:PORT, payload FORGED. Args: TO_IP TO_PORT VNI DST_MAC DST_IP PORT
# [SRC_IP] (default 10.50.0.99; an address of the overlay's subnet passes a strict rp_filter).
FORGE_VXLAN = r"""
import socket, struct, sys
to_ip, to_port, vni, dst_mac, dst_ip, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xffff); t += t >> 16
    return ~t & 0xffff
payload = b"FORGED"
udp = struct.pack("!HHHH", 9, port, 8 + len(payload), 0) + payload
src = socket.inet_aton(sys.argv[7] if len(sys.argv) > 7 else "10.50.0.99"); dst = socket.inet_aton(dst_ip)
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex("020000000099") + b"\x08\x00"
vxlan = struct.pack("!II", 0x08000000, vni << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(vxlan + eth + ip + udp, (to_ip, to_port))
print("sent")
"""

# Waits SECONDS for a UDP datagram on PORT; prints "got <payload>" or "none".
RECEIVE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2])); print("ready", flush=True)
try:
    print("got", s.recv(2048).decode(errors="replace"))
except socket.timeout:
    print("none")
"""

# Captures on IFACE (a host's port on the underlay bridge: all it sends and receives) for
# SECONDS (AF_PACKET): counts IPv4 UDP frames by destination port and whether MARKER appears
# anywhere in a frame. Prints "ready", then JSON.
CAPTURE = r"""
import json, socket, struct, sys, time
iface, seconds, marker = sys.argv[1], float(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind((iface, 0)); s.settimeout(0.2)
print("ready", flush=True)
ports, seen, frames = {}, 0, 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    frames += 1
    if marker in f:
        seen += 1
    if len(f) > 34 and f[12:14] == b"\x08\x00" and f[23] == 17:
        ihl = (f[14] & 0x0f) * 4
        dport = struct.unpack("!H", f[14 + ihl + 2:14 + ihl + 4])[0]
        ports[str(dport)] = ports.get(str(dport), 0) + 1
print(json.dumps({"frames": frames, "udp_dports": ports, "marker_frames": seen}))
"""

# Sends COUNT kilobytes of MARKER over TCP to HOST:PORT and prints "sent N".
SEND_MARKER = r"""
import socket, sys
host, port, marker, count = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
c = socket.create_connection((host, port), timeout=5)
block = (marker * (1024 // len(marker) + 1))[:1024]
for _ in range(count):
    c.sendall(block)
c.shutdown(socket.SHUT_WR); c.recv(10); c.close(); print("sent", count)
"""

SINK = r"""
import socket, sys
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", int(sys.argv[1]))); t.listen(1); print("ready", flush=True)
c, _ = t.accept(); n = 0
while True:
    d = c.recv(65536)
    if not d: break
    n += len(d)
c.sendall(b"ok"); c.close(); print("received", n)
"""

# Sends a UDP datagram to HOST:PORT every 20 ms for SECONDS and prints the longest time
# without a reply (after the first one) and how many came back, as JSON. Prints "ready" first.
UDP_PROBE = r"""
import json, socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.02)
print("ready", flush=True)
end = time.monotonic() + seconds; last = None; gap = 0.0; got = 0
while time.monotonic() < end:
    s.sendto(b"p", (host, port))
    try:
        while True:
            s.recv(100); now = time.monotonic(); got += 1
            if last is not None: gap = max(gap, now - last)
            last = now
    except socket.timeout:
        pass
print(json.dumps({"longest_gap_s": round(gap, 3), "replies": got}))
"""
