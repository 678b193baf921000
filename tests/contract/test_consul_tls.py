"""`--consul-ca-cert/--consul-client-cert/--consul-client-key` against a Consul agent that
serves HTTPS with verify_incoming: certificates made with `consul tls`, as docs/consul.md says."""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from pynet_core.errors import BackendUnavailable
from pynet.settings import add_serve_arguments, settings_from_args
from pynet.stores import open_store
from tests.harness.consul import ConsulAgent, _free_ports


def _settings(*argv: str):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return settings_from_args(parser.parse_args(["--store", "consul", *argv]))


@pytest.mark.consul
@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # --no-consul-verify, on purpose
def test_tls_with_client_certificates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONSUL_CA_CERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_VERIFY", "CONSUL_ADDR"):
        monkeypatch.delenv(f"PYNET_{name}", raising=False)
    for argv in (["ca", "create"], ["cert", "create", "-server", "-dc", "dc1"],
                 ["cert", "create", "-client", "-dc", "dc1"]):
        subprocess.run(["consul", "tls", *argv], cwd=tmp_path, check=True, capture_output=True)
    ca, server, client = (tmp_path / "consul-agent-ca.pem", tmp_path / "dc1-server-consul-0",
                          tmp_path / "dc1-client-consul-0")
    port = _free_ports(1)[0]
    tls = (f'ports {{ https = {port} }} ca_file = "{ca}" cert_file = "{server}.pem" '
           f'key_file = "{server}-key.pem" verify_incoming = true')
    with ConsulAgent(extra_args=("-hcl", tls)) as agent:
        addr = f"127.0.0.1:{port}"
        good = open_store(_settings("--consul-addr", addr, "--consul-ca-cert", str(ca),
                                    "--consul-client-cert", f"{client}.pem",
                                    "--consul-client-key", f"{client}-key.pem"))
        assert good.create("k", "v") and good.get("k").value == "v"  # type: ignore[union-attr]
        # Without a client certificate the agent refuses the connection.
        no_cert = open_store(_settings("--consul-addr", f"https://{addr}", "--consul-ca-cert", str(ca)))
        with pytest.raises(BackendUnavailable, match=f"consul at {addr}"):
            no_cert.get("k")
        # Without the CA the server's certificate is not trusted...
        untrusted = open_store(_settings("--consul-addr", f"https://{addr}", "--consul-client-cert",
                                         f"{client}.pem", "--consul-client-key", f"{client}-key.pem"))
        with pytest.raises(BackendUnavailable, match="TLS failed"):
            untrusted.get("k")
        # ...unless verification is turned off (for tests only).
        unverified = open_store(_settings("--consul-addr", f"https://{addr}", "--no-consul-verify",
                                          "--consul-client-cert", f"{client}.pem",
                                          "--consul-client-key", f"{client}-key.pem"))
        assert unverified.get("k").value == "v"  # type: ignore[union-attr]
        assert agent.addr != addr  # plain HTTP stays on its own port
        for s in (good, no_cert, untrusted, unverified):
            s.close()
