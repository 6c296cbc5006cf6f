"""Adding a domain to the inventory and rerunning: only the map tasks change, sendmail is
reloaded (same process) rather than restarted, and mail to the new domain flows. Removing
it stops relaying. Runs last: it reconverges the gateways."""

import yaml
from labsmtp import PROJECT, changed_tasks, lab_playbook, main_pid, message, smtp, wait_for_mail

MAP_TASKS = {
    "sendmail : Render and build the mailertable",
    "sendmail : Render and build the access map",
    "sendmail : Render the relay-domains list",
    # passerelle route reads the same mailertable (routing.toml, role ldap_route); the route
    # daemon does not restart for it (no "ldap_route : Restart passerelle route" here)
    "ldap_route : Render the routing of this gateway for passerelle route",
    "sendmail : Reload sendmail",
}


def _domains() -> list[dict]:
    data = yaml.safe_load((PROJECT / "inventory/lab/group_vars/all/fleet.yml").read_text())
    return data["passerelle_domains"]


def test_add_then_remove_a_domain(tmp_path):
    new = {"name": "static-c.test", "server": "mailstore1"}
    # The backend first learns the domain (as a tenant's server would).
    lab_playbook(
        "mailstore1",
        {"sendmail_local_domains": ["static-a.test", "static-c.test"]},
        tmp_path,
    )
    pids = {gw: main_pid(gw) for gw in ("gw1", "gw2")}

    run, elapsed = lab_playbook("gateways", {"passerelle_domains": [*_domains(), new]}, tmp_path)
    print(f"add-a-domain rerun on the gateways: {elapsed:.1f} s")
    changed = changed_tasks(run)
    for gw in ("gw1", "gw2"):
        assert changed.get(gw), f"nothing changed on {gw}"
        assert changed[gw] <= MAP_TASKS, f"{gw}: unexpected changes {changed[gw] - MAP_TASKS}"
        assert "sendmail : Reload sendmail" in changed[gw]
        assert main_pid(gw) == pids[gw], f"sendmail on {gw} was restarted, not reloaded"

    tag, text = message("dave@internet.test", "alice@static-c.test")
    d = smtp("outside", "gw2", "dave@internet.test", ["alice@static-c.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    wait_for_mail("mailstore1", "alice", tag)

    # Removal through the README's quick path: only the maps (tag "maps").
    run, _ = lab_playbook(
        "gateways", {"passerelle_domains": _domains()}, tmp_path, "--tags", "maps"
    )
    changed = changed_tasks(run)
    assert changed["gw1"] <= MAP_TASKS
    assert "sendmail : Render and build the mailertable" in changed["gw1"]
    d = smtp("outside", "gw1", "dave@internet.test", ["alice@static-c.test"])
    reply = d.reply("rcpt")
    assert reply is not None and reply[0] == 550, d.transcript
    assert "Relaying denied" in reply[1]
