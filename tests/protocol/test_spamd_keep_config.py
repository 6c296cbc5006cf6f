"""The role's spamd plugin that keeps the configuration between messages
(roles/spamassassin/files/PasserelleSpamdKeepConfig.pm), with the real SpamAssassin."""

# ruff: noqa: F811  (pytest fixtures imported from spam_fixtures)
from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from spam_fixtures import GTUBE, spamd, start_spamd  # noqa: F401  (fixtures)

from passerelle.spam.spamc import build_request

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "roles/spamassassin/files/PasserelleSpamdKeepConfig.pm"
LOAD = f"--cf=loadplugin PasserelleSpamdKeepConfig {PLUGIN}"

# The plugin on one SpamAssassin object: the saving copy, a change, the restore; prints the
# setting after the restore. argv: plugin path ("" = not loaded), extra configuration.
PERL = r"""
use strict; use warnings;
use Mail::SpamAssassin;
my ($plugin, $extra) = @ARGV;
my $text = "required_score 5\n$extra\n";
$text = "loadplugin PasserelleSpamdKeepConfig $plugin\n$text" if length $plugin;
my $sa = Mail::SpamAssassin->new({config_text => $text, local_tests_only => 1,
                                  dont_copy_prefs => 1});
$sa->init(0);
my %backup;
$sa->copy_config(undef, \%backup) or die "no backup";
$sa->{conf}->{required_score} = 42;
$sa->copy_config(\%backup, undef) or die "no restore";
print "required_score=$sa->{conf}->{required_score}\n";
"""


def _perl(plugin: str, extra: str = "") -> str:
    if not shutil.which("perl"):
        pytest.fail("perl not found: install the Debian package spamassassin")
    r = subprocess.run(
        ["perl", "-e", PERL, plugin, extra], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_without_the_plugin_spamassassin_restores_the_saved_configuration():
    assert _perl("") == "required_score=5"


def test_the_plugin_makes_the_restore_a_no_op():
    assert _perl(str(PLUGIN)) == "required_score=42"


def test_with_user_rules_allowed_the_plugin_restores_as_spamd_does():
    assert _perl(str(PLUGIN), "allow_user_rules 1") == "required_score=5"


def _symbols(port: int, message: bytes) -> bytes:
    """spamd's answer to the spam milter's request (``SYMBOLS``, its user), status line off."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(build_request(message, user="passerelle"))
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.split(b"\r\n", 1)[1]


def _message(i: int, body: str) -> bytes:
    return (
        f"From: a{i}@example.org\r\nTo: b@example.net\r\nSubject: keep {i}\r\n"
        f"Message-ID: <keep{i}@example.org>\r\nDate: Sat, 05 Dec 2026 03:00:00 +0000\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def test_spamd_with_the_plugin_answers_as_spamd_without_it_and_restores_nothing(spamd, tmp_path):
    own = start_spamd(tmp_path / "spamd", children=1, extra=[LOAD, "-D", "config,passerelle"])
    try:
        messages = [
            _message(0, "Lunch on Tuesday? The seminar room is free after two."),
            _message(1, f"Cheap pills\r\n{GTUBE}"),
            _message(2, "The thesis review moves to Friday, same room."),
            _message(3, "Lunch on Tuesday? The seminar room is free after two."),
        ]
        for m in messages:
            assert _symbols(own.port, m) == _symbols(spamd.port, m)
    finally:
        own.stop()
    log = own.log.read_text(errors="replace")
    assert "passerelle: spamd keeps its configuration between messages" in log
    assert log.count("passerelle: configuration kept, no restore") >= len(messages)
    # spamd's own restore ("copying current conf from backup") never ran.
    assert "copying current conf from backup" not in log
    assert "copying current conf to backup" in log  # the saving copy at start still is
