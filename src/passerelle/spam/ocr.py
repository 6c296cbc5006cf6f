"""Image text for SpamAssassin (replacement for the FuzzyOcr plugin).

Image parts (PNG, JPEG, GIF) are read with tesseract and the text is appended to the copy of
the message given to spamd, as one extra ``text/plain`` part, so that body rules and Bayes
see it. The delivered message is never changed. Bounded by image count, image size, the time
per image and the OCR time per message.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

log = logging.getLogger("passerelle.spam")

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif")
OcrRunner = Callable[[bytes, float], str]


@dataclass(frozen=True)
class OcrLimits:
    max_images: int = 5
    max_image_size: int = 2_000_000
    timeout: float = 10.0
    total_timeout: float = 20.0


def tesseract_runner(tesseract: str = "/usr/bin/tesseract", languages: str = "eng") -> OcrRunner:
    """An OcrRunner calling the tesseract binary (Debian package tesseract-ocr)."""

    def run(image: bytes, timeout: float) -> str:
        fd, path = tempfile.mkstemp(prefix="passerelle-ocr-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(image)
            proc = subprocess.run(
                [tesseract, path, "stdout", "-l", languages],
                capture_output=True,
                timeout=timeout,
                check=False,
                env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            )
            if proc.returncode != 0:
                log.info("tesseract failed (%d): %s", proc.returncode, proc.stderr[:200])
                return ""
            return proc.stdout.decode("utf-8", "replace")
        finally:
            os.unlink(path)

    return run


def image_parts(msg: Message) -> list[bytes]:
    """Decoded payloads of the image parts, in message order."""
    out: list[bytes] = []
    for part in msg.walk():
        if part.get_content_type() in IMAGE_TYPES:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload:
                out.append(payload)
    return out


def recognise(
    images: list[bytes],
    ocr: OcrRunner,
    limits: OcrLimits,
    clock: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Text of at most ``max_images`` images within the per-message time budget."""
    texts: list[str] = []
    deadline = clock() + limits.total_timeout
    for image in images[: limits.max_images]:
        if len(image) > limits.max_image_size:
            log.info("ocr: image of %d bytes skipped (max_image_size)", len(image))
            continue
        left = min(limits.timeout, deadline - clock())
        if left <= 0:
            log.info("ocr: time budget for this message used up")
            break
        try:
            text = ocr(image, left)
        except subprocess.TimeoutExpired:
            log.info("ocr: image not read within %.1fs", left)
            continue
        except OSError as exc:
            log.warning("ocr: cannot run: %s", exc)
            break
        text = " ".join(text.split())
        if text:
            texts.append(text)
    return texts


def _text_part(texts: list[str]) -> bytes:
    body = "\r\n\r\n".join(texts).encode("utf-8")
    return (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"Content-Description: text read from images\r\n\r\n" + body + b"\r\n"
    )


def with_text(message: bytes, msg: Message, texts: list[str]) -> bytes:
    """``message`` with one more text/plain part holding ``texts``.

    A multipart message keeps its bytes: the part is inserted before the closing delimiter.
    A single-part message is wrapped in a multipart/mixed (this copy is only for spamd).
    """
    boundary = msg.get_boundary() if msg.is_multipart() else None
    if boundary:
        closing = b"--" + boundary.encode("ascii", "replace") + b"--"
        pos = message.rfind(closing)
        if pos >= 0:
            nl = b"\r\n" if pos >= 2 and message[pos - 2 : pos] == b"\r\n" else b"\n"
            extra = b"--" + boundary.encode("ascii", "replace") + b"\r\n" + _text_part(texts)
            return message[:pos] + extra + nl + message[pos:]
    outer = MIMEMultipart("mixed")
    for name, value in msg.items():
        if not name.lower().startswith("content-") and name.lower() != "mime-version":
            outer[name] = value
    inner = Message()
    for name, value in msg.items():
        if name.lower().startswith("content-"):
            inner[name] = value
    inner.set_payload(msg.get_payload())
    outer.attach(inner)
    outer.attach(MIMEText("\n\n".join(texts), "plain", "utf-8"))
    return outer.as_bytes()


def augment(
    message: bytes,
    ocr: OcrRunner,
    limits: OcrLimits,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[bytes, int]:
    """The message to give spamd and how many images gave text (0: message unchanged)."""
    if b"image/" not in message and b"IMAGE/" not in message and b"Image/" not in message:
        return message, 0
    msg = message_from_bytes(message)
    images = image_parts(msg)
    if not images:
        return message, 0
    texts = recognise(images, ocr, limits, clock)
    if not texts:
        return message, 0
    return with_text(message, msg, texts), len(texts)
