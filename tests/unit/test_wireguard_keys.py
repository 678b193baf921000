"""driver/wireguard: the host key pair (keys.py) and strict key parsing (api.py).

Uses the real `wg` (wireguard-tools; scripts/install-test-deps.sh installs it)."""
from __future__ import annotations

import base64
import os
import stat
import threading

import pytest

from driver.wireguard.api import BadKey, KeyFileError, PrivateKey, PublicKey, WireGuardUnavailable
from driver.wireguard.keys import KEY_FILE, generate_private, load_or_create, public_of

# RFC 7748 section 6.1: Alice's X25519 private and public key.
ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"


def test_a_new_key_file_is_0600_one_base64_line_and_stable(tmp_path):
    keys = load_or_create(tmp_path / "state")
    path = tmp_path / "state" / KEY_FILE
    assert keys.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    assert PrivateKey.parse(text.strip()) == keys.private
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    again = load_or_create(tmp_path / "state")
    assert again.private == keys.private and again.public == keys.public
    assert [p.name for p in (tmp_path / "state").iterdir()] == [KEY_FILE]  # no temporary left


def test_the_file_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        load_or_create(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_the_public_key_is_x25519_of_the_private_key():
    public = public_of(PrivateKey(bytes.fromhex(ALICE_PRIVATE)))
    assert public == PublicKey(bytes.fromhex(ALICE_PUBLIC))


def test_generated_keys_differ_and_are_valid():
    one, two = generate_private(), generate_private()
    assert one != two


def test_racing_creators_end_with_one_key(tmp_path):
    found = []
    threads = [threading.Thread(target=lambda: found.append(load_or_create(tmp_path).private))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 6 and len(set(found)) == 1
    assert PrivateKey.parse((tmp_path / KEY_FILE).read_text().strip()) == found[0]


def test_a_key_file_others_can_read_is_refused_not_replaced_and_not_quoted(tmp_path):
    keys = load_or_create(tmp_path)
    path = tmp_path / KEY_FILE
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="mode 0644") as info:
        load_or_create(tmp_path)
    assert keys.private.reveal_base64() not in str(info.value)
    assert PrivateKey.parse(path.read_text().strip()) == keys.private


def test_a_symlinked_key_file_is_refused(tmp_path):
    real = tmp_path / "elsewhere"
    load_or_create(real)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / KEY_FILE).symlink_to(real / KEY_FILE)
    with pytest.raises(KeyFileError, match="cannot open"):
        load_or_create(tmp_path / "state")


@pytest.mark.parametrize("content", [b"", b"not a key\n", b"A" * 43 + b"=\n",  # all zero
                                     b"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\n",
                                     b" yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n",
                                     b"\xff" * 44, b"x" * 500])
def test_a_key_file_that_is_not_exactly_one_key_is_refused_without_its_content(tmp_path, content):
    path = tmp_path / KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError) as info:
        load_or_create(tmp_path)
    assert str(path) in str(info.value)
    if content.strip():
        assert content.strip()[:20].decode("latin-1") not in str(info.value)


def test_a_private_key_never_shows_itself():
    key = PrivateKey(bytes.fromhex(ALICE_PRIVATE))
    text = key.reveal_base64()
    for shown in (repr(key), str(key), f"{key}", repr([key]), repr(load_like(key))):
        assert text not in shown and ALICE_PRIVATE not in shown
    with pytest.raises(BadKey) as info:
        PrivateKey.parse(text[:-2] + "x=")
    assert text[:-2] not in str(info.value)


def load_like(key):
    from driver.wireguard.keys import HostKeys
    return HostKeys(key, PublicKey(bytes.fromhex(ALICE_PUBLIC)), "p")


def test_a_missing_wg_is_named():
    with pytest.raises(WireGuardUnavailable, match="wireguard-tools"):
        generate_private(wg="/nonexistent/wg")


@pytest.mark.parametrize("raw", [bytes(range(32)), b"\xff" * 32, os.urandom(32), os.urandom(32)])
def test_public_keys_round_trip_as_standard_base64_and_hex(raw):
    text = base64.b64encode(raw).decode()
    key = PublicKey.parse(text)
    assert key.raw == raw and key.base64 == text and key.hex == raw.hex()
    assert PublicKey.parse(raw.hex()) == key


@pytest.mark.parametrize("text", [
    "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr0661KjqqbTmo",      # no padding
    "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr0661KjqqbTmo==",    # too long
    "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr0661KjqqbTmp=",     # non-canonical last digit
    "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr0661KjqqbTmo=",     # URL-safe alphabet
    "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr0661KjqqbTmo=\n",   # trailing newline
    " hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr0661KjqqbTmo=",
    "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr0661KjqqbTm=",      # 31 bytes
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",     # all zero
    ALICE_PUBLIC.upper(), ALICE_PUBLIC[:-1], "", None, 42, b"bytes",
])
def test_public_key_parsing_is_strict(text):
    with pytest.raises(BadKey):
        PublicKey.parse(text)


def test_the_canonical_alice_public_key_parses():
    text = base64.b64encode(bytes.fromhex(ALICE_PUBLIC)).decode()
    key = PublicKey.parse(text)
    assert key.hex == ALICE_PUBLIC and key.base64 == text
