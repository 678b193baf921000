"""`pip install` into a fresh virtualenv and `pipx install`, then `pynet serve`, as the README
says: no script run first, nothing of the distribution's Python (no system site packages, no
python3-nftables), only libnftables1, iptables and root. Each serve runs in a throwaway
network namespace on a temporary socket and state directory and answers /Plugin.Activate."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness.installs import ServedPlugin, activate, fresh_dir, shell, source_copy

SYSTEM_PYTHON = "/usr/bin/python3"  # the distribution's, externally managed on Debian 12/13
ACTIVATED = {"Implements": ["NetworkDriver", "IpamDriver"]}


@pytest.fixture
def short_dir():
    """A directory with a short path: a Unix socket path has at most 107 bytes."""
    path = fresh_dir("pynet-inst-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serve_in(ns: str, pynet: Path, where: Path) -> float:
    """Start `pynet serve` in network namespace NS, ask /Plugin.Activate, stop it by PID;
    returns the seconds it took to answer."""
    sock = where / "pynet.sock"
    plugin = ServedPlugin(["ip", "netns", "exec", ns, str(pynet), "serve", "--socket", str(sock),
                           "--state-dir", str(where / "state"), "--leak-check-interval", "0"],
                          sock, where / "serve.log")
    try:
        seconds = plugin.wait_ready(timeout=30)
        assert activate(sock) == ACTIVATED
        assert (where / "state" / "pynet.db").exists()  # the embedded store it opened
    finally:
        plugin.stop()
    assert "Traceback" not in plugin.output()
    assert not sock.exists()  # gone with the server
    return seconds


def assert_refuses_in_one_line(pynet: Path, where: Path) -> None:
    """A socket directory that cannot be made: one line, exit code 2, before gunicorn."""
    (where / "a-file").write_text("")
    proc = subprocess.run([str(pynet), "serve", "--socket", str(where / "a-file" / "pynet.sock"),
                           "--state-dir", str(where / "state2")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert proc.stderr == (f"pynet serve: cannot make the plugin socket {where}/a-file/pynet.sock: "
                           f"{where}/a-file is not a directory (choose another path with --socket "
                           "or PYNET_SOCKET)\n")
    assert proc.stdout == "" and "gunicorn" not in proc.stderr.lower()


def test_pip_install_into_a_fresh_virtualenv_then_serve(tmp_path, ns, short_dir):
    src = source_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    started = time.monotonic()
    shell([SYSTEM_PYTHON, "-m", "venv", str(venv)], timeout=120)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    shell([str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", str(src)], timeout=600)
    installed = time.monotonic() - started
    # Nothing of the distribution's Python: its nftables binding is not importable here.
    no_binding = subprocess.run([str(venv / "bin/python"), "-c", "import nftables"], capture_output=True,
                                cwd="/")
    assert no_binding.returncode != 0
    assert_refuses_in_one_line(venv / "bin/pynet", short_dir)
    answered = serve_in(ns, venv / "bin/pynet", short_dir)
    print(f"pip: venv + install {installed:.1f} s, serve answered in {answered:.1f} s")


def test_pipx_install_then_serve(tmp_path, ns, short_dir):
    pipx = shutil.which("pipx")
    if pipx is None:
        pytest.fail("pipx is not installed: apt-get install pipx (scripts/install-test-deps.sh does)",
                    pytrace=False)
    src = source_copy(tmp_path / "src")
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin"),
           "PIPX_DEFAULT_PYTHON": SYSTEM_PYTHON}
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    shell([pipx, "install", str(src)], env=env, timeout=600)
    installed = time.monotonic() - started
    pynet = tmp_path / "bin" / "pynet"
    assert pynet.exists()
    venv_cfg = (tmp_path / "pipx" / "venvs" / "pynet" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in venv_cfg
    assert_refuses_in_one_line(pynet, short_dir)
    answered = serve_in(ns, pynet, short_dir)
    print(f"pipx: install {installed:.1f} s, serve answered in {answered:.1f} s")
