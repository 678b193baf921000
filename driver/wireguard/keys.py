"""This host's WireGuard key pair.

The private key is made on this host by `wg genkey` (wireguard-tools: the same generator every
WireGuard user trusts; no Python crypto dependency) and kept in the state directory as
`wireguard.key`, mode 0600, owned by this user. It is created atomically: written to a
temporary file opened O_EXCL with mode 0600, fsynced, then linked to its name, so a reader
never sees a half-written key and two processes racing both end up with the one that won.
The public key is derived by `wg pubkey` (private key on stdin, never in argv).

The key text is never logged and never in an error message (PrivateKey hides itself).
"""
from __future__ import annotations

import os
import secrets
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .api import BadKey, KeyFileError, PrivateKey, PublicKey, WireGuardUnavailable

KEY_FILE = "wireguard.key"


@dataclass(frozen=True, slots=True)
class HostKeys:
    private: PrivateKey
    public: PublicKey
    path: Path


def _wg(args: list[str], stdin: str | None, wg: str, timeout: float) -> str:
    try:
        proc = subprocess.run([wg, *args], input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    except FileNotFoundError:
        raise WireGuardUnavailable(f"'{wg}' is not installed (Debian: apt-get install wireguard-tools)") from None
    except subprocess.TimeoutExpired:
        raise WireGuardUnavailable(f"'{wg} {args[0]}' did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        # wg's stderr never echoes the key it was given.
        raise WireGuardUnavailable(f"'{wg} {args[0]}' failed (exit {proc.returncode}): "
                                   f"{proc.stderr.strip()[:200]}")
    return proc.stdout


def generate_private(wg: str = "wg", timeout: float = 5.0) -> PrivateKey:
    try:
        return PrivateKey.parse(_wg(["genkey"], None, wg, timeout).strip(), "the key from 'wg genkey'")
    except BadKey:
        raise WireGuardUnavailable(f"'{wg} genkey' printed something that is not a key") from None


def public_of(private: PrivateKey, wg: str = "wg", timeout: float = 5.0) -> PublicKey:
    out = _wg(["pubkey"], private.reveal_base64() + "\n", wg, timeout).strip()
    return PublicKey.parse(out, "the key from 'wg pubkey'")


def _read_key_file(path: Path) -> PrivateKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"cannot open the WireGuard key file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"the WireGuard key file {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise KeyFileError(f"the WireGuard key file {path} belongs to uid {st.st_uid}, not to "
                               f"this process (uid {os.geteuid()})")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(f"the WireGuard key file {path} has mode {mode:04o}: others could read "
                               f"it; it must be 0600 (chmod 600 it, or delete it to make a new key)")
        if st.st_size > 128:
            raise KeyFileError(f"the WireGuard key file {path} is {st.st_size} bytes, not a key")
        data = os.read(fd, 129)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"the WireGuard key file {path} is not a base64 key") from None
    if text.endswith("\n"):
        text = text[:-1]
    try:
        return PrivateKey.parse(text, "key file")
    except BadKey:
        raise KeyFileError(f"the WireGuard key file {path} does not hold one base64 32-byte key "
                           f"(one line, 44 characters)") from None


def _write_new_key(path: Path, key: PrivateKey) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (key.reveal_base64() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)      # fails if another process made one first: theirs stands
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_or_create(state_dir: str | Path, wg: str = "wg") -> HostKeys:
    """This host's keys: read from `state_dir/wireguard.key`, or made now when it is absent.
    A file with the wrong mode, owner or content is refused (KeyFileError), never replaced."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / KEY_FILE
    if not os.path.lexists(path):
        _write_new_key(path, generate_private(wg))
    private = _read_key_file(path)
    return HostKeys(private, public_of(private, wg), path)


def rotate(state_dir: str | Path, apply, wg: str = "wg") -> HostKeys:
    """A new key pair for this host: made by `wg genkey`, handed to `apply(new HostKeys)` (which
    sets it on the link and may fail: then nothing changed, the old key file stands), then
    written over `state_dir/wireguard.key` atomically (a 0600 temporary file renamed over it,
    fsynced). A crash between the two leaves the old file: the next start puts the old key
    back on the link, consistent with the public key still in the store."""
    directory = Path(state_dir)
    path = directory / KEY_FILE
    _read_key_file(path)  # the current file must be ours and sound before it is replaced
    private = generate_private(wg)
    new = HostKeys(private, public_of(private, wg), path)
    apply(new)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (private.reveal_base64() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return new
