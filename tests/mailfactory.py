"""Deterministic generated mail for tests, benchmarks and the demo samples.

Same arguments, same bytes: fixed Message-IDs, boundaries, dates and zip timestamps.
"""

from __future__ import annotations

import base64
import io
import random
import struct
import zipfile
import zlib

WORDS = ("archive invoice contract delivery offer meeting project report budget order customer supplier "
         "schedule review payment account document quarter analysis request approval summary").split()


def make_pdf(text: str, pad_to: int = 0) -> bytes:
    """A valid one-page PDF showing ``text`` (Helvetica), optionally padded with a comment to ``pad_to`` bytes."""
    lines = [text[i:i + 80] for i in range(0, len(text), 80)] or [""]
    ops = ["BT /F1 11 Tf 50 780 Td 14 TL"]
    for line in lines[:50]:
        safe = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(f"({safe}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    if pad_to > len(out) + 200:
        filler = (b"% " + b"x" * 76 + b"\n") * ((pad_to - len(out) - 200) // 80)
        out += filler
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def make_docx(text: str) -> bytes:
    """A minimal Word document holding ``text`` (fixed zip timestamps)."""
    buf = io.BytesIO()
    stamp = (2024, 1, 1, 0, 0, 0)
    parts = {
        "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/'
        'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/'
        'document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        '</Types>',
        "_rels/.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
        'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
        '2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>',
        "word/document.xml": '<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.'
        'openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>' + text +
        '</w:t></w:r></w:p></w:body></w:document>',
    }
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in parts.items():
            info = zipfile.ZipInfo(name, stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, content)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    """Base64 in 76-character CRLF lines (RFC 2045), without a final line break."""
    return base64.encodebytes(data).decode("ascii").rstrip("\n").replace("\n", "\r\n")


def make_mail(n: int, *, body_words: int = 200, attachment: str | None = None, attachment_size: int = 0,
              secret_word: str | None = None, domain: str = "example.com", secret_in_body: bool = True) -> bytes:
    """Mail number ``n``: a text body, optionally a 'pdf' or 'docx' attachment carrying ``secret_word``.

    The secret word is in the body too, unless ``secret_in_body`` is False (then only the attachment has it).
    """
    rng = random.Random(n)
    body = " ".join(rng.choices(WORDS, k=body_words))
    words = [f"mail{n}"] + ([secret_word] if secret_word and secret_in_body else [])
    subject = f"Test mail {n} {rng.choice(WORDS)}"
    head = (f"From: Sender {n % 17} <sender{n % 17}@{domain}>\r\n"
            f"To: Archive <archive@{domain}>\r\n"
            f"Subject: {subject}\r\n"
            f"Date: Mon, 01 Jan 2024 {n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d} +0000\r\n"
            f"Message-ID: <gen-{n}@{domain}>\r\n"
            "MIME-Version: 1.0\r\n")
    text = f"{body}\r\nmarker {' '.join(words)}\r\n"
    if not attachment:
        return (head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                + text).encode()
    doc_text = f"Attachment of mail {n} {secret_word or ''} " + " ".join(rng.choices(WORDS, k=60))
    if attachment == "pdf":
        data, ctype, name = make_pdf(doc_text, attachment_size), "application/pdf", f"report-{n}.pdf"
    elif attachment == "docx":
        data = make_docx(doc_text)
        ctype = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        name = f"letter-{n}.docx"
    else:
        raise ValueError(attachment)
    boundary = f"=_boundary_{n}"
    return (head + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"{text}\r\n--{boundary}\r\nContent-Type: {ctype}; name=\"{name}\"\r\n"
            f"Content-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            f"{_b64(data)}\r\n--{boundary}--\r\n").encode()


def make_png(n: int, side: int = 5) -> bytes:
    """A valid ``side`` x ``side`` RGB PNG with pixels drawn from ``n`` (so no two images are equal)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rng = random.Random(n)
    rows = b"".join(b"\0" + rng.randbytes(side * 3) for _ in range(side))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def make_inline_images_mail(parts: int) -> bytes:
    """An HTML-only mail (multipart/related) showing ``parts`` inline PNGs, each by its own cid: reference."""
    boundary = "=_related_bench"
    html = "".join(f'<img src="cid:img{i:05d}@bench.example">\r\n' for i in range(parts))
    out = [("From: Sender <sender@example.com>\r\nTo: Archive <archive@example.com>\r\n"
            f"Subject: {parts} inline images\r\nDate: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
            "Message-ID: <inline-images-bench@example.com>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/related; boundary="{boundary}"; type="text/html"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"<html><body>\r\n{html}</body></html>\r\n")]
    for i in range(parts):
        out.append(f"--{boundary}\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
                   f"Content-ID: <img{i:05d}@bench.example>\r\nContent-Disposition: inline\r\n\r\n"
                   f"{_b64(make_png(i))}\r\n")
    out.append(f"--{boundary}--\r\n")
    return "".join(out).encode()
