"""The macvlan network type: containers with addresses of their own on a parent link.

    kind.py     the NetworkKind (links, Join, restore, what doctor checks)
    parents.py  which parent a network uses and who shares it (VLAN sub-interfaces), pure
"""
