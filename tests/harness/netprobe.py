"""Tiny Python peers for connectivity tests, run inside a namespace with `ip netns exec`
or `nsenter --net=...` (busybox-static here has no `nc -u`, so UDP needs these).

PEER_SERVER PORT: answers each TCP connection with "tcp <address it saw>" and each UDP
datagram with "udp <address it saw> <payload>": what NAT did is visible to the client.
CLIENT PROTO HOST PORT: prints the answer, or "fail <error>" (3 s timeout).
"""

# A TCP server that answers each connection with the address it saw, and a UDP echo
# server that does the same: what NAT did is visible to the client.
PEER_SERVER = r"""
import socket, sys, threading
port = int(sys.argv[1])
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", port)); t.listen(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
def udp():
    while True:
        data, peer = u.recvfrom(2048)
        u.sendto(b"udp " + peer[0].encode() + b" " + data, peer)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, peer = t.accept()
    c.sendall(("tcp " + peer[0] + "\n").encode()); c.close()
"""

CLIENT = r"""
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=3)
        print(s.recv(200).decode().strip())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
        s.sendto(b"ping", (host, port)); print(s.recv(200).decode().strip())
except OSError as e:
    print("fail", type(e).__name__)
"""
