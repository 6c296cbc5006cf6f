"""One way to load a file that is not in a package: ``tests/plugins.py``.

No other test module loads filter plugins, ``library/`` modules or scripts by path on its own.
"""

from __future__ import annotations

import re
from pathlib import Path

from plugins import ROOT, load

_BY_PATH = re.compile(r"spec_from_file_location|SourceFileLoader|importlib\.machinery|runpy\.")


def by_path_loaders(files: dict[str, str]) -> list[str]:
    """The files (name -> text) that load a module by path themselves."""
    return sorted(name for name, text in files.items() if _BY_PATH.search(text))


def test_only_the_shared_loader_loads_by_path() -> None:
    files = {
        str(p.relative_to(ROOT)): p.read_text()
        for p in (ROOT / "tests").rglob("*.py")
        if p != ROOT / "tests" / "plugins.py" and p != Path(__file__)
    }
    assert by_path_loaders(files) == []


def test_the_check_catches_a_private_loader() -> None:
    text = 'spec = importlib.util.spec_from_file_location("m", "filter_plugins/m.py")\n'
    assert by_path_loaders({"tests/unit/test_x.py": text, "ok.py": "pm = load('x')"}) == [
        "tests/unit/test_x.py"
    ]


def test_load_is_idempotent() -> None:
    a = load("filter_plugins/passerelle_sizing.py")
    assert load("filter_plugins/passerelle_sizing.py") is a
    assert callable(a.FilterModule().filters()["passerelle_sizing"])
