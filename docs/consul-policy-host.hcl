# The Consul ACL policy of ONE host's pynet (least privilege): read everything under pynet's
# prefix, write only what IPAM shares between hosts, the shared overlay definitions and VNI
# claims, and this host's own keys. Replace every HOST with the host's --host-id (or use the
# templated form in docs/consul.md). Change "pynet/" if you run pynet with another
# --consul-prefix. docs/consul-policy.hcl is the simpler policy that trusts every host alike.

# Read: every host's records (peers, members, heartbeats, pools, claims).
key_prefix "pynet/" {
  policy = "read"
}

# Shared by every host: IPAM pools, address claims and address blocks.
key_prefix "pynet/v1/ipam/spaces/" {
  policy = "write"
}
key_prefix "pynet/v1/ipam/addrs/" {
  policy = "write"
}
key_prefix "pynet/v1/ipam/blocks/" {
  policy = "write"
}

# Shared by every host: overlay definitions (VNI, MTU, port) and cluster-wide VNI claims.
key_prefix "pynet/v1/overlay/nets/" {
  policy = "write"
}
key_prefix "pynet/v1/overlay/vnis/" {
  policy = "write"
}
# Encrypted overlays: cluster-wide WireGuard tunnel address claims (create-if-absent; a reader
# believes a host's tunnel address only under that host's own claim).
key_prefix "pynet/v1/overlay/tunnels/" {
  policy = "write"
}

# This host's own: its IPAM write fence, its network/endpoint records, names, fences and
# heartbeats, its overlay member, peer and WireGuard records, its overlay heartbeat, its
# containers' DNS name records (pynet serve --dns-addr).
key "pynet/v1/ipam/fences/HOST" {
  policy = "write"
}
key_prefix "pynet/v1/hosts/HOST/" {
  policy = "write"
}
key_prefix "pynet/v1/overlay/hosts/HOST/" {
  policy = "write"
}
key "pynet/v1/overlay-alive/HOST" {
  policy = "write"
}
key_prefix "pynet/v1/names/hosts/HOST/" {
  policy = "write"
}
