"""libnftables (the C library behind `nft`, soname libnftables.so.1) through ctypes.

Why pynet carries its own few lines instead of the nftables project's Python binding: that
binding is not on PyPI, and distributions ship it for their own python3 only (Debian's
python3-nftables in /usr/lib/python3/dist-packages), so a `pip install` or `pipx install` of
pynet could not import it. The C library is what matters, its API is small and stable
(one soname since 0.9), and every Debian/Ubuntu host with nftables has it (libnftables1).

The interface is the part of the binding pynet used, so the firewall code did not change:
cmd(script) -> (rc, output, error) and json_cmd(document) -> (rc, parsed output, error).
A context is not thread-safe in libnftables; this class serialises its own calls.
"""
from __future__ import annotations

import ctypes
import json
import threading
from functools import cache
from typing import Any

SONAME = "libnftables.so.1"
# <nftables/libnftables.h>: NFT_CTX_DEFAULT and NFT_CTX_OUTPUT_JSON (1 << 4).
CTX_DEFAULT = 0
OUTPUT_JSON = 1 << 4
INSTALL_HINT = "install libnftables1 (Debian/Ubuntu: apt-get install libnftables1)"


class LibnftablesUnavailable(OSError):
    """libnftables.so.1 cannot be loaded, or lacks a function pynet calls, or refuses a context."""


@cache
def load(soname: str = SONAME) -> ctypes.CDLL:
    """The library with the signatures of the calls pynet makes (loaded once per process)."""
    try:
        lib = ctypes.CDLL(soname)
    except OSError as exc:
        raise LibnftablesUnavailable(f"cannot load {soname} ({exc}): {INSTALL_HINT}") from None
    ctx, text, uint = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint
    signatures = {
        "nft_ctx_new": (ctx, [ctypes.c_uint32]),
        "nft_ctx_free": (None, [ctx]),
        "nft_ctx_output_get_flags": (uint, [ctx]),
        "nft_ctx_output_set_flags": (None, [ctx, uint]),
        "nft_ctx_buffer_output": (ctypes.c_int, [ctx]),
        "nft_ctx_buffer_error": (ctypes.c_int, [ctx]),
        "nft_ctx_get_output_buffer": (text, [ctx]),
        "nft_ctx_get_error_buffer": (text, [ctx]),
        "nft_run_cmd_from_buffer": (ctypes.c_int, [ctx, text]),
    }
    for name, (restype, argtypes) in signatures.items():
        try:
            function = getattr(lib, name)
        except AttributeError:
            raise LibnftablesUnavailable(f"{soname} has no {name}: it is not the nftables "
                                         f"library pynet expects; {INSTALL_HINT}") from None
        function.restype, function.argtypes = restype, argtypes
    return lib


class Libnftables:
    """One libnftables context, output and errors captured in buffers (never printed)."""

    def __init__(self, soname: str = SONAME) -> None:
        self._lib = load(soname)
        self._lock = threading.Lock()
        self._ctx = self._lib.nft_ctx_new(CTX_DEFAULT)
        if not self._ctx:
            raise LibnftablesUnavailable("libnftables could not make a context (nft_ctx_new)")
        if self._lib.nft_ctx_buffer_output(self._ctx) != 0 or self._lib.nft_ctx_buffer_error(self._ctx) != 0:
            self.close()
            raise LibnftablesUnavailable("libnftables could not buffer its output")

    def cmd(self, script: str) -> tuple[int, str, str]:
        """Run an nft script (one transaction): (return code, output, error text)."""
        with self._lock:
            return self._run(script)

    def json_cmd(self, document: dict[str, Any]) -> tuple[int, Any, str]:
        """Run a libnftables JSON document: (return code, parsed JSON output or None, error).
        JSON input is parsed only while JSON output is on (libnftables 1.0.x), so both are
        switched on for this call alone."""
        with self._lock:
            flags = self._lib.nft_ctx_output_get_flags(self._ctx)
            self._lib.nft_ctx_output_set_flags(self._ctx, flags | OUTPUT_JSON)
            try:
                rc, out, err = self._run(json.dumps(document))
            finally:
                self._lib.nft_ctx_output_set_flags(self._ctx, flags)
        return rc, (json.loads(out) if out.strip() else None), err

    def _run(self, text: str) -> tuple[int, str, str]:
        if not self._ctx:
            raise ValueError("libnftables context is closed")
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
        # Read both buffers every time: what is left unread would show up in the next answer.
        out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
        err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx:
            self._lib.nft_ctx_free(ctx)

    def __del__(self) -> None:
        if getattr(self, "_ctx", None):
            self.close()


def probe(soname: str = SONAME) -> str | None:
    """None if a libnftables context can be made here, else why not (for `pynet serve`'s
    start-up checks)."""
    try:
        Libnftables(soname).close()
    except LibnftablesUnavailable as exc:
        return str(exc)
    return None
