"""Test launcher: ``passerelle.cli`` with a fault injected into no-reply milter callbacks.

    python faultymilter.py passerelle.spam.milter:SpamMilter header,body -- spam milter -c X

Each named callback (one the class marks ``@Milter.noreply``) raises ``RuntimeError`` when one
of its arguments contains ``FAULT`` (str or bytes, any case), and otherwise runs unchanged.
The callback is re-marked no-reply, so the milter negotiates exactly the same steps. Nothing
in ``src`` knows about this: the milter's own class is patched before the CLI binds it (the
milters run as subprocesses in the protocol tests, so monkeypatch cannot reach them).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

import Milter

FAULT = "passerelle-test-fault"


def _faulty(inner: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(inner)
    def callback(self: Any, *args: Any) -> Any:
        for a in args:
            if isinstance(a, bytes):
                a = a.decode("latin-1")
            if isinstance(a, str) and FAULT in a.lower():
                raise RuntimeError(f"injected fault in {inner.__name__}")
        return inner(self, *args)

    return callback


def inject(target: str, names: str) -> None:
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    for name in names.split(","):
        marked = cls.__dict__[name]
        if not getattr(marked, "milter_protocol", 0):
            raise SystemExit(f"{cls_name}.{name} is not a no-reply callback")
        setattr(cls, name, Milter.noreply(_faulty(marked.__wrapped__)))


if __name__ == "__main__":
    target, names, sep, *cli_args = sys.argv[1:]
    assert sep == "--", sys.argv
    inject(target, names)
    from passerelle.cli import main

    sys.exit(main(cli_args))
