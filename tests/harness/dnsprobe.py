"""A DNS poller run in a container's network namespace (nsenter + the test machine's python
with dnspython): how soon names answer, for tests/multihost/test_dns.py and bench/dns_names.py.

POLLER reads "NAME T0" lines on stdin (T0: time.monotonic() when `docker run` returned);
every 2 ms (or argv[3] seconds) it asks SERVER (argv[1]) for every pending name over one UDP socket, without
waiting for answers (a name not known yet is forwarded upstream by pynet, which may take
seconds); the first answer holding an address that starts with PREFIX (argv[2], the overlay's)
prints "NAME SECONDS" (answer time - T0). CLOCK_MONOTONIC is one clock for every process of
the machine. The plugins must run with a --dns-rate above 500 queries/s per pending name.
"""

POLLER = r"""
import select, socket, sys, threading, time
import dns.message
server, prefix = sys.argv[1], sys.argv[2]
every = float(sys.argv[3]) if len(sys.argv) > 3 else 0.002
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((server, 53))
pending, ids, lock = {}, {}, threading.Lock()
def reader():
    for line in sys.stdin:
        name, t0 = line.split()
        with lock:
            pending[name] = float(t0)
threading.Thread(target=reader, daemon=True).start()
next_id = 1
while True:
    with lock:
        names = list(pending)
    for name in names:
        q = dns.message.make_query(name, "A")
        q.id = next_id
        ids[next_id] = name
        next_id = next_id % 65535 + 1
        try:
            s.send(q.to_wire())
        except OSError:
            pass
    end = time.monotonic() + every
    while True:
        left = end - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        try:
            r = dns.message.from_wire(s.recv(4096))
        except Exception:
            continue
        name = ids.pop(r.id, None)
        if name and any(rd.to_text().startswith(prefix) for rrset in r.answer for rd in rrset):
            with lock:
                t0 = pending.pop(name, None)
            if t0 is not None:
                print(name, time.monotonic() - t0, flush=True)
"""
