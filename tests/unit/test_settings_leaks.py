"""The leak check's flags and their PYNET_* twins."""
import argparse

import pytest

from driver.settings import add_serve_arguments, settings_from_args


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DOCKER_HOST", "LEAK_CHECK_INTERVAL", "LEAK_GRACE"):
        monkeypatch.delenv(f"PYNET_{name}", raising=False)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def test_defaults():
    s = parse()
    assert (s.docker_host, s.leak_check_interval, s.leak_grace) == ("unix:///var/run/docker.sock", 60, 300)


def test_environment_twins(monkeypatch):
    monkeypatch.setenv("PYNET_DOCKER_HOST", "unix:///run/other.sock")
    monkeypatch.setenv("PYNET_LEAK_CHECK_INTERVAL", "0")
    monkeypatch.setenv("PYNET_LEAK_GRACE", "120")
    s = parse()
    assert (s.docker_host, s.leak_check_interval, s.leak_grace) == ("unix:///run/other.sock", 0, 120)


@pytest.mark.parametrize("argv, message", [
    (["--leak-grace", "30"], "--leak-grace 30: expected at least 60"),
    (["--leak-check-interval", "-1"], "--leak-check-interval -1"),
])
def test_bad_values_are_refused_naming_them(argv, message):
    with pytest.raises(ValueError, match=message):
        parse(*argv)
