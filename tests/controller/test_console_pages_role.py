"""Role console's gateway configuration for the greylist and connection-guard pages: the
keys it renders are the ones gateway-sync reads, pointing at the milter's and the guard's
own configuration files."""

from __future__ import annotations

from ansible_render import render
from passerelle.console.gateway_sync import load_config

GATEWAY = "etc/passerelle/console-gateway.toml.j2"


def test_gateway_sync_reads_the_greylist_and_guard_configs(tmp_path):
    path = tmp_path / "console-gateway.toml"
    path.write_text(render("console", GATEWAY, "gw1"))
    cfg = load_config(str(path))
    assert cfg.greylist_config == "/etc/passerelle/greylist.toml"
    assert cfg.connwatch_config == "/etc/passerelle/connwatch.toml"
