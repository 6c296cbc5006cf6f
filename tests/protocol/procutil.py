"""Process helpers shared by the protocol-test fixtures (throwaway daemons and milters)."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Terminate a daemon started by a fixture; kill it if it does not stop in 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
