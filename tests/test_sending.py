"""Sending from the archive through a real Postfix into the test Dovecot, and replies filed onto their record."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import PASSWORD
from servers import CuttingProxy

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
    text = run("docs", "thread", str(reply["number"])).output.splitlines()  # any mail of the record shows it all
    assert text[0] == f"Record {number}: Rechnung 4711"
    assert "-> " in text[1] and post.customer_address in text[1] and text[1].endswith("[sent]")
    assert "<- " in text[2] and post.customer_address in text[2] and "Re: Rechnung 4711" in text[2]
    listed = run("outbox", "list", "--all").output
    assert listed.startswith(f"sent        document {out[0]['number']} record {number} via versand to "
                             f"{post.customer_address}") and "250 2.0.0 Ok: queued as" in listed
    assert run("outbox", "list").output.strip() == "The outbox is empty: every mail was sent."


# -- exactly once: kills, refusals, broken connections ------------------------------------------------------------
def send_process(data_dir, *args, pause: str) -> subprocess.Popen:
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir), ARCHIVISTA_MAIL_PAUSE_AT=pause)
    return subprocess.Popen([sys.executable, "-m", "archivista_mail", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def kill_when_paused(proc: subprocess.Popen) -> None:
    """SIGKILL the process once it has stopped itself at its pause point (fails if it ends first)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the sender ended before its pause point: {proc.communicate()}"
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                break
        time.sleep(0.02)
    else:
        pytest.fail("the sender never reached its pause point")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def outbox(run) -> list[dict]:
    return json.loads(run("outbox", "list", "--all", "--json").output)


def count_received(post, settle: float = 1.0) -> int:
    time.sleep(settle)  # a mail the server accepted is in the mailbox within ~0.1 s
    return len(post.received(wait=0))


@pytest.mark.parametrize("pause, delivered_by_kill, after_retry, status", [
    ("reserved", 0, 1, "sent"),  # killed before the server saw anything: the retry sends it, once
    ("sending", 0, 0, "unconfirmed"),  # killed just before DATA: the server may have it -> never sent by itself
    ("accepted", 1, 1, "unconfirmed"),  # killed after the server's 250, before our commit: not sent twice
])
def test_a_killed_send_is_never_sent_twice_and_never_unrecorded(run, post, tmp_path, data_dir, pause,
                                                                 delivered_by_kill, after_retry, status):
    post.add_accounts(run)
    number = archived(run, tmp_path)
    proc = send_process(data_dir, "send", str(number), "--via", "versand", "--to", post.customer_address,
                        pause=pause)
    kill_when_paused(proc)
    assert count_received(post) == delivered_by_kill
    rows = outbox(run)
    assert len(rows) == 1 and rows[0]["status"] == ("reserved" if pause == "reserved" else "sending")
    document = rows[0]["number"]  # the outgoing mail was archived on the record before the server saw it
    assert json.loads(run("docs", "show", str(document), "--json").output)["record"] == number
    run("outbox", "retry", "--all")
    run("outbox", "retry", "--all")  # and again: nothing more happens
    assert count_received(post) == after_retry
    rows = outbox(run)
    assert [r["status"] for r in rows] == [status]
    assert [r["message_id"] for r in rows] == [json.loads(run("docs", "show", str(document), "--json").output)
                                               ["message_id"]]
    if status == "unconfirmed":
        assert "may have been delivered" in rows[0]["reply"]
        # a person decides: the same bytes and Message-ID once more
        result = run("outbox", "resend", rows[0]["message_id"])
        assert result.exit_code == 0, result.output
        assert count_received(post) == after_retry + 1
        got = post.received()
        assert len({email.message_from_bytes(g)["Message-ID"] for g in got}) == 1


def test_a_permanent_refusal_is_recorded_with_the_servers_reply_and_not_retried(run, post, tmp_path):
    post.add_accounts(run)
    number = archived(run, tmp_path)
    result = run("send", str(number), "--via", "versand", "--to", "fail-550@example.test", "--cc", post.customer_address)
    assert result.exit_code == 1
    assert "refused the mail at RCPT TO:<fail-550@example.test> (550 5.7.1" in result.output
    assert count_received(post) == 0  # refused as a whole: not even the Cc got it
    run("outbox", "retry", "--all")
    rows = outbox(run)
    assert [r["status"] for r in rows] == ["failed"] and "injected failure 550" in rows[0]["reply"]
    assert count_received(post, 0.3) == 0
    thread = json.loads(run("docs", "thread", str(number), "--json").output)
    assert thread[1]["sending"]["status"] == "failed"  # on the record, marked failed


def test_a_temporary_refusal_is_retried_and_then_sent_once(run, post, tmp_path):
    post.add_accounts(run)
    number = archived(run, tmp_path)
    post.postfix.set_rejections({"^Subject:.*Rechnung 4711": "REJECT 4.7.1 busy, try later"})
    try:
        result = run("send", str(number), "--via", "versand", "--to", post.customer_address)
        assert result.exit_code == 1 and "deferred the mail at the end of DATA (451 4.7.1" in result.output
        assert run("outbox", "retry").output.strip() == "Nothing to send."  # not due yet
        assert run("outbox", "retry", "--all").exit_code == 1  # still refused
        rows = outbox(run)
        assert rows[0]["status"] == "deferred" and rows[0]["attempts"] == 2
    finally:
        post.postfix.set_rejections({})
    assert run("outbox", "retry", "--all").exit_code == 0
    assert count_received(post) == 1
    assert [r["status"] for r in outbox(run)] == ["sent"]


def test_a_dropped_connection_defers_the_mail_and_the_retry_sends_it_once(run, post, tmp_path):
    proxy = CuttingProxy(post.postfix.ports["smtps"], cut_after=300)  # dropped inside the TLS handshake
    try:
        post.add_accounts(run, security="ssl")
        run("account", "remove", "versand")
        result = run("account", "add", "smtp", "versand", "--host", "127.0.0.1", "--port", str(proxy.port),
                     "--security", "ssl", "--user", post.archive_box.user, "--from", post.archive_address,
                     "--ca-file", post.ca, "--password-stdin", input=PASSWORD + "\n")
        assert result.exit_code == 0, result.output
        number = archived(run, tmp_path)
        result = run("send", str(number), "--via", "versand", "--to", post.customer_address)
        assert result.exit_code == 1 and proxy.cuts >= 1
        assert [r["status"] for r in outbox(run)] == ["deferred"]
        proxy.cut_after = None
        assert run("outbox", "retry", "--all").exit_code == 0
        run("outbox", "retry", "--all")
    finally:
        proxy.close()
    assert count_received(post) == 1
    assert [r["status"] for r in outbox(run)] == ["sent"]


def test_two_retries_at_once_send_a_reserved_mail_once(run, post, tmp_path, data_dir):
    post.add_accounts(run)
    number = archived(run, tmp_path)
    kill_when_paused(send_process(data_dir, "send", str(number), "--via", "versand", "--to", post.customer_address,
                                  pause="reserved"))
    procs = [send_process(data_dir, "outbox", "retry", "--all", pause="") for _ in range(3)]
    for p in procs:
        p.communicate(timeout=60)
    assert count_received(post) == 1
    assert [r["status"] for r in outbox(run)] == ["sent"]


# -- hostile input: sender domains, addresses, forged tokens ---------------------------------------------------------
@pytest.mark.parametrize("options, complaint", [
    (["--from", "chef@other.test", "--allowed-domain", "example.test"], "not in the allowed domains"),
    (["--from", "chef@example.test.evil.test", "--allowed-domain", "example.test"], "not in the allowed domains"),
    (["--from", "chef@mail.example.test", "--allowed-domain", "example.test"], "not in the allowed domains"),
    (["--from", "chef@exаmple.test", "--allowed-domain", "example.test"], "not in the allowed domains"),  # Cyrillic а
    (["--from", "chef@example.test", "--reply-to", "phish@evil.test"], "Reply-To address phish@evil.test"),
    (["--from", "chef@example.test\r\nBcc: all@evil.test"], "is not a mail address"),
    (["--from", "a@example.test, b@evil.test"], "is not a mail address"),
    (["--from", "Chef <chef@example.test>"], "is not a mail address"),
])
def test_the_from_and_reply_to_addresses_must_be_in_the_allowed_domains(run, options, complaint):
    result = run("account", "add", "smtp", "versand", "--host", "127.0.0.1", "--security", "starttls", "--user", "u",
                 "--password-stdin", *options, input="pw\n")
    assert result.exit_code != 0 and complaint in result.output, result.output
    assert json.loads(run("account", "list", "--json").output) == []


def test_an_allowed_domain_in_another_case_and_the_default_domain_are_accepted(run):
    result = run("account", "add", "smtp", "a", "--host", "127.0.0.1", "--user", "u", "--from", "Chef@Example.TEST",
                 "--reply-to", "team@example.test", "--password-stdin", input="pw\n")
    assert result.exit_code == 0, result.output
    result = run("account", "add", "smtp", "b", "--host", "127.0.0.1", "--user", "u", "--from", "x@kunde.test",
                 "--allowed-domain", "example.test", "--allowed-domain", "KUNDE.test", "--password-stdin",
                 input="pw\n")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("recipient", ["kunde@example.test\r\nBcc: all@evil.test", "a@x.test, b@evil.test",
                                       "Kunde <k@x.test>", "", "no-at-sign", "a@b@c.test", "a..b@x.test"])
def test_hostile_recipients_are_refused_before_anything_is_archived_or_sent(run, post, tmp_path, recipient):
    post.add_accounts(run)
    number = archived(run, tmp_path)
    result = run("send", str(number), "--via", "versand", "--to", recipient)
    assert result.exit_code == 2, result.output
    assert "mail address" in result.output or "at least one recipient" in result.output
    assert outbox(run) == [] and count_received(post, 0.3) == 0


def test_a_subject_token_links_only_mail_from_someone_in_the_conversation(run, post, tmp_path):
    post.add_accounts(run)
    number = archived(run, tmp_path)
    assert run("send", str(number), "--via", "versand", "--to", post.customer_address).exit_code == 0
    sent = post.received()[0]
    token = f"[Akte {number}]"

    def incoming(sender: str, subject: str, extra: str = "") -> int:
        raw = (f"From: {sender}\r\nTo: {post.archive_address}\r\nSubject: {subject}\r\nMessage-ID: "
               f"<{time.time_ns()}@x.test>\r\n{extra}\r\nText\r\n").encode()
        f = tmp_path / f"{time.time_ns()}.eml"
        f.write_bytes(raw)
        assert run("import", "--from", str(f)).exit_code == 0
        return json.loads(run("docs", "list", "--json", "--direction", "in").output)[0]["number"]

    def record_of(doc: int):
        return json.loads(run("docs", "show", str(doc), "--json").output)["record"]

    # a stranger quoting the token: not linked
    assert record_of(incoming("Mallory <mallory@evil.test>", f"Re: Rechnung 4711 {token}")) is None
    # a stranger with a forged In-Reply-To naming nothing we sent: not linked
    assert record_of(incoming("mallory@evil.test", f"Re: {token}", "In-Reply-To: <forged@evil.test>\r\n")) is None
    # a stranger naming a token of a record that does not exist: not linked (and no error)
    assert record_of(incoming("mallory@evil.test", "Re: [Akte 999999]")) is None
    # the customer, who got the mail, writes anew with the token: linked
    assert record_of(incoming(f"Kunde <{post.customer_address.upper()}>", f"Nachtrag {token}")) == number
    # the supplier who sent the record's original mail (took part): linked by token too
    assert record_of(incoming("rechnung@lieferant.example", f"Korrektur {token}")) == number
    # anyone whose mail references what we sent: linked by the reference, token or not
    sent_id = email.message_from_bytes(sent)["Message-ID"]
    assert record_of(incoming("kollege@other.test", "Fwd: Info", f"References: <x@y> {sent_id}\r\n")) == number


def test_tokens_can_be_renamed_or_turned_off(run, post, tmp_path):
    post.add_accounts(run)
    number = archived(run, tmp_path)
    assert run("settings", "set", "send_subject_token", "Dossier").exit_code == 0
    assert run("send", str(number), "--via", "versand", "--to", post.customer_address).exit_code == 0
    assert f"[Dossier {number}]" in email.message_from_bytes(post.received()[0])["Subject"]
    assert run("settings", "set", "send_subject_token", "off").exit_code == 0
    assert run("send", str(number), "--via", "versand", "--to", post.customer_address,
               "--subject", "Ohne Token").exit_code == 0
    deadline = time.monotonic() + 5  # the second mail's delivery (LMTP) may lag behind the first
    while len(post.received()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    subjects = sorted(email.message_from_bytes(m)["Subject"] for m in post.received())
    assert "Ohne Token" in subjects


def test_account_test_logs_in_and_reports_the_size_limit_and_smtputf8(run, post):
    post.add_accounts(run)
    result = run("account", "test", "versand")
    assert result.exit_code == 0, result.output
    assert "login ok" in result.output and "size limit 20.0 MB" in result.output and "SMTPUTF8 offered" in result.output
    run("account", "remove", "versand")
    result = run("account", "add", "smtp", "versand", "--host", "127.0.0.1", "--port",
                 str(post.postfix.ports["submission"]), "--security", "starttls", "--user", post.archive_box.user,
                 "--from", post.archive_address, "--ca-file", post.ca, "--password-stdin", input="wrong\n")
    assert result.exit_code == 0
    result = run("account", "test", "versand")
    assert result.exit_code != 0
    assert f"Account versand: the server 127.0.0.1 rejected the login of user '{post.archive_box.user}'" in result.output
    assert "wrong" not in result.output


def test_an_attachment_document_is_sent_as_itself(run, post, tmp_path):
    post.add_accounts(run)
    raw = (b"From: a@lieferant.example\r\nTo: b@example.test\r\nSubject: Offerte\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nAnbei.\r\n"
           b"--XX\r\nContent-Type: application/pdf; name=offerte.pdf\r\nContent-Disposition: attachment; "
           b"filename=offerte.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJSBvZmZlcnRl\r\n--XX--\r\n")
    archived(run, tmp_path, raw)
    attachment = json.loads(run("docs", "list", "--kind", "attachment", "--json").output)[0]
    assert run("send", str(attachment["number"]), "--via", "versand", "--to", post.customer_address,
               "--lang", "en").exit_code == 0
    got = email.message_from_bytes(post.received()[0], policy=email.policy.default)
    parts = [p for p in got.iter_attachments()]
    assert [(p.get_filename(), p.get_content_type()) for p in parts] == [("offerte.pdf", "application/pdf")]
    assert parts[0].get_content() == b"%PDF-1.4\n% offerte"
    assert "Please find attached document" in got.get_body(("plain",)).get_content()


# -- automatic replies from rules ------------------------------------------------------------------------------
ACK_RULES = [{"name": "Eingang bestätigen", "when": {"all": [{"field": "subject", "op": "contains", "value": "Auftrag"}]},
              "then": [{"send": "acknowledgement", "to": "sender", "via": "versand"}]}]


def test_a_rule_acknowledges_a_mail_once_it_is_archived_and_never_loops(run, post, tmp_path):
    post.add_accounts(run)
    (tmp_path / "rules.json").write_text(json.dumps(ACK_RULES))
    assert run("rules", "load", str(tmp_path / "rules.json")).exit_code == 0

    def mail(subject: str, extra: str = "", sender: str | None = None) -> bytes:
        return (f"From: {sender or post.customer_address}\r\nTo: {post.archive_address}\r\nSubject: {subject}\r\n"
                f"Message-ID: <{time.time_ns()}@x.test>\r\n{extra}\r\nBitte liefern.\r\n").encode()

    hostile = [mail("Auftrag 2", "Auto-Submitted: auto-replied\r\n"), mail("Auftrag 3", "Precedence: bulk\r\n"),
               mail("Auftrag 4", "List-Id: <liste.example.test>\r\n"), mail("Auftrag 5", sender="noreply@example.test"),
               mail("Auftrag 6", "Return-Path: <>\r\n")]
    post.archive_box.append([mail("Auftrag 1"), *hostile, mail("Auftrag 7")])
    # the simulator says what would happen, sending nothing
    test = run("rules", "test", "--last", "1", "--json")
    assert test.exit_code == 0
    dry = tmp_path / "dry"
    dry.mkdir()
    for i, raw in enumerate([mail("Auftrag 1"), hostile[0]]):
        (dry / f"{i}.eml").write_bytes(raw)
    shown = run("rules", "test", "--from", str(dry)).output
    assert f"would send 'acknowledgement' to {post.customer_address} via versand" in shown
    assert "would not send 'acknowledgement': the mail is auto-submitted (auto-replied)" in shown
    assert count_received(post, 0.3) == 0
    result = run("import")
    assert result.exit_code == 0, result.output
    got = post.received()
    # one acknowledgement: Auftrag 7 comes from the same sender on the same day; the five hostile mails get none
    assert len(got) == 1
    ack = email.message_from_bytes(got[0], policy=email.policy.default)
    assert ack["Auto-Submitted"] == "auto-replied" and ack["Subject"].startswith("Eingangsbestätigung: Auftrag 1")
    first = json.loads(run("docs", "search", "Auftrag 1", "--direction", "in", "--json").output)[0]
    assert ack["In-Reply-To"] == f"<{first['message_id']}>"
    thread = json.loads(run("docs", "thread", str(first["number"]), "--json").output)
    assert [(d["direction"], d["sending"]["status"] if d["sending"] else None) for d in thread] == \
        [("in", None), ("out", "sent")]
    # the acknowledgement reaching the archive again (a copy, a bounce loop) is not acknowledged
    post.archive_box.append([got[0]])
    assert run("import").exit_code == 0
    assert count_received(post, 0.5) == 1


def test_an_acknowledgement_owed_when_the_importer_dies_is_sent_by_the_next_run(run, post, tmp_path, data_dir):
    post.add_accounts(run)
    (tmp_path / "rules.json").write_text(json.dumps(ACK_RULES))
    assert run("rules", "load", str(tmp_path / "rules.json")).exit_code == 0
    post.archive_box.append([(f"From: {post.customer_address}\r\nTo: {post.archive_address}\r\nSubject: Auftrag 9\r\n"
                              f"Message-ID: <a9@x.test>\r\n\r\nBitte.\r\n").encode()])
    kill_when_paused(send_process(data_dir, "import", pause="reserved"))  # archived, reply composed, then killed
    assert count_received(post) == 0
    assert [r["status"] for r in outbox(run)] == ["reserved"]
    assert run("import").exit_code == 0
    assert count_received(post) == 1
    assert [r["status"] for r in outbox(run)] == ["sent"]


def test_a_template_of_ones_own_with_html_fields_and_the_direct_link(run, post, tmp_path, data_dir):
    post.add_accounts(run)
    number = archived(run, tmp_path)
    assert run("settings", "set", "link_base_url", "archiv.example.test").exit_code == 0
    templates = data_dir / "mail-templates"
    templates.mkdir()
    (templates / "mahnung.de.txt").write_text("Subject: Mahnung zu {title}\n\nSiehe {link}\nGruss {sender_name}\n")
    (templates / "mahnung.de.html").write_text("<html><body><p>Siehe <a href=\"{link}\">{title}</a></p></body></html>")
    result = run("send", str(number), "--via", "versand", "--to", post.customer_address, "--template", "mahnung",
                 "--text", "Letzte <Frist>.")
    assert result.exit_code == 0, result.output
    got = email.message_from_bytes(post.received()[0], policy=email.policy.default)
    assert got["Subject"] == f"Mahnung zu Rechnung 4711 [Akte {number}]"
    plain = got.get_body(("plain",)).get_content()
    assert f"Siehe https://archiv.example.test/doc/{number}" in plain and "Letzte <Frist>." in plain
    html = got.get_body(("html",)).get_content()
    assert f'<a href="https://archiv.example.test/doc/{number}">Rechnung 4711</a>' in html
    assert "</p><p>Letzte &lt;Frist&gt;.</p>\r\n</body>" in html


def test_a_refusal_of_the_data_command_itself_is_deferred_not_left_in_doubt(run, post, tmp_path, data_dir):
    """A server answering DATA with 4xx never had the mail: deferred and sent later, not 'unconfirmed'."""
    import sqlite3

    post.add_accounts(run)
    number = archived(run, tmp_path)
    postfix_main = post.postfix.dir / "main.cf"
    original = postfix_main.read_text()
    postfix_main.write_text(original + "smtpd_data_restrictions = defer\n")  # the next smtpd reads it
    try:
        result = run("send", str(number), "--via", "versand", "--to", post.customer_address)
        assert result.exit_code == 1 and "deferred the mail at DATA" in result.output, result.output
        assert [r["status"] for r in outbox(run)] == ["deferred"]
    finally:
        postfix_main.write_text(original)
    assert run("outbox", "retry", "--all").exit_code == 0
    assert count_received(post) == 1
    with sqlite3.connect(data_dir / "archive.db") as db:
        assert db.execute("SELECT status, attempts FROM outbox").fetchall() == [("sent", 2)]


def test_one_broken_outbox_row_does_not_stop_the_others_or_the_import(run, post, tmp_path, data_dir):
    import sqlite3

    post.add_accounts(run)
    number = archived(run, tmp_path)
    kill_when_paused(send_process(data_dir, "send", str(number), "--via", "versand", "--to", post.customer_address,
                                  pause="reserved"))
    with sqlite3.connect(data_dir / "archive.db") as db:  # an owed reply for a document that is not there
        db.execute("INSERT INTO outbox (account, recipients, status, rule, template, lang, answers, answered_from, "
                   "created, updated, day) VALUES ('versand', '[\"x@example.test\"]', 'owed', 'r', 'nosuch', 'de', "
                   "999999, 'x@example.test', '2026', '2026', '2026-12-01')")
    result = run("import")
    assert result.exit_code == 1 and "The automatic reply could not be made" in result.output
    last = json.loads(run("runs", "--json").output)["runs"][0]  # the run was recorded
    assert last["source"] == "all accounts" and any("could not be made" in e for e in last["errors"])
    statuses = sorted(r["status"] for r in outbox(run))
    assert statuses == ["failed", "sent"] and count_received(post) == 1


def test_pressing_send_twice_sends_once(run, post, tmp_path, data_dir):
    from test_webadmin import csrf
    from test_webadmin_gmail_ews import admin_client

    post.add_accounts(run)
    number = archived(run, tmp_path)
    client = admin_client(run, data_dir)
    form = client.get(f"/documents/{number}/send").data
    request_id = re.search(rb'name="request" value="([^"]+)"', form).group(1).decode()
    data = {"csrf_token": csrf(form), "request": request_id, "via": "versand", "to": post.customer_address,
            "template": "document", "lang": "de"}
    first = client.post(f"/documents/{number}/send", data=data)
    second = client.post(f"/documents/{number}/send", data=data)  # a double click, a reload
    assert first.status_code == second.status_code == 302
    assert count_received(post) == 1 and len(outbox(run)) == 1
    other = client.get(f"/documents/{number}/send").data  # a new form is a new request
    assert re.search(rb'name="request" value="([^"]+)"', other).group(1).decode() != request_id
