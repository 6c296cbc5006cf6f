"""Load a repository file that is not part of a package (an Ansible filter plugin, a module
in ``library/``, a bench script, a shared fixture module) as a Python module, once.

``load("filter_plugins/passerelle_maps.py")`` returns the module ``passerelle_maps``, also put
in ``sys.modules`` under that name (so pickling, ``dataclasses`` and a second load see the same
module object). The loading itself is the filter plugins' own loader
(``filter_plugins/_passerelle_load.py``): one loader for both.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
# The loader the filter plugins share, reached the way they reach it.
if str(ROOT / "filter_plugins") not in sys.path:
    sys.path.append(str(ROOT / "filter_plugins"))
import _passerelle_load  # noqa: E402


def load(path: str | Path, name: str | None = None) -> ModuleType:
    """The module in ``path`` (relative to the repository root, or absolute)."""
    file = Path(path) if Path(path).is_absolute() else ROOT / path
    return _passerelle_load.load(name or file.stem, file.resolve())
