"""The POP3 source against a real Dovecot: UIDL cursor, delete only after the commit."""

from __future__ import annotations

import json

from conftest import PASSWORD
from mailfactory import make_mail


def add_pop3(run, box, name="pop", security="ssl", extra=(), password=PASSWORD):
    port = box.server.ports["pop3s" if security == "ssl" else "pop3"]
    result = run("account", "add", "pop3", name, "--host", "127.0.0.1", "--port", str(port), "--security", security,
                 "--user", box.user, "--password-stdin", "--ca-file", str(box.server.cert), *extra,
                 input=password + "\n")
    assert result.exit_code == 0, result.output


def test_pop3s_archives_each_mail_once_across_runs(run, mailbox):
    mailbox.append([make_mail(i, attachment="docx" if i == 2 else None, secret_word="wombat") for i in range(3)])
    add_pop3(run, mailbox)
    assert run("import").exit_code == 0
    mailbox.append([make_mail(3)])
    assert run("import").exit_code == 0
    mails = json.loads(run("docs", "list", "--kind", "mail", "--json").output)
    assert sorted(m["message_id"] for m in mails) == [f"gen-{i}@example.com" for i in range(4)]
    assert len(mailbox.messages()) == 4  # kept on the server by default
    hits = json.loads(run("docs", "search", "wombat", "--json").output)
    assert "letter-2.docx" in {h["filename"] for h in hits}  # office attachment text is searchable


def test_pop3_bytes_are_the_servers_crlf_bytes(run, mailbox, tmp_path):
    raw = make_mail(9)
    mailbox.append([raw])
    add_pop3(run, mailbox, security="starttls")
    assert run("import").exit_code == 0
    number = json.loads(run("docs", "list", "--json").output)[0]["number"]
    assert run("docs", "get", str(number), "-o", str(tmp_path / "m.eml")).exit_code == 0
    assert (tmp_path / "m.eml").read_bytes() == raw  # generated with CRLF: identical after RETR


def test_pop3_delete_after_archive_empties_the_maildrop(run, mailbox):
    mailbox.append([make_mail(i) for i in range(10, 15)])
    add_pop3(run, mailbox, extra=["--after", "delete"])
    result = run("import")
    assert result.exit_code == 0, result.output
    assert mailbox.messages() == {}
    assert len(json.loads(run("docs", "list", "--json").output)) == 5


def test_pop3_wrong_password_is_a_clear_sentence(run, mailbox):
    add_pop3(run, mailbox, password="nope")
    result = run("import")
    assert result.exit_code == 3
    assert "Account pop: the server 127.0.0.1 rejected the login" in result.output


def test_pop3_cannot_mark_read_or_move(run, mailbox):
    result = run("account", "add", "pop3", "x", "--host", "127.0.0.1", "--user", "u", "--password-stdin",
                 "--after", "read", input="pw\n")
    assert result.exit_code == 2
    assert "POP3 accounts cannot 'read' after archiving; they can: none, delete." in result.output
