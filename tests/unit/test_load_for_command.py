"""A command of the greylist, connection guard and reports CLIs given a broken configuration
prints one ``error: FILE: key: message`` line and exits 1, without a traceback
(``passerelle.config.load_for_command``, the one loader those commands share)."""

from __future__ import annotations

from pathlib import Path

import pytest

from passerelle.cli import main

COMMANDS = [
    ["greylist", "purge"],
    ["greylist", "whitelist", "list"],
    ["connwatch", "blocks"],
    ["metrics", "show"],
    ["status"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_broken_configuration_is_one_error_line(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("bogus_key = 1\n")
    assert main([*command, "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {bad}: bogus_key: unknown setting\n"
