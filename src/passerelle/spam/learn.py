"""Feeding sa-learn from admins' folders of ham or spam (mbox files or Maildir folders).

``DIR`` may be a Maildir (``cur``/``new``), a directory of mbox files and Maildirs (walked
recursively), or one mbox file. Messages are written, in batches, one per file into a
temporary directory that ``sa-learn --ham|--spam DIR`` then reads. Run it as the user that
owns the Bayes store (or with a SQL Bayes store shared by every gateway, from any host).
"""

from __future__ import annotations

import mailbox
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

Runner = Callable[[list[str]], int]


def _run(argv: list[str]) -> int:
    return subprocess.run(argv, check=False).returncode


def _is_maildir(p: Path) -> bool:
    return (p / "cur").is_dir() and (p / "new").is_dir()


def _looks_like_mbox(p: Path) -> bool:
    try:
        with p.open("rb") as fh:
            return fh.read(5) == b"From "
    except OSError:
        return False


def iter_messages(source: Path) -> Iterator[bytes]:
    """Every message under ``source``, as bytes."""
    if source.is_file():
        if _looks_like_mbox(source):
            for msg in mailbox.mbox(source, create=False):
                yield msg.as_bytes()
        else:  # one message per file (a Maildir's own files, an MH folder)
            yield source.read_bytes()
        return
    if _is_maildir(source):
        for key in sorted(mailbox.Maildir(source, factory=None, create=False).keys()):
            path = _maildir_path(source, key)
            if path is not None:
                yield path.read_bytes()
        return
    for child in sorted(source.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() or _looks_like_mbox(child):
            yield from iter_messages(child)


def _maildir_path(root: Path, key: str) -> Path | None:
    for sub in ("cur", "new"):
        for p in (root / sub).glob(key + "*"):
            return p
    return None


def batches(messages: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for m in messages:
        batch.append(m)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def learn_messages(
    kind: str,
    messages: Iterable[bytes],
    sa_learn: str = "sa-learn",
    batch_size: int = 200,
    extra_args: Sequence[str] = (),
    run: Runner = _run,
    as_user: str | None = None,
) -> tuple[int, int]:
    """Learn ``messages`` as ``kind`` ("ham"/"spam"): (messages, failures).

    ``as_user``: run sa-learn as this user (``runuser -u``; needs root), the owner of a local
    Bayes store; the batch folder and files are handed to it.
    """
    if kind not in ("ham", "spam"):
        raise ValueError(kind)
    prefix = ["runuser", "-u", as_user, "--"] if as_user else []
    total = failed = 0
    for batch in batches(iter(messages), batch_size):
        with tempfile.TemporaryDirectory(prefix="passerelle-learn-") as tmp:
            if as_user:  # the batch belongs to sa-learn's user, nobody else reads it
                shutil.chown(tmp, as_user)
            for i, data in enumerate(batch):
                f = Path(tmp) / f"{i:06d}.eml"
                f.write_bytes(data)
                if as_user:
                    shutil.chown(f, as_user)
            rc = run([*prefix, sa_learn, f"--{kind}", *extra_args, tmp])
        total += len(batch)
        if rc != 0:
            failed += len(batch)
    return total, failed


def learn(
    kind: str,
    source: Path,
    sa_learn: str = "sa-learn",
    batch_size: int = 200,
    extra_args: Sequence[str] = (),
    run: Runner = _run,
) -> tuple[int, int]:
    """Learn every message of ``source`` as ``kind`` ("ham"/"spam"): (messages, failures)."""
    return learn_messages(kind, iter_messages(source), sa_learn, batch_size, extra_args, run)
