"""Large mail: parsed from a file with bounded memory, with the same results as in memory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import PASSWORD
from mailfactory import _b64, make_mail

from archivista_mail import spool
from archivista_mail.mime import parse_mail, parse_spooled
from archivista_mail.model import SpooledData
from archivista_mail.spool import read_head

CORPUS = Path(__file__).parent / "corpus" / "mime"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())["messages"]


def content_hash(data) -> str:
    if isinstance(data, SpooledData):
        assert hashlib.sha256(data.path.read_bytes()).hexdigest() == data.sha256
        return data.sha256
    return hashlib.sha256(data).hexdigest()


def flatten(parsed):
    out = []
    for part in parsed.parts:
        out.append((part.filename, part.content_type, content_hash(part.data)))  # forwarded mails too: byte for byte
        if part.message is not None:
            out.append(("message", part.message.subject, part.message.from_))
            out.extend(flatten(part.message))
    return out


@pytest.mark.parametrize("message", EXPECTED, ids=lambda m: m["file"].split("/", 1)[1])
def test_spooled_parse_of_every_corpus_mail_equals_the_in_memory_parse(message, tmp_path, monkeypatch):
    monkeypatch.setattr(spool, "SPILL_AT", 64)  # spill nearly every body to exercise the file path
    raw = (CORPUS / message["file"]).read_bytes()
    path = tmp_path / "mail.eml"
    path.write_bytes(raw)
    in_memory = parse_mail(raw)
    spooled = parse_spooled(SpooledData(path, len(raw), hashlib.sha256(raw).hexdigest()), tmp_path)
    assert (spooled.subject, spooled.from_, spooled.to, spooled.date) == (
        in_memory.subject, in_memory.from_, in_memory.to, in_memory.date)
    assert flatten(spooled) == flatten(in_memory)
    assert " ".join(spooled.text.split())[:2000] == " ".join(in_memory.text.split())[:2000]


def test_a_mail_above_the_spool_size_is_fetched_in_pieces_and_archived_exactly(run, mailbox, monkeypatch, tmp_path,
                                                                                 data_dir):
    import archivista_mail.sources.base as sources_base

    monkeypatch.setattr(sources_base, "SPOOL_FROM", 100_000)
    monkeypatch.setattr(spool, "SPILL_AT", 50_000)
    payload = bytes(range(256)) * 4000  # ~1 MB attachment
    forwarded = make_mail(7, secret_word="platypus")
    big = ("From: Big <big@example.com>\r\nTo: a@example.com\r\nSubject: Large one\r\nMessage-ID: <big@x>\r\n"
           'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
           "Content-Type: text/plain\r\n\r\nBody with echidna inside.\r\n--b1\r\n"
           'Content-Type: application/octet-stream; name="blob.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
           + _b64(payload) + '\r\n--b1\r\nContent-Type: message/rfc822; name="fwd.eml"\r\n\r\n'
           + forwarded.decode() + "\r\n--b1--\r\n").encode()
    mailbox.append([big, make_mail(8)])
    result = run("account", "add", "imap", "acct", "--host", "127.0.0.1", "--port",
                 str(mailbox.server.ports["imaps"]), "--user", mailbox.user, "--password-stdin", "--ca-file",
                 str(mailbox.server.cert), "--after", "delete", input=PASSWORD + "\n")
    assert result.exit_code == 0
    result = run("import")
    assert result.exit_code == 0, result.output
    docs = json.loads(run("docs", "list", "--json").output)
    mail = [d for d in docs if d["subject"] == "Large one"][0]
    out = tmp_path / "big.eml"
    run("docs", "get", str(mail["number"]), "-o", str(out))
    assert out.read_bytes() == big
    attachment = [d for d in docs if d["filename"] == "blob.bin"][0]
    assert attachment["sha256"] == hashlib.sha256(payload).hexdigest() and attachment["size"] == len(payload)
    inner = [d for d in docs if d["kind"] == "mail" and d["parent"] == mail["number"]][0]
    run("docs", "get", str(inner["number"]), "-o", str(out))
    assert out.read_bytes() == forwarded  # the forwarded message, byte for byte from the file
    assert [h["number"] for h in json.loads(run("docs", "search", "echidna", "--json").output)] == [mail["number"]]
    assert mailbox.messages() == {}
    assert list((data_dir / "blobs" / "tmp").iterdir()) == []  # every spool file moved into the store


def test_no_spool_files_are_left_behind(run, data_dir, mailbox, monkeypatch):
    import archivista_mail.sources.base as sources_base

    monkeypatch.setattr(sources_base, "SPOOL_FROM", 1000)
    monkeypatch.setattr(spool, "SPILL_AT", 100)
    mailbox.append([make_mail(i, attachment="pdf") for i in range(3)] * 2)  # duplicates too
    run("account", "add", "imap", "acct", "--host", "127.0.0.1", "--port", str(mailbox.server.ports["imaps"]),
        "--user", mailbox.user, "--password-stdin", "--ca-file", str(mailbox.server.cert), input=PASSWORD + "\n")
    assert run("import").exit_code == 0
    assert list((data_dir / "blobs" / "tmp").iterdir()) == []
    assert "X-Archivista-Spooled-Part" not in "".join(
        json.dumps(d) for d in json.loads(run("docs", "list", "--json").output))


def test_a_large_pop3_mail_is_spooled_and_byte_identical(run, mailbox, monkeypatch, tmp_path):
    import archivista_mail.sources.base as sources_base

    monkeypatch.setattr(sources_base, "SPOOL_FROM", 10_000)
    big = make_mail(11, body_words=5000, attachment="pdf", attachment_size=30_000, secret_word="quoll")
    small = make_mail(12)
    mailbox.append([big, small])
    assert run("account", "add", "pop3", "pop", "--host", "127.0.0.1", "--port", str(mailbox.server.ports["pop3s"]),
               "--user", mailbox.user, "--password-stdin", "--ca-file", str(mailbox.server.cert),
               input=PASSWORD + "\n").exit_code == 0
    assert run("import").exit_code == 0
    mails = {d["message_id"]: d for d in json.loads(run("docs", "list", "--kind", "mail", "--json").output)}
    for raw, mid in ((big, "gen-11@example.com"), (small, "gen-12@example.com")):
        run("docs", "get", str(mails[mid]["number"]), "-o", str(tmp_path / "m.eml"))
        assert (tmp_path / "m.eml").read_bytes() == raw
    hits = json.loads(run("docs", "search", "quoll", "--json").output)
    assert {h["kind"] for h in hits} == {"mail", "attachment"}


def nested(depth: int) -> bytes:
    mail = b"From: inner@example.com\r\nSubject: level 0\r\n\r\ninnermost text\r\n"
    for level in range(1, depth + 1):
        mail = (f"From: l{level}@example.com\r\nSubject: level {level}\r\nMIME-Version: 1.0\r\n"
                f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'
                f"Content-Type: text/plain\r\n\r\nlevel {level} text\r\n--b{level}\r\n"
                f'Content-Type: message/rfc822; name="l{level}.eml"\r\n\r\n').encode() + mail + (
                f"\r\n--b{level}\r\nContent-Type: message/rfc822\r\n\r\nFrom: side{level}@example.com\r\n"
                f"Subject: side {level}\r\n\r\nside\r\n--b{level}--\r\n").encode()
    return mail


BOUNCE = (b"From: MAILER-DAEMON@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
          b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n--r\r\n'
          b"Content-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n--r\r\n"
          b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n"
          b"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--r\r\n"
          b"Content-Type: message/rfc822\r\n\r\nFrom: me@example.com\r\nSubject: original\r\n\r\nhello\r\n--r--\r\n")


@pytest.mark.parametrize("raw", [nested(10), BOUNCE], ids=["nested-10-deep", "bounce"])
def test_deep_nesting_and_bounces_parse_alike_in_memory_and_spooled(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(spool, "SPILL_AT", 16)
    path = tmp_path / "m.eml"
    path.write_bytes(raw)
    in_memory = parse_mail(raw)
    spooled = parse_spooled(SpooledData(path, len(raw), hashlib.sha256(raw).hexdigest()), tmp_path)
    assert flatten(spooled) == flatten(in_memory)

    def check_regions(parsed):  # each forwarded message's bytes come from its own place in the file
        for part in parsed.parts:
            if part.message is not None:
                data = read_head(part.data, 1 << 20)
                assert f"Subject: {part.message.subject}\r\n".encode() in data
                check_regions(part.message)
            elif part.content_type == "message/rfc822":  # below the depth limit: kept whole
                assert read_head(part.data, 1 << 20).startswith(b"From: ")

    check_regions(spooled)


def test_a_bounce_keeps_its_delivery_report_as_text():
    parsed = parse_mail(BOUNCE)
    report = [p for p in parsed.parts if p.content_type == "message/delivery-status"][0]
    assert b"Status: 5.1.1" in report.data
    assert [p.message.subject for p in parsed.parts if p.message] == ["original"]


def test_a_forwarded_mail_is_stored_byte_for_byte_and_a_marker_in_mail_text_is_just_text():
    inner = (b"From: a@example.com\r\nSubject: inner\r\nX-Odd:   spaced   header\r\n\r\n"
             b"X-Archivista-Spooled-Part:0\r\nbody\r\n")
    outer = (b'From: b@example.com\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary="z"\r\n\r\n'
             b"--z\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--z--\r\n")
    parsed = parse_mail(outer)
    assert parsed.parts[0].data == inner  # not re-serialised by Python's email package
    assert parsed.parts[0].message.text.startswith("X-Archivista-Spooled-Part:0")
