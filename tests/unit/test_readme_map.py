"""README's "Architecture" section is the map of the code: it names every module, and every
path it names exists. A module added without its line, or a path left behind by a move, fails
here rather than misleading the next reader."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pynet_core", "driver", "ipam_driver", "pynet")


def architecture_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Architecture\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_module_is_on_the_map():
    section = architecture_section()
    named = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\.py", section))
    missing = sorted(str(path.relative_to(REPO)) for pkg in PACKAGES
                     for path in (REPO / pkg).rglob("*.py")
                     if path.name != "__init__.py" and path.stem not in named)
    assert missing == [], f"README's Architecture section does not name {missing}"


def test_every_path_on_the_map_exists():
    section = architecture_section()
    paths = set(re.findall(r"`((?:%s)/[A-Za-z0-9_/]+(?:\.py|/))`" % "|".join(PACKAGES), section))
    assert paths, "the section names no path: the pattern above no longer matches it"
    gone = sorted(p for p in paths if not (REPO / p).exists())
    assert gone == [], f"README's Architecture section names paths that do not exist: {gone}"
