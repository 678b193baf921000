"""`pynet serve` flags (the Consul store's, the leak check's), their PYNET_* twins, and the
store they open."""
import argparse
import logging

import pytest

from pynet.settings import add_serve_arguments, settings_from_args
from pynet_core.store.consul import ConsulStore
from pynet.stores import open_store

ENV = ("STORE", "CONSUL_ADDR", "CONSUL_TOKEN", "CONSUL_CA_CERT", "CONSUL_CLIENT_CERT",
       "CONSUL_CLIENT_KEY", "CONSUL_VERIFY", "CONSUL_PREFIX", "IPAM_BLOCK_SIZE",
       "DOCKER_HOST", "LEAK_CHECK_INTERVAL", "LEAK_GRACE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(f"PYNET_{name}", raising=False)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def test_defaults():
    s = parse()
    assert (s.store, s.consul_addr, s.consul_prefix, s.consul_verify, s.ipam_block_size) == (
        "local", "127.0.0.1:8500", "pynet/", True, 64)
    assert s.consul_endpoint == ("http", "127.0.0.1:8500")


def test_flags():
    s = parse("--store", "consul", "--consul-addr", "consul.example:8501", "--consul-token", "t0k3n",
              "--consul-ca-cert", "/ca.pem", "--consul-client-cert", "/c.pem", "--consul-client-key",
              "/k.pem", "--no-consul-verify", "--consul-prefix", "team/pynet", "--ipam-block-size", "16")
    assert s.consul_endpoint == ("https", "consul.example:8501")  # a CA implies TLS
    assert (s.consul_ca_cert, s.consul_client_cert, s.consul_client_key) == ("/ca.pem", "/c.pem", "/k.pem")
    assert (s.consul_verify, s.consul_prefix, s.ipam_block_size) == (False, "team/pynet/", 16)
    assert "t0k3n" not in repr(s) and s.consul_token == "t0k3n"


def test_environment_twins(monkeypatch):
    for name, value in (("STORE", "consul"), ("CONSUL_ADDR", "https://10.0.0.5:8501"),
                        ("CONSUL_TOKEN", "envtoken"), ("CONSUL_VERIFY", "false"),
                        ("CONSUL_PREFIX", "p/"), ("IPAM_BLOCK_SIZE", "0")):
        monkeypatch.setenv(f"PYNET_{name}", value)
    s = parse()
    assert (s.store, s.consul_endpoint, s.consul_token, s.consul_verify, s.consul_prefix,
            s.ipam_block_size) == ("consul", ("https", "10.0.0.5:8501"), "envtoken", False, "p/", 0)
    assert parse("--consul-verify").consul_verify is True  # the flag beats the environment


@pytest.mark.parametrize("argv, match", [
    (["--consul-addr", "consul"], "HOST:PORT"),
    (["--consul-addr", "ftp://c:1"], "scheme"),
    (["--consul-client-cert", "/c.pem"], "go together"),
    (["--consul-prefix", "/"], "must not be empty"),
    (["--ipam-block-size", "48"], "power of two"),
])
def test_bad_values_are_refused_before_serving(argv, match):
    with pytest.raises(ValueError, match=match):
        parse(*argv)


def test_open_store_builds_the_consul_store_without_logging_the_token(caplog):
    s = parse("--store", "consul", "--consul-addr", "10.0.0.5:8500", "--consul-token", "s3cr3t",
              "--consul-prefix", "x/")
    with caplog.at_level(logging.INFO):
        store = open_store(s)
    assert isinstance(store, ConsulStore) and store.addr == "10.0.0.5:8500"
    assert store._prefix == "x/" and store._c.token == "s3cr3t"
    assert "s3cr3t" not in caplog.text and "ACL token set" in caplog.text
    assert "s3cr3t" not in repr(store)


def test_leak_check_defaults():
    s = parse()
    assert (s.docker_host, s.leak_check_interval, s.leak_grace) == ("unix:///var/run/docker.sock", 60, 300)


def test_leak_check_environment_twins(monkeypatch):
    monkeypatch.setenv("PYNET_DOCKER_HOST", "unix:///run/other.sock")
    monkeypatch.setenv("PYNET_LEAK_CHECK_INTERVAL", "0")
    monkeypatch.setenv("PYNET_LEAK_GRACE", "120")
    s = parse()
    assert (s.docker_host, s.leak_check_interval, s.leak_grace) == ("unix:///run/other.sock", 0, 120)


@pytest.mark.parametrize("argv, message", [
    (["--leak-grace", "30"], "--leak-grace 30: expected at least 60"),
    (["--leak-check-interval", "-1"], "--leak-check-interval -1"),
])
def test_bad_leak_check_values_are_refused_naming_them(argv, message):
    with pytest.raises(ValueError, match=message):
        parse(*argv)


def test_serve_raises_the_open_files_limit_to_the_hard_limit():
    """Issue 9, I: each published port holds a socket; 1,100 ports must not hit EMFILE at the
    usual soft limit of 1,024."""
    import resource

    from pynet.cli import raise_open_files_limit

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, before[1]), before[1]))
        soft, hard = raise_open_files_limit()
        assert (soft, hard) == (before[1], before[1]) and soft > 1100
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_running_out_of_descriptors_is_a_clear_error_not_a_traceback():
    import errno

    import pytest

    from driver.firewall.ports import HostPorts
    from pynet_core.errors import Exhausted

    def no_more(family, kind):
        raise OSError(errno.EMFILE, "Too many open files")

    with pytest.raises(Exhausted, match="open-files limit"):
        HostPorts(socket_factory=no_more).reserve("tcp", "127.0.0.1", 0, 0)
