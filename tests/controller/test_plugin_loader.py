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


def test_a_module_of_the_same_name_from_another_file_is_not_reused(tmp_path: Path) -> None:
    """Another checkout's copy under the same name is replaced by the file asked for."""
    for tree, value in (("one", 1), ("two", 2)):
        (tmp_path / tree).mkdir()
        (tmp_path / tree / "_passerelle_test_plugin.py").write_text(f"VALUE = {value}\n")
    assert load(tmp_path / "one" / "_passerelle_test_plugin.py").VALUE == 1
    assert load(tmp_path / "two" / "_passerelle_test_plugin.py").VALUE == 2
    assert load(tmp_path / "two" / "_passerelle_test_plugin.py").VALUE == 2
