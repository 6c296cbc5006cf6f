"""filter_plugins/passerelle_systemd.py: the one sandbox every Passerelle unit renders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from plugins import load

ROOT = Path(__file__).resolve().parents[2]
psd = load("filter_plugins/passerelle_systemd.py")
sandbox = psd.passerelle_systemd_sandbox


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_defaults_for_a_user_service():
    s = _settings(sandbox({"memory_max_mb": "200", "tasks_max": 2048}))
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
        "RestrictAddressFamilies": "AF_UNIX",
        "CapabilityBoundingSet": "",
        "MemoryMax": "200M",
        "TasksMax": "2048",
    }.items():
        assert s[key] == [value], key
    assert s["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert "ReadWritePaths" not in s
    assert "UMask" not in s  # the milters set 0007 for their sockets themselves


def test_root_service_that_mails():
    s = _settings(
        sandbox(
            {
                "root": True,
                "mail": True,
                "write_paths": ["/etc/mail", "/etc/mail"],
                "capabilities": ["CAP_DAC_OVERRIDE", "CAP_SETUID"],
                "protect_proc": False,
            }
        )
    )
    assert s["SystemCallFilter"] == ["@system-service"]
    assert s["CapabilityBoundingSet"] == ["CAP_DAC_OVERRIDE CAP_SETUID"]
    paths = s["ReadWritePaths"][0].split()
    assert paths[0] == "/etc/mail" and paths.count("/etc/mail") == 1
    assert "-/var/spool/mqueue" in paths
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "ProtectProc" not in s


@pytest.mark.parametrize("opts", [{"nope": 1}, {"write_paths": ["relative/path"]}])
def test_bad_options_fail(opts):
    with pytest.raises(AnsibleFilterError):
        sandbox(opts)


def test_every_passerelle_service_unit_renders_the_sandbox():
    units = [
        p
        for p in (ROOT / "roles").rglob("passerelle-*.service.j2")
        if "clamav_lab_mirror" not in p.parts  # lab only
    ]
    assert len(units) >= 12
    for unit in units:
        text = unit.read_text()
        assert "| passerelle_systemd_sandbox }}" in text, unit
        # written once: no hand-written copy of the settings beside it
        assert not re.search(r"^(NoNewPrivileges|ProtectSystem|PrivateTmp)=", text, re.M), unit
