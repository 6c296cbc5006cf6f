"""Role console, the gateways' status report (fleet page): gateway-sync probes the ops.toml
that role ops_reports renders on the same host, and its sandbox lets it read what that
names (systemctl over systemd's socket, the queues, ClamAV's signatures) without more."""

from __future__ import annotations

import re

import tomllib  # the controller runs Python 3.11+

from ansible_render import render

GATEWAY = "etc/passerelle/console-gateway.toml.j2"
SYNC_UNIT = "etc/systemd/system/passerelle-console-sync.service.j2"


def test_gateway_sync_probes_the_ops_config_of_its_host():
    for gw in ("gw1", "gw2"):
        sync = tomllib.loads(render("console", GATEWAY, gw))["gateway_sync"]
        assert sync["ops_config"] == "/etc/passerelle/ops.toml"
        ops = tomllib.loads(render("ops_reports", "ops.toml.j2", gw))["ops"]
        assert "sendmail" in ops["units"] and ops["queue_dirs"] and ops["signature_dir"]


def test_gateway_sync_sandbox_reads_what_the_status_report_probes():
    unit = render("console", SYNC_UNIT, "gw1")
    ops = tomllib.loads(render("ops_reports", "ops.toml.j2", "gw1"))["ops"]
    assert not re.search(r"^User=", unit, re.M)  # root: systemd's private socket answers it
    families = re.search(r"^RestrictAddressFamilies=(.*)$", unit, re.M)
    assert families and "AF_UNIX" in families.group(1).split()
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M)
    assert caps and "CAP_DAC_READ_SEARCH" in caps.group(1).split()  # the 0700 queues
    # nothing it reads is hidden (ProtectSystem=strict leaves the rest readable)
    assert "ProtectSystem=strict" in unit
    for hiding in ("InaccessiblePaths=", "TemporaryFileSystem=", "PrivateUsers=yes"):
        assert hiding not in unit
    assert not [p for p in [*ops["queue_dirs"], ops["signature_dir"]] if p.startswith("/home")]
