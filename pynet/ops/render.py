"""What the operator commands print: aligned tables and short notes for people, one JSON
document with --json. Colour only on a terminal (and never with NO_COLOR set)."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable, Sequence, TextIO

# Exit codes of every operator command (README "Operating pynet").
OK = 0            # nothing to report
PROBLEMS = 1      # the check found something (leaks, differences, an unhealthy store)
USAGE = 2         # bad flags (argparse's own code)
UNAVAILABLE = 3   # could not look: not root, the store or dockerd unreachable
DECLINED = 4      # --repair not confirmed: nothing changed

_COLOURS = {"ok": "32", "warn": "33", "bad": "31", "dim": "2", "bold": "1"}


class Output:
    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.colour = (not as_json and self.stream.isatty() and not os.environ.get("NO_COLOR")
                       and os.environ.get("TERM") != "dumb")

    def paint(self, text: str, tone: str) -> str:
        if not self.colour or tone not in _COLOURS:
            return text
        return f"\033[{_COLOURS[tone]}m{text}\033[0m"

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def heading(self, text: str) -> None:
        self.line(self.paint(text, "bold"))

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]],
              tones: Sequence[str | None] | None = None, empty: str = "(none)") -> None:
        """Columns padded to their widest cell; a row's tone colours the whole row."""
        rows = [[_cell(c) for c in row] for row in rows]
        if not rows:
            self.line(f"  {empty}")
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        self.line(self.paint("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), "dim"))
        for i, row in enumerate(rows):
            text = "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
            tone = tones[i] if tones else None
            self.line(self.paint(text, tone) if tone else text)

    def json(self, document: Any) -> None:
        self.stream.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def fail(out: Output, message: str, code: int = UNAVAILABLE) -> int:
    """A command that could not look: the reason on stderr (and in JSON on stdout)."""
    if out.as_json:
        out.json({"error": message})
    sys.stderr.write(f"pynet: {message}\n")
    return code
