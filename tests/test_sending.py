"""Sending from the archive through a real Postfix into the test Dovecot, and replies filed onto their record."""

from __future__ import annotations

import email
import json

SAMPLE = (b"From: Lieferant AG <rechnung@lieferant.example>\r\nTo: buchhaltung@example.test\r\n"
          b"Subject: Rechnung 4711\r\nMessage-ID: <r4711@lieferant.example>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\n"
          b"\r\nBitte bezahlen Sie bis Ende Monat.\r\n")


def archived(run, tmp_path, raw: bytes = SAMPLE) -> int:
    f = tmp_path / "in.eml"
    f.write_bytes(raw)
    assert run("import", "--from", str(f)).exit_code == 0
    return json.loads(run("docs", "list", "--json").output)[0]["number"]


def test_a_sent_mail_reaches_its_recipient_and_the_reply_lands_on_the_record(run, post, tmp_path):
    post.add_accounts(run)
    number = archived(run, tmp_path)
    result = run("send", str(number), "--via", "versand", "--to", post.customer_address, "--text", "Bitte prüfen.")
    assert result.exit_code == 0, result.output
    got = post.received()
    assert len(got) == 1
    sent = email.message_from_bytes(got[0])
    assert sent["X-Archivista-Reference"] == str(number)
    assert f"[Akte {number}]" in sent["Subject"]
    out = json.loads(run("docs", "list", "--direction", "out", "--json").output)
    assert len(out) == 1 and out[0]["record"] == number and out[0]["direction"] == "out"
    assert out[0]["message_id"] == sent["Message-ID"].strip("<>")
    stored = run("docs", "get", str(out[0]["number"]), "-o", "-").stdout_bytes
    assert stored in got[0]  # the bytes handed to the server (Postfix only adds its Received/Return-Path lines)
    post.reply(got[0])
    imported = run("import")
    assert imported.exit_code == 0, imported.output
    thread = json.loads(run("docs", "thread", str(number), "--json").output)
    assert [d["direction"] for d in thread] == ["in", "out", "in"]
    reply = thread[2]
    assert reply["record"] == number
    shown = json.loads(run("docs", "show", str(reply["number"]), "--json").output)
    assert shown["record"] == number
