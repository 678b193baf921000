"""Names of containers on pynet networks, served over DNS (issue 21, groundwork).

- `table.py` (pure): the records and the rules of which name answers which asker;
- `resolvconf.py` (pure): the upstream servers a resolv.conf names;
- `limits.py` (pure): per-source token buckets, the clock given by the caller;
- `server.py` (adapter): the UDP/TCP server, built on dnspython, that answers from a table
  and forwards everything else upstream.

Where the records come from (the docker API, the endpoint name in RequestAddress, the
store) is not wired yet: see docs/dns-notes.md.
"""
