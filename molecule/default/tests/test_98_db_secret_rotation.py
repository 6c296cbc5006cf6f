"""Rotating the database secret (README, "Rotating the database secret"), on the lab.

`ansible-playbook site.yml --tags db-secret` with a new `passerelle_greylist_db_secret`: the
MariaDB users get their new passwords, the gateways' and relays' files that hold one are
re-rendered, the greylist milters restart and spamd reloads; the old passwords are refused,
greylisting, the shared Bayes store and the connection guard's sink work with the new ones,
and no triplet or Bayes token is lost. The lab is left on the new secret (this is the last test
of the default scenario, which then destroys the lab); on a lab of scripts/lab, the next
`scripts/lab converge` puts it back on the inventory's secret (the same tasks).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import tomllib
import yaml
from labsmtp import (
    NET,
    PREFIX,
    PROJECT,
    changed_tasks,
    lab_playbook,
    main_pid,
    message,
    podman_exec,
    present,
    smtp,
)

GATEWAYS = present("gw1", "gw2")
# monitoring: the web console's user derives its password from the secret too.
LIMIT = "greylist_db:gateways:smtpx:monitoring"
CONFIG = "/etc/passerelle/greylist.toml"
CONNWATCH = "/etc/passerelle/connwatch.toml"
CONNWATCH_TASK = (
    "connwatch : Install the guard's configuration (checked by passerelle connwatch check-config)"
)
CONSOLE_TASK = (
    "console : Install the console's configuration (checked by passerelle console check-config)"
)
CONSOLE_GATEWAY_TASK = (
    "console : Install the console's gateway configuration"
    " (checked by passerelle console check-gateway-config)"
)
CONSOLE_GATEWAY = "/etc/passerelle/console-gateway.toml"
SOURCE = f"{NET}.245"  # not whitelisted for greylisting (test_30)
INVENTORY_SECRET = yaml.safe_load(
    (PROJECT / "inventory/lab/group_vars/all/greylist.yml").read_text()
)["passerelle_greylist_db_secret"]

pytestmark = pytest.mark.skipif(not present("db1"), reason="needs the shared database (db1)")


def _password(secret: str, user: str) -> str:
    """The derivation the README documents: sha256(secret ':' user), 32 hex digits."""
    return hashlib.sha256(f"{secret}:{user}".encode()).hexdigest()[:32]


def _rotate(secret: str, tmp_path: Path) -> dict[str, set[str]]:
    """Run the rotation to ``secret`` (--tags db-secret); the changed task names per host."""
    extra = {"passerelle_greylist_db_secret": secret}
    run, elapsed = lab_playbook(LIMIT, extra, tmp_path, "--tags", "db-secret")
    print(f"rotation run: {elapsed:.0f} s")
    return changed_tasks(run)


def _count(query: str) -> int:
    return int(podman_exec("db1", "mysql", "--batch", "--skip-column-names", "-e", query).strip())


def _store_answers(gateway: str, config: str = CONFIG) -> subprocess.CompletedProcess[str]:
    """The greylist CLI reading the whitelist table through the given configuration."""
    return subprocess.run(
        [
            "podman",
            "exec",
            f"{PREFIX}{gateway}",
            "passerelle",
            "greylist",
            "whitelist",
            "list",
            "--config",
            config,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _greylisted_through(gateway: str) -> str:
    sender = f"rotation-{uuid.uuid4().hex[:10]}@internet.test"
    _tag, text = message(sender, "alice@static-a.test")
    d = smtp("outside", gateway, sender, ["alice@static-a.test"], data=text, source=SOURCE)
    reply = d.reply("rcpt")
    assert reply is not None and reply[0] == 451 and "greylisted" in reply[1].lower(), d.transcript
    return sender


def _wait_store_answers(gateway: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (res := _store_answers(gateway)).returncode != 0:
        assert time.monotonic() < deadline, res.stderr
        time.sleep(1)


def test_rotating_the_database_secret(tmp_path):
    rotated = f"rotated-{uuid.uuid4().hex}"
    triplets = _count("SELECT COUNT(*) FROM greylist.greylist")
    tokens = _count("SELECT COUNT(*) FROM spamassassin.bayes_token")
    milters = {gw: main_pid(gw, "passerelle-greylist") for gw in GATEWAYS}

    changed = _rotate(rotated, tmp_path)

    # The server got the new passwords; every holder of one was re-rendered.
    assert (
        "mariadb : Create a least-privilege user per gateway, and the schema user" in changed["db1"]
    )
    assert "mariadb : Create the Bayes user (one for every gateway)" in changed["db1"]
    for gw in GATEWAYS:
        names = changed.get(gw, set())
        assert any(n.startswith("passerelle_tools : Install the configuration") for n in names), (
            names
        )
        assert "greylist : Restart the greylist milter" in names, names
        assert "spamassassin : Install local.cf once spamassassin --lint accepts it" in names, names
        assert "spamassassin : Reload spamd" in names, names
        assert CONNWATCH_TASK in names, names
        if present("mon1"):
            assert CONSOLE_GATEWAY_TASK in names, names
        # nothing else of the host was touched (no package, no sendmail change)
        assert not [n for n in names if n.startswith("sendmail :")], names

    for gw in GATEWAYS:
        user = f"greylist_{gw}"
        # The milter restarted and reaches the store with the new password...
        assert main_pid(gw, "passerelle-greylist") != milters[gw]
        _wait_store_answers(gw)
        store = tomllib.loads(podman_exec(gw, "cat", CONFIG))["greylist"]["store"]
        assert f":{_password(rotated, user)}@" in store
        # ...the old one is refused by MariaDB (the same configuration with the old password).
        old = podman_exec(gw, "cat", CONFIG).replace(
            _password(rotated, user), _password(INVENTORY_SECRET, user)
        )
        podman_exec(gw, "sh", "-c", "umask 077; cat > /tmp/greylist-old.toml", stdin=old)
        refused = _store_answers(gw, "/tmp/greylist-old.toml")
        podman_exec(gw, "rm", "-f", "/tmp/greylist-old.toml")
        assert refused.returncode != 0 and "denied" in (refused.stdout + refused.stderr).lower(), (
            refused
        )
        # The connection guard's sink holds the new password too.
        sink = tomllib.loads(podman_exec(gw, "cat", CONNWATCH))
        assert _password(rotated, user) in json.dumps(sink)
        # SpamAssassin reads the shared Bayes store with its new password (spamd's own user).
        magic = podman_exec(
            gw, "runuser", "-u", "debian-spamd", "--", "sa-learn", "--dump", "magic"
        )
        assert re.search(r"\d+\s+0\s+non-token data: ntokens", magic), magic

    # The web console and the gateways' side of it reach their database with the new passwords.
    if present("mon1"):
        from test_85_console import ADMIN, BASE, browse

        assert (
            "mariadb : Create the console's user (its tables) and one per gateway (rows only)"
            in changed["db1"]
        )
        assert CONSOLE_TASK in changed.get("mon1", set()), changed.get("mon1")
        assert "console : Restart the console" in changed.get("mon1", set()), changed.get("mon1")
        for gw in GATEWAYS:
            user = f"console_gw_{gw}"
            url = tomllib.loads(podman_exec(gw, "cat", CONSOLE_GATEWAY))["gateway_sync"]["database"]
            assert f":{_password(rotated, user)}@" in url
            # One pass: it prints its counts once it has read and written the database (its
            # exit status also counts quarantine entries it skipped, not this test's concern).
            out = podman_exec(gw, "passerelle", "console", "gateway-sync", check=False)
            assert out.startswith("indexed "), out
        deadline = time.monotonic() + 60
        while True:  # the console restarted: a login (audit log) and a search (the index)
            steps = browse(["LOGIN", *ADMIN], ["GET", f"{BASE}/quarantine"])
            if steps[-1]["status"] == 200 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert [s["status"] for s in steps] == [303, 200], steps

    # Greylisting decides with the store again (a new triplet is recorded, not skipped).
    sender = _greylisted_through(GATEWAYS[0])
    assert _count(f"SELECT COUNT(*) FROM greylist.greylist WHERE sender LIKE '%{sender}%'") == 1
    # Nothing lost.
    assert _count("SELECT COUNT(*) FROM greylist.greylist") >= triplets + 1
    assert _count("SELECT COUNT(*) FROM spamassassin.bayes_token") >= tokens
    log = podman_exec(
        GATEWAYS[0],
        "journalctl",
        "-u",
        "passerelle-greylist",
        "--since",
        "-2min",
        "--no-pager",
        "-q",
    )
    assert "denied" not in log.lower(), log
