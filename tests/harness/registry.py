"""A private image registry (Debian's docker-registry binary) on 127.0.0.1, for what only a
registry can do: `docker plugin push` and `docker plugin upgrade`. Loopback registries need
no TLS (dockerd treats 127.0.0.0/8 as insecure by default)."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.harness.dockerd import die_with_parent, signal_if, wait_gone

# scripts/install-test-deps.sh unpacks the binary there (the package would start a service).
BINARIES = ("/usr/local/lib/pynet-test/docker-registry", "docker-registry")


class Registry:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        binary = next((b for b in map(shutil.which, BINARIES) if b), None)
        if binary is None:
            raise RuntimeError("docker-registry is not installed; run scripts/install-test-deps.sh")
        storage = self.base_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "config.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                          f"    rootdirectory: {storage}\nhttp:\n  addr: {self.address}\n")
        log = open(self.base_dir / "registry.log", "ab")
        self._proc = subprocess.Popen([binary, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=die_with_parent)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self._proc.returncode}: "
                                   f"{(self.base_dir / 'registry.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.address} within 20 s")

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        signal_if(self._proc.pid, signal.SIGTERM, "docker-registry")
        if wait_gone([self._proc.pid], 5):
            signal_if(self._proc.pid, signal.SIGKILL, "docker-registry")
        self._proc.wait(timeout=10)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
