"""The importer against real Courier-IMAP/POP3 and Cyrus IMAP, run from Debian's packages.

What Dovecot cannot imitate (test_mail_servers.py covers what it can): Courier's POP3 substitute
for mail with raw 8-bit headers, its implicit \\Noselect parents and SELECT without UIDNEXT;
Cyrus refusing actions with "Permission denied", and its "/"-separator set-up. Needs root and
``make foreign-servers`` (run by ``make test``).
"""

from __future__ import annotations

import json

import pytest
from foreign_servers import Courier, Cyrus
from imapclient import IMAPClient
from mailfactory import make_mail

PASSWORD = "s3cret-Pa55"
UTF8_PASSWORD = "pässwörd-Ä1"
USERS = {"pop": UTF8_PASSWORD, "imap": UTF8_PASSWORD, "keep": PASSWORD}
CYRUS_USERS = {"acl": PASSWORD, "second": PASSWORD}
# Raw UTF-8 in the headers, as some mailers send it: Courier's POP3 wraps such mail unless asked for UTF8.
RAW_8BIT = ("From: Jörg Müller <j@example.com>\r\nTo: pop@example.com\r\nSubject: Grüße aus Zürich\r\n"
            "Message-ID: <raw8bit-1@example.com>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Hallo Jörg, schöne Grüße.\r\n").encode()


def started(server):
    try:
        return server.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="module")
def courier():
    server = started(Courier(USERS))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cyrus():
    server = started(Cyrus(CYRUS_USERS, config={"popminpoll": "0", "failedloginpause": "0"}))
    yield server
    server.stop()


def add(run, kind, name, server, user, password, *extra):
    port = server.ports["imaps" if kind == "imap" else "pop3s"]
    result = run("account", "add", kind, name, "--host", "127.0.0.1", "--port", str(port), "--user", user,
                 "--password-stdin", "--ca-file", str(server.cert), *extra, input=password + "\n")
    assert result.exit_code == 0, result.output


def mails(run) -> list[dict]:
    result = run("docs", "list", "--kind", "mail", "--json", "--limit", "1000")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def imap(server, user, password):
    import ssl

    client = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True, timeout=10,
                        ssl_context=ssl.create_default_context(cafile=str(server.cert)))
    client.plain_login(user, password)
    return client


def folder_count(client, folder) -> int:
    return client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"] if client.folder_exists(folder) else 0


def test_courier_pop3_delivers_mail_with_raw_8bit_headers_as_sent_and_deletes_only_after_archiving(
        run, courier, tmp_path):
    courier.deliver("pop", [RAW_8BIT, make_mail(1)])
    add(run, "pop3", "courier-pop", courier, "pop", UTF8_PASSWORD, "--after", "delete")
    result = run("import")
    assert result.exit_code == 0, result.output
    archived = mails(run)
    assert len(archived) == 2
    top = next(d for d in archived if d["message_id"] == "raw8bit-1@example.com")
    assert top["subject"] == "Grüße aus Zürich" and "Jörg Müller" in top["from"]
    assert not any("Cannot display Unicode content" in (d["subject"] or "") for d in archived)
    out = tmp_path / "mail.eml"
    assert run("docs", "get", str(top["number"]), "-o", str(out)).exit_code == 0
    assert out.read_bytes() == RAW_8BIT  # the mail as sent, not the server's substitute
    assert run("account", "test", "courier-pop").output.count("INBOX: 0 messages") == 1


def test_courier_imap_with_a_utf8_password_noselect_parents_and_no_uidnext(run, courier):
    courier.deliver("imap", [make_mail(i) for i in range(10, 13)])
    courier.deliver("imap", [make_mail(i) for i in range(13, 15)], folder="INBOX.Kunden.2024")
    add(run, "imap", "courier", courier, "imap", UTF8_PASSWORD, "--folder", "INBOX", "--folder", "Kunden",
        "--folder", "Kunden/2024", "--after", "move:Archiv/Alt")
    test = run("account", "test", "courier")
    assert test.exit_code == 0, test.output
    assert "Kunden: skipped" in test.output and "Kunden/2024: 2 messages" in test.output
    assert "'Archiv/Alt' does not exist yet; it can be created" in test.output

    result = run("import")
    assert result.exit_code == 0, result.output
    assert sorted(d["folder"] for d in mails(run)) == ["INBOX"] * 3 + ["Kunden/2024"] * 2
    runs = json.loads(run("runs", "--json").output)["runs"]
    assert any("'Kunden'" in w and "only holds other folders" in w for w in runs[0]["warnings"])
    with imap(courier, "imap", UTF8_PASSWORD) as client:
        assert folder_count(client, "INBOX.Archiv.Alt") == 5
        assert folder_count(client, "INBOX") == 0 and folder_count(client, "INBOX.Kunden.2024") == 0

    courier.deliver("imap", [make_mail(15)])  # no UIDNEXT on SELECT: the next run still finds only this one
    assert run("import").exit_code == 0
    runs = json.loads(run("runs", "--json").output)["runs"]
    assert (runs[0]["fetched"], runs[0]["archived"]) == (1, 1)


def test_cyrus_refusing_a_delete_by_acl_fails_that_folder_only_until_the_right_is_given(run, cyrus, data_dir):
    cyrus.deliver("acl", [make_mail(i) for i in range(20, 23)])
    cyrus.deliver("acl", [make_mail(i) for i in range(23, 25)], folder="INBOX.Gesperrt")
    cyrus.deliver("second", [make_mail(25)])
    cyrus.set_acl("acl", "INBOX.Gesperrt", "acl", "lrswa")  # may read and flag \Seen; not delete or expunge
    add(run, "imap", "cyrus", cyrus, "acl", PASSWORD, "--folder", "Gesperrt", "--folder", "INBOX", "--after", "delete")
    add(run, "imap", "second", cyrus, "second", PASSWORD, "--after", "delete")
    result = run("import")
    assert result.exit_code == 1, result.output
    assert "refused the after-archive action 'delete' in folder 'Gesperrt'" in result.output
    assert len(mails(run)) == 6
    with imap(cyrus, "acl", PASSWORD) as client:
        assert folder_count(client, "INBOX.Gesperrt") == 2 and folder_count(client, "INBOX") == 0
    with imap(cyrus, "second", PASSWORD) as client:
        assert folder_count(client, "INBOX") == 0  # the other account ran

    cyrus.set_acl("acl", "INBOX.Gesperrt", "acl", "lrswipkxtecdan")
    result = run("import")
    assert result.exit_code == 0, result.output
    with imap(cyrus, "acl", PASSWORD) as client:
        assert folder_count(client, "INBOX.Gesperrt") == 0
    assert len(mails(run)) == 6


def test_cyrus_with_slash_separator_and_altnamespace_takes_names_with_dots(run):
    server = started(Cyrus({"alt": PASSWORD}, unixhierarchysep=True, altnamespace=True,
                           config={"failedloginpause": "0"}))
    try:
        server.deliver("alt", [make_mail(30)], folder="Rechnungen 2024.01")
        add(run, "imap", "alt", server, "alt", PASSWORD, "--folder", "Rechnungen 2024.01", "--after",
            "move:Archiv/Alt")
        result = run("import")
        assert result.exit_code == 0, result.output
        assert [d["folder"] for d in mails(run)] == ["Rechnungen 2024.01"]
        with imap(server, "alt", PASSWORD) as client:
            assert folder_count(client, "Archiv/Alt") == 1
    finally:
        server.stop()
