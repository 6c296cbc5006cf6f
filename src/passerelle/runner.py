"""Running an external command (makemap, systemctl, sendmail): ``run_command`` and its type.

Code that runs a command takes a ``Runner`` argument that defaults to ``run_command``, so the
tests pass a fake one and no test runs a real system command.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

# (argv, stdin file or None) -> (exit status, output); Optional, not |: the alias is evaluated
# at run time, and EL 9 runs Python 3.9.
Runner = Callable[[Sequence[str], Optional[Path]], tuple[int, str]]


def run_command(argv: Sequence[str], stdin: Path | None = None) -> tuple[int, str]:
    """Default Runner: run ``argv`` (stdin from a file), return (status, stdout+stderr)."""
    try:
        if stdin is not None:
            with stdin.open("rb") as fh:
                cp = subprocess.run(
                    list(argv), stdin=fh, capture_output=True, timeout=300, check=False
                )
        else:
            cp = subprocess.run(
                list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=False
            )
    except (OSError, subprocess.SubprocessError) as exc:
        return 127, str(exc)
    return cp.returncode, (cp.stdout + cp.stderr).decode("utf-8", "replace").strip()
