"""The contract pynet relies on from its ctypes adapter over libnftables.so.1
(driver/firewall/libnftables.py), checked against the real library and kernel in a throwaway
network namespace: scripts are one transaction, text and JSON listings, errors reported and
never carried into the next answer, the JSON switch undone after each JSON call."""
from __future__ import annotations

import subprocess

import pytest

from driver.firewall import libnftables
from driver.firewall.forward_accept import FirewallError
from driver.firewall.libnftables import Libnftables, LibnftablesUnavailable
from driver.firewall.nft import Nft, _entered

TABLE = "table inet pnt_contract"


def context_in(ns: str) -> Libnftables:
    with _entered(ns):
        return Libnftables()


def nft_cli(ns: str, *args: str) -> str:
    """What the `nft` program (not the adapter) sees in namespace NS."""
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], capture_output=True,
                          text=True, check=True).stdout


def test_a_script_is_applied_and_listed_as_text_and_json(ns):
    ctx = context_in(ns)
    rc, out, err = ctx.cmd(f"add {TABLE}\nadd set inet pnt_contract nets {{ type ipv4_addr; flags interval; }}\n"
                           "add element inet pnt_contract nets { 198.18.7.0/24 }\n")
    assert (rc, out, err) == (0, "", "")
    # The adapter's context is in NS, not in this process's namespace.
    assert "198.18.7.0/24" in nft_cli(ns, "list", "table", "inet", "pnt_contract")
    rc, text, _ = ctx.cmd(f"list {TABLE}")
    assert rc == 0 and "set nets" in text and "198.18.7.0/24" in text
    rc, doc, _ = ctx.json_cmd({"nftables": [{"list": {"set": {"family": "inet", "table": "pnt_contract",
                                                               "name": "nets"}}}]})
    assert rc == 0
    sets = [o["set"] for o in doc["nftables"] if "set" in o]
    assert sets[0]["name"] == "nets"
    assert sets[0]["elem"] == [{"prefix": {"addr": "198.18.7.0", "len": 24}}]
    # The JSON switch was for that call only: the next listing is text again.
    rc, text, _ = ctx.cmd(f"list {TABLE}")
    assert rc == 0 and text.lstrip().startswith("table inet pnt_contract")


def test_a_refused_script_changes_nothing_and_its_error_does_not_leak(ns):
    ctx = context_in(ns)
    assert ctx.cmd(f"add {TABLE}\n")[0] == 0
    # Valid first line, refused second: one transaction, so the set is not made either.
    rc, out, err = ctx.cmd("add set inet pnt_contract a { type ipv4_addr; }\n"
                           "add element inet pnt_contract nosuch { 198.18.0.1 }\n")
    assert rc != 0 and out == ""
    assert "No such file or directory" in err  # (1.0.6 points at the wrong line)
    assert "set a" not in nft_cli(ns, "list", "table", "inet", "pnt_contract")
    rc, out, err = ctx.cmd("this is not nft\n")
    assert rc != 0 and "syntax error" in err
    # The next answer carries nothing of the earlier errors.
    rc, text, err = ctx.cmd(f"list {TABLE}")
    assert (rc, err) == (0, "") and "syntax error" not in text
    # A refused JSON call answers rc != 0 and an error, and leaves text output on.
    rc, doc, err = ctx.json_cmd({"nftables": [{"list": {"table": {"family": "inet", "name": "nope"}}}]})
    assert rc != 0 and doc is None and err
    assert ctx.cmd(f"list {TABLE}")[1].lstrip().startswith("table inet pnt_contract")


def test_nft_over_the_adapter_applies_and_reads_back(ns):
    nft = Nft(ns)  # the production path: libnftables_context() in the namespace
    nft.apply(f"add {TABLE}\nadd chain inet pnt_contract c\n")
    assert "chain c" in nft.text(TABLE)
    assert [o["chain"]["name"] for o in nft.json("table inet pnt_contract") if "chain" in o] == ["c"]
    with pytest.raises(FirewallError, match="nft refused pynet's rules"):
        nft.apply("add chain inet pnt_contract_absent c\n")
    assert nft.text("table inet pnt_absent") == ""


def test_a_closed_context_is_refused_not_used():
    ctx = Libnftables()
    ctx.close()
    ctx.close()  # twice is harmless
    with pytest.raises(ValueError, match="closed"):
        ctx.cmd("list tables\n")


def test_a_missing_library_names_the_package():
    libnftables.load.cache_clear()
    try:
        with pytest.raises(LibnftablesUnavailable, match="apt-get install libnftables1"):
            Libnftables("libnftables-pynet-absent.so.1")
        assert "libnftables1" in libnftables.probe("libnftables-pynet-absent.so.1")
        assert libnftables.probe() is None
    finally:
        libnftables.load.cache_clear()
