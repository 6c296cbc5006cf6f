"""``passerelle dkim txt``: the record on standard output, a bad key or name as one line on
standard error with exit status 1 (no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from passerelle.cli import main

from .dkim_fixtures import EC_P256_PKCS8, RSA_1024_PKCS1, RSA_1024_SPKI_BASE64


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_the_zone_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "example.org.sel.key"
    key.write_text(RSA_1024_PKCS1)
    code, out, err = _run(capsys, "dkim", "txt", str(key), "-d", "example.org", "-s", "sel")
    assert (code, err) == (0, "")
    value = f"v=DKIM1; k=rsa; p={RSA_1024_SPKI_BASE64}"
    assert len(value) <= 255  # one string (a 2048-bit key's are split: test_keys.py)
    assert out == f'sel._domainkey.example.org. IN TXT "{value}"\n'


def test_unbound_format_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(RSA_1024_PKCS1))
    code, out, _ = _run(
        capsys, "dkim", "txt", "-", "-d", "example.org", "-s", "sel", "--format", "unbound"
    )
    assert code == 0
    assert out.startswith('sel._domainkey.example.org. TXT "v=DKIM1; k=rsa; p=MIGf')


@pytest.mark.parametrize(
    ("content", "domain", "selector", "why"),
    [
        (EC_P256_PKCS8, "example.org", "sel", "not an RSA or Ed25519 key"),
        ("not a key", "example.org", "sel", "not a PEM private key"),
        (RSA_1024_PKCS1, "not a domain", "sel", "invalid domain name"),
        (RSA_1024_PKCS1, "example.org", "a.b", "invalid selector"),
    ],
)
def test_bad_input_is_one_error_line_and_status_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    domain: str,
    selector: str,
    why: str,
) -> None:
    key = tmp_path / "k.pem"
    key.write_text(content)
    code, out, err = _run(capsys, "dkim", "txt", str(key), "-d", domain, "-s", selector)
    assert (code, out) == (1, "")
    assert err.startswith(f"dkim txt: {key}: ") and why in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_a_missing_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "dkim", "txt", str(tmp_path / "nope"), "-d", "a.org", "-s", "s")
    assert (code, out) == (1, "")
    assert "cannot read" in err and "No such file" in err
