"""spamd's drop-in (role spamassassin): the arguments systemd gives spamd."""

from __future__ import annotations

import shlex

import pytest

from ansible_render import render

DROPIN = "etc/systemd/system/spamd.service.d/passerelle.conf.j2"


def spamd_argv(text: str) -> list[str]:
    """ExecStart's last value as systemd splits it (continuations joined, quotes removed)."""
    lines = text.replace("\\\n", " ").splitlines()
    start = [line for line in lines if line.startswith("ExecStart=") and line != "ExecStart="]
    assert len(start) == 1, start
    return shlex.split(start[0].removeprefix("ExecStart="))


@pytest.mark.parametrize(
    ("family", "plugin"),
    [
        ("Debian", "/etc/spamassassin/PasserelleSpamdKeepConfig.pm"),
        ("RedHat", "/etc/mail/spamassassin/PasserelleSpamdKeepConfig.pm"),
    ],
)
def test_spamd_loads_the_keep_config_plugin_by_default(family: str, plugin: str) -> None:
    argv = spamd_argv(render("spamassassin", DROPIN, "gw1", os_family=family))
    assert f"--cf=loadplugin PasserelleSpamdKeepConfig {plugin}" in argv
    assert "--nouser-config" in argv  # what makes the restore useless


def test_spamd_restores_its_configuration_when_told_to() -> None:
    argv = spamd_argv(render("spamassassin", DROPIN, "gw1", spamassassin_keep_config=False))
    assert not [a for a in argv if a.startswith("--cf")]
    assert "--nouser-config" in argv
