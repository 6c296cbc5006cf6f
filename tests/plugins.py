"""Load a repository file that is not part of a package (an Ansible filter plugin, a module
in ``library/``, a bench script, a shared fixture module) as a Python module, once.

``load("filter_plugins/passerelle_maps.py")`` returns the module ``passerelle_maps``, also put
in ``sys.modules`` under that name (so pickling, ``dataclasses`` and a second load see the same
module object).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load(path: str | Path, name: str | None = None) -> ModuleType:
    """The module in ``path`` (relative to the repository root, or absolute)."""
    file = Path(path) if Path(path).is_absolute() else ROOT / path
    name = name or file.stem
    module = sys.modules.get(name)
    if module is not None and Path(getattr(module, "__file__", "") or "") == file:
        return module
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None, f"cannot load {file}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
