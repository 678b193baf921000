"""WireGuard data path (issue 20 groundwork): one WireGuard link per host, behind one port.

    api.py           the port (WireGuardLinks), its values (keys, peers, status) and errors; pure
    keys.py          this host's key pair: private key in the state directory (0600), never logged
    uapi.py          client of the cross-platform UAPI (wireguard-go's Unix socket)
    userspace.py     wireguard-go over TUN: started, supervised, re-adopted, stopped
    kernel.py        the kernel module through pyroute2 (chosen when the kernel has it)
    pyroute2_wg.py   the only module here that imports pyroute2 (link MTU/up/address, genl)
    choice.py        --wireguard=kernel|userspace|auto

Used by encrypted overlays (driver/kinds/overlay/encryption.py; docs/overlay.md "Encryption").
"""
