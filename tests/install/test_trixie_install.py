"""The README's two commands on Debian 13 (trixie), in a minbase tree made by debootstrap
(cached between runs) and entered with chroot:

1. `scripts/install-test-deps.sh --simulate-apt` on the bare tree: the whole package list
   resolves on trixie (docker.io 26.1, Compose v2, bullseye's consul 1.8.7 through the pin);
   python3-venv is really installed and the Python part runs for real: trixie's python3 is
   externally managed, so a virtualenv at /opt/pynet-test gets pynet and the test extras.
2. `scripts/run.sh`, for real: it installs iptables, nftables, libnftables1, wireguard-go
   and wireguard-tools from trixie, makes /opt/pynet and pip-installs pynet. Its `pynet
   serve` is then started from that tree in a network namespace of its own and answers
   /Plugin.Activate: the start-up checks pass on trixie (root, libnftables 1.1 through the
   ctypes adapter, iptables), and the adapter applies and reads back a table with trixie's
   library.
3. `scripts/test.sh tests/unit`: pytest from that virtualenv, the unit tier on Python 3.13.
"""
from __future__ import annotations

import re
import time

import pytest

from tests.harness.installs import DistroTree, ServedPlugin, activate

pytestmark = pytest.mark.timeout(1200)

NFT_ROUNDTRIP = """
from driver.firewall.nft import Nft
nft = Nft()
nft.apply("add table inet pnt_trixie\\nadd chain inet pnt_trixie c\\n")
print([o["chain"]["name"] for o in nft.json("table inet pnt_trixie") if "chain" in o])
"""


def test_readme_commands_on_debian_13(tmp_path):
    times: dict[str, float] = {}
    started = time.monotonic()
    with DistroTree("trixie", tmp_path / "trixie") as tree:
        times["tree"] = time.monotonic() - started
        assert "VERSION_CODENAME=trixie" in (tree.root / "etc/os-release").read_text()

        # 1. The test installer on the bare tree: the full list resolves; python3-venv and the
        #    Python part are real.
        step = time.monotonic()
        proc = tree.run("bash /src/scripts/install-test-deps.sh --simulate-apt", timeout=900)
        times["install-test-deps"] = time.monotonic() - step
        out = proc.stdout + proc.stderr
        (tmp_path / 'install-test-deps.log').write_text(out)
        assert proc.returncode == 0, out[-4000:]
        assert re.search(r"^Inst consul \(1\.8\.7\S* Debian:11\.", out, re.M), out[-4000:]  # bullseye
        assert re.search(r"^Inst docker\.io \(26\.1\.", out, re.M), out[-4000:]
        assert re.search(r"^Inst docker-compose \(2\.", out, re.M), out[-4000:]
        assert "externally managed (PEP 668): making a virtualenv at /opt/pynet-test" in out
        check = tree.run("cd / && /opt/pynet-test/bin/python -c 'import pytest, hypothesis, pytest_timeout, pynet.app'")
        assert check.returncode == 0, check.stderr

        # 2. scripts/run.sh installs and would exec `pynet serve`: --help stands in for serving
        #    here (the chroot shares this host's network namespace).
        step = time.monotonic()
        proc = tree.run("bash /src/scripts/run.sh --help", timeout=900)
        times["run.sh"] = time.monotonic() - step
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "--socket" in proc.stdout
        versions = tree.run("dpkg-query -W -f='${Package} ${Version}\\n' libnftables1 iptables python3 "
                            "wireguard-go wireguard-tools")
        assert re.search(r"^libnftables1 1\.1\.", versions.stdout, re.M), versions.stdout
        # Encrypted overlays on a kernel without WireGuard: trixie's wireguard-go and wg.
        assert re.search(r"^wireguard-go 0\.0\.2023", versions.stdout, re.M), versions.stdout
        assert re.search(r"^wireguard-tools 1\.", versions.stdout, re.M), versions.stdout
        assert re.search(r"^python3 3\.13\.", versions.stdout, re.M), versions.stdout
        cfg = (tree.root / "opt/pynet/pyvenv.cfg").read_text()
        assert "include-system-site-packages = false" in cfg
        # Now that run.sh brought libnftables1, the test virtualenv loads it too.
        check = tree.run("cd / && /opt/pynet-test/bin/python -c 'import driver.firewall.libnftables as l; "
                         "assert l.probe() is None'")
        assert check.returncode == 0, check.stderr

        # The installed pynet, served from the tree in a namespace of its own.
        nft = tree.run(f"/opt/pynet/bin/python -c '{NFT_ROUNDTRIP}'", private_net=True, timeout=60)
        assert (nft.returncode, nft.stdout.strip()) == (0, "['c']"), nft.stderr
        sock = tree.root / "run/pynet-test/pynet.sock"
        plugin = ServedPlugin(tree.argv("exec /opt/pynet/bin/pynet serve --socket /run/pynet-test/pynet.sock "
                                        "--state-dir /var/lib/pynet-test --leak-check-interval 0",
                                        private_net=True),
                              sock, tmp_path / "serve.log", env=tree.env())
        try:
            times["serve"] = plugin.wait_ready(timeout=60)
            assert activate(sock) == {"Implements": ["NetworkDriver", "IpamDriver"]}
        finally:
            plugin.stop()
        assert "Traceback" not in plugin.output()

        # 3. scripts/test.sh runs pytest with that virtualenv: the unit tier on trixie's
        #    Python 3.13 (less the systemd-analyze check: systemd was only simulated).
        step = time.monotonic()
        proc = tree.run("cd /src && PYNET_SKIP_INSTALL=1 bash scripts/test.sh tests/unit -q -p no:cacheprovider "
                        "--deselect tests/unit/test_operating.py::test_the_systemd_unit_passes_systemd_analyze_verify",
                        timeout=600)
        times["test.sh unit"] = time.monotonic() - step
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert re.search(r"^\d+ passed, 1 deselected", proc.stdout, re.M), proc.stdout[-2000:]
    times["total"] = time.monotonic() - started
    print("trixie: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
          + (f" (debootstrap {tree.debootstrap_seconds:.0f} s)" if tree.debootstrap_seconds else " (cached tree)"))
