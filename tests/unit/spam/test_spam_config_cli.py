import pytest

from passerelle.cli import main
from passerelle.config import ConfigError, tomllib
from passerelle.spam.config import SpamConfig, parse_config

FULL = """
[spam]
socket = "unix:/run/passerelle/spam.sock"
spamd = ["127.0.0.1:783", "unix:/run/spamd.sock", "[::1]:783"]
connect_timeout = "2s"
timeout = "30s"
max_size = 512000
on_error = "accept"
hostname = "gw1"
user = "passerelle"
milter_timeout = "10m"
log_level = "info"
[spam.tiers]
high = 5.0
medium = 4.0
low = 3.0
subject_tag = "[MESSAGE MARQUE SPAM]"
status_header = "X-status"
score_header = "X-Spam-Score"
spam_status_header = "X-Spam-Status"
checker_header = "X-Spam-Checker"
strip_headers = ["X-status", "X-Spam-*"]
[spam.ocr]
enabled = true
tesseract = "/usr/bin/tesseract"
languages = "fra+eng"
max_images = 5
max_image_size = 2000000
timeout = "10s"
total_timeout = "20s"
"""


def test_full_config(tmp_path):
    cfg = parse_config(tomllib.loads(FULL))
    assert cfg.spamd == ("127.0.0.1:783", "unix:/run/spamd.sock", "[::1]:783")
    assert cfg.connect_timeout == 2.0
    assert cfg.timeout == 30.0
    assert cfg.milter_timeout == 600
    assert cfg.hostname == "gw1"
    assert cfg.ocr.enabled and cfg.ocr.languages == "fra+eng"


def test_defaults():
    cfg = parse_config({})
    d = SpamConfig()
    assert (cfg.spamd, cfg.max_size, cfg.on_error) == (d.spamd, 512000, "accept")
    assert (cfg.tiers.high, cfg.tiers.medium, cfg.tiers.low) == (5.0, 4.0, 3.0)
    assert cfg.ocr.enabled is False
    assert cfg.hostname


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[spam]\nspamd = ["nohost"]', "spam.spamd"),
        ("[spam]\nspamd = []", "spam.spamd"),
        ('[spam]\nspamd = ["unix:relative"]', "spam.spamd"),
        ('[spam]\ntimeout = "soon"', "spam.timeout"),
        ('[spam]\nconnect_timeout = "0s"', "spam.connect_timeout"),
        ('[spam]\non_error = "drop"', "spam.on_error"),
        ("[spam]\nmax_size = 0", "spam.max_size"),
        ('[spam]\nsocket = "/tmp/x"', "spam.socket"),
        ("[spam]\nmax_sise = 1", "spam.max_sise"),
        ("[spam.tiers]\nhigh = 2.0", "spam.tiers"),
        ('[spam.tiers]\nhigh = "5"', "spam.tiers.high"),
        ('[spam.tiers]\nstatus_header = "X status"', "spam.tiers.status_header"),
        ('[spam.tiers]\nsubject_tag = " "', "spam.tiers.subject_tag"),
        ("[spam.ocr]\nenabled = 1", "spam.ocr.enabled"),
        ("[spam.ocr]\nmax_images = -1", "spam.ocr.max_images"),
        ("[spam.ocr]\nbogus = 1", "spam.ocr.bogus"),
        ("[other]\nx = 1", "other"),
    ],
)
def test_errors_name_the_key(text, key):
    with pytest.raises(ConfigError) as exc:
        parse_config(tomllib.loads(text), "f.toml")
    assert exc.value.key == key
    assert str(exc.value).startswith(f"f.toml: {key}:")


def test_check_config_ok(tmp_path, capsys):
    f = tmp_path / "spam.toml"
    f.write_text(FULL)
    assert main(["spam", "check-config", str(f)]) == 0
    assert capsys.readouterr().out == f"{f}: OK\n"


def test_check_config_error(tmp_path, capsys):
    f = tmp_path / "spam.toml"
    f.write_text('[spam]\non_error = "drop"\n')
    assert main(["spam", "check-config", str(f)]) == 1
    err = capsys.readouterr().err
    assert "spam.on_error" in err
    assert str(f) in err


def test_check_config_missing_file(tmp_path, capsys):
    assert main(["spam", "check-config", str(tmp_path / "nope.toml")]) == 1
    assert "file not found" in capsys.readouterr().err


def test_milter_bad_config_exits_1(tmp_path, capsys):
    f = tmp_path / "spam.toml"
    f.write_text("[spam]\nmax_size = -3\n")
    assert main(["spam", "milter", "--config", str(f)]) == 1
    assert "spam.max_size" in capsys.readouterr().err
