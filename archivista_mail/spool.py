"""Large mail on disk: a skeleton for the MIME parser, and part bodies decoded file to file.

Python's ``email`` package holds a body as a list of lines and then as one string: a 100 MB
attachment costs it over a gigabyte. For mails above the spool threshold the importer keeps
the original in a file; ``build_skeleton`` copies it line by line, replacing every part body
larger than ``SPILL_AT`` with a marker line, so the same parser (``mime.parse_mail``) reads the
small skeleton, and ``decode_region`` turns each spilled body into a file in chunks.
"""

from __future__ import annotations

import binascii
import email
import hashlib
import io
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from email import policy
from pathlib import Path
from typing import BinaryIO

from .model import Content, SpooledData

SPILL_AT = 1 << 20  # part bodies above this stay in the file
CHUNK = 1 << 20
MARKER = "X-Archivista-Spooled-Part-{nonce}:"  # the nonce keeps a mail's own text from posing as a marker
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


@dataclass
class Skeleton:
    """The message with large bodies replaced by markers, and where those bodies are in the file."""

    data: bytes
    marker: str = ""  # the marker line's prefix in this skeleton
    regions: list[tuple[int, int]] = field(default_factory=list)  # spilled part bodies
    messages: list[tuple[int, int]] = field(default_factory=list)  # message/rfc822 bodies, document order


class SpoolWriter:
    """A new file in the spool directory, hashed as it is written. Use as a context manager: the file is
    kept only if ``close()`` returned its SpooledData inside the block; an error (or leaving the block
    without closing) removes it."""

    def __init__(self, spool_dir: Path) -> None:
        fd, name = tempfile.mkstemp(dir=spool_dir, prefix="spool-")
        self.file = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.hash = hashlib.sha256()
        self.size = 0
        self.kept = False

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.kept:
            self.discard()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def close(self) -> SpooledData:
        """Finish the file and keep it."""
        self.file.close()
        self.kept = True
        return SpooledData(self.path, self.size, self.hash.hexdigest())

    def discard(self) -> None:
        """Remove the file."""
        self.file.close()
        self.path.unlink(missing_ok=True)


def read_head(content: Content, n: int) -> bytes:
    """The first ``n`` bytes of in-memory or spooled content."""
    if isinstance(content, SpooledData):
        with open(content.path, "rb") as f:
            return f.read(n)
    return content[:n]


def _header_info(block: bytes) -> tuple[str, str | None, str]:
    try:
        msg = email.message_from_bytes(block + b"\r\n", policy=policy.compat32)
        return (msg.get_content_type(), msg.get_boundary(),
                str(msg.get("Content-Transfer-Encoding", "")).strip().lower())
    except Exception:  # an unreadable header block: treat what follows as one opaque body
        return "application/octet-stream", None, ""


_FOLD = re.compile(r"\r?\n([ \t]*)")


def boundary_forms(boundary: str) -> tuple[str, ...]:
    """The delimiters a boundary parameter can stand for: one, or two when it was folded inside its quotes.

    RFC 5322 2.2.3 unfolding drops only the line break, which is right for IBM Notes' boundaries
    with a space (mail-mime-parser #55); Outlook 2000 folds inside the quotes as well and writes
    its delimiter lines without the folding whitespace. The body decides which one was meant.
    """
    if "\n" not in boundary:
        return (boundary,)
    return _FOLD.sub(r"\1", boundary), _FOLD.sub("", boundary)


def _nested(ctype: str) -> bool:
    return ctype.startswith("message/") and ctype != "message/delivery-status"


def build_skeleton(path: Path) -> Skeleton:
    """Scan a message file once and return its skeleton (see the module docstring)."""
    with open(path, "rb") as f:
        return scan(f)


def message_regions(raw: bytes) -> list[tuple[int, int]]:
    """Where the bodies of message/* parts (forwarded mails) are in a message held in memory."""
    return scan(io.BytesIO(raw), spill_at=None).messages


def scan(f: BinaryIO, spill_at: int | None = -1) -> Skeleton:
    """Read a message line by line: its skeleton, spilled regions and message/* regions.

    ``spill_at`` -1 means SPILL_AT; None never spills (only the regions are wanted).
    """
    limit = SPILL_AT if spill_at == -1 else spill_at
    out = bytearray()
    skeleton = Skeleton(b"", marker=MARKER.format(nonce=secrets.token_hex(6)))
    boundaries: list[tuple[bytes, ...]] = []  # each open multipart's delimiter(s), see boundary_forms
    open_messages: list[tuple[int, int]] = []  # (body start, boundary depth when opened)
    mode = "headers"
    header: list[bytes] = []
    body: list[bytes] = []
    body_size = 0
    body_start = 0
    spilled = False
    body_is_message = False
    offset = 0

    def end_of(pos: int, prev_line: bytes) -> int:
        # RFC 2046 5.1.1: the line break before a boundary belongs to the boundary.
        return pos - (2 if prev_line.endswith(b"\r\n") else 1 if prev_line.endswith(b"\n") else 0)

    def finish_body(end: int) -> None:
        nonlocal body, body_size, spilled
        if body_is_message:
            skeleton.messages.append((body_start, end))
        if spilled:
            skeleton.regions.append((body_start, end))
            out.extend(f"{skeleton.marker}{len(skeleton.regions) - 1}\r\n".encode())
        else:
            out.extend(b"".join(body))
        body, body_size, spilled = [], 0, False

    prev = b""
    for line in f:
        if mode == "headers":
            out.extend(line)
            if line in (b"\r\n", b"\n"):
                ctype, boundary, cte = _header_info(b"".join(header))
                header = []
                if ctype.startswith("multipart/") and boundary:
                    boundaries.append(tuple(form.encode("ascii", "replace") for form in boundary_forms(boundary)))
                    mode = "text"  # preamble
                elif ctype == "message/delivery-status":
                    mode = "text"  # a bounce report: header blocks the parser reads itself; small
                elif _nested(ctype) and cte not in ("base64", "quoted-printable"):
                    open_messages.append((offset + len(line), len(boundaries)))
                    mode = "headers"  # the forwarded message's own headers follow
                else:
                    mode, body_start = "body", offset + len(line)
                    # Python's parser nests every message/* but delivery-status, encoded or not
                    body_is_message = _nested(ctype)
            else:
                header.append(line)
        else:
            hit = None
            if line.startswith(b"--") and boundaries:
                stripped = line.rstrip(b"\r\n \t")
                for i in range(len(boundaries) - 1, -1, -1):
                    if any(stripped == b"--" + form for form in boundaries[i]):
                        hit = (i, False)
                        break
                    if any(stripped == b"--" + form + b"--" for form in boundaries[i]):
                        hit = (i, True)
                        break
            if hit is None:
                if mode == "body":
                    if not spilled:
                        body.append(line)
                        body_size += len(line)
                        if limit is not None and body_size > limit:
                            spilled, body, body_size = True, [], 0
                else:
                    out.extend(line)
            else:
                level, closing = hit
                if mode == "body":
                    finish_body(end_of(offset, prev))
                while open_messages and open_messages[-1][1] > level:
                    skeleton.messages.append((open_messages.pop()[0], end_of(offset, prev)))
                del boundaries[level + 1:]
                out.extend(line)
                if closing:
                    boundaries.pop()
                    mode = "text"  # epilogue
                else:
                    mode, header = "headers", []
        prev = line
        offset += len(line)
    if mode == "body":
        # A truncated multipart (no close delimiter): Python's parser still gives the last line
        # break to the missing delimiter, so the spilled region must end where its payload does.
        finish_body(end_of(offset, prev) if boundaries else offset)
    while open_messages:
        skeleton.messages.append((open_messages.pop()[0], offset))
    skeleton.messages.sort()
    skeleton.data = bytes(out)
    return skeleton


def decode_region(path: Path, start: int, end: int, cte: str, spool_dir: Path) -> SpooledData:
    """Decode a part body (base64, quoted-printable or as is) from the file into a new spool file."""
    with SpoolWriter(spool_dir) as writer:
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start
            carry = b""
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                if cte == "base64":
                    data = carry + _NOT_BASE64.sub(b"", chunk)
                    cut = len(data) - len(data) % 4
                    writer.write(binascii.a2b_base64(data[:cut]))
                    carry = data[cut:]
                elif cte == "quoted-printable":
                    data = carry + chunk
                    cut = data.rfind(b"\n") + 1 if left > 0 else len(data)
                    writer.write(binascii.a2b_qp(data[:cut]))
                    carry = data[cut:]
                else:
                    writer.write(chunk)
            if cte == "base64" and len(carry) > 1:  # a broken last group: decode what is complete
                writer.write(binascii.a2b_base64(carry + b"=" * (-len(carry) % 4)))
        return writer.close()


def copy_region(path: Path, start: int, end: int, spool_dir: Path) -> Content:
    """The bytes of a region: in memory when small, else copied to a spool file."""
    if end - start <= SPILL_AT:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start)
    return decode_region(path, start, end, "", spool_dir)
