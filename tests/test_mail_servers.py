"""How the importer meets servers that are not set up like the default Dovecot.

The Cyrus-like Dovecot (servers.LIKE_CYRUS) keeps folders under "INBOX." with "." between
levels, has no MOVE, refuses passwords on insecure connections and has ACLs, as Cyrus (Debian
defaults) and Courier do. What Dovecot cannot imitate runs against Courier itself
(test_courier.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from conftest import PASSWORD, UMLAUT_PASSWORD, UMLAUT_USER, Mailbox, fresh_mailbox
from mailfactory import make_mail
from servers import CuttingProxy


def add_imap(run, box, *extra, name="acct", security="ssl", port=None, password=PASSWORD, user=None):
    ports = {"ssl": "imaps", "starttls": "imap", "plain": "imap"}
    result = run("account", "add", "imap", name, "--host", "127.0.0.1",
                 "--port", str(port or box.server.ports[ports[security]]), "--security", security,
                 "--user", user or box.user, "--password-stdin", *extra,
                 *(["--ca-file", str(box.server.cert)] if security != "plain" else []), input=password + "\n")
    assert result.exit_code == 0, result.output
    return result


def docs(run):
    result = run("docs", "list", "--limit", "10000", "--json", "--kind", "mail")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def last_run(run) -> dict:
    return json.loads(run("runs", "--json").output)["runs"][0]


def owed(data_dir) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(data_dir / "archive.db") as db:
        return db.execute("SELECT folder, action FROM actions ORDER BY key").fetchall()


# -- folder names and namespaces ------------------------------------------------------------
def test_folders_are_written_as_a_mail_client_shows_them_on_a_server_that_puts_them_under_inbox(run, cyrus_box):
    cyrus_box.append([make_mail(i) for i in range(3)])
    cyrus_box.append([make_mail(i) for i in range(3, 5)], folder="INBOX.Entwürfe")
    add_imap(run, cyrus_box, "--folder", "INBOX", "--folder", "Entwürfe", "--after", "move:Archiv/Alt")

    test = run("account", "test", "acct")
    assert test.exit_code == 0, test.output
    assert "Entwürfe: 2 messages" in test.output
    assert "'Archiv/Alt' does not exist yet; it can be created" in test.output
    assert cyrus_box.messages("INBOX.Archiv.Alt") == {}  # the test changed nothing

    result = run("import")
    assert result.exit_code == 0, result.output
    assert sorted(d["folder"] for d in docs(run)) == ["Entwürfe"] * 2 + ["INBOX"] * 3
    # No MOVE capability: copied and expunged, into the server's INBOX.Archiv.Alt.
    assert len(cyrus_box.messages("INBOX.Archiv.Alt")) == 5
    assert cyrus_box.messages() == {} and cyrus_box.messages("INBOX.Entwürfe") == {}
    assert "the folder 'Archiv/Alt' exists" in run("account", "test", "acct").output


def test_settings_written_in_the_servers_own_spelling_keep_working(run, cyrus_box):
    cyrus_box.append([make_mail(10)], folder="INBOX.Entwürfe")
    add_imap(run, cyrus_box, "--folder", "INBOX.Entwürfe", "--after", "move:INBOX.Erledigt")
    assert run("import").exit_code == 0
    assert len(cyrus_box.messages("INBOX.Erledigt")) == 1


def test_a_folder_name_the_server_cannot_hold_is_explained_and_the_other_folders_still_run(run, cyrus_box):
    cyrus_box.append([make_mail(20)])
    add_imap(run, cyrus_box, "--folder", "Rechnungen 2024.01", "--folder", "INBOX")
    test = run("account", "test", "acct")
    assert test.exit_code == 1
    assert "'Rechnungen 2024.01' cannot exist on this server: it separates folder levels with '.'" in test.output
    assert "Rechnungen 2024/01" in test.output  # what to write for a folder inside another
    assert "INBOX: 1 message" in test.output
    result = run("import")
    assert result.exit_code == 1
    assert "cannot exist on this server" in result.output
    assert [d["folder"] for d in docs(run)] == ["INBOX"]


def test_a_folder_that_only_holds_folders_is_skipped_with_a_warning_and_never_offered(run, cyrus_box, data_dir):
    cyrus_box.append([make_mail(30)], folder="INBOX.Kunden.2024")  # INBOX.Kunden now exists only as \Noselect
    add_imap(run, cyrus_box, "--folder", "Kunden", "--folder", "Kunden/2024")
    result = run("import")
    assert result.exit_code == 0, result.output
    assert [d["folder"] for d in docs(run)] == ["Kunden/2024"]
    assert any("'Kunden' on 127.0.0.1 only holds other folders" in w for w in last_run(run)["warnings"])
    assert last_run(run)["errors"] == []
    test = run("account", "test", "acct")
    assert test.exit_code == 0, test.output
    assert "Kunden: skipped: " in test.output and "Kunden/2024: 1 message" in test.output

    from archivista_mail.config import Config
    from archivista_mail.probe import probe_account
    from archivista_mail.state import State

    acc = State(data_dir).account("acct")
    assert probe_account(acc, Config(data_dir=data_dir)).available == ["INBOX", "Kunden/2024"]


# -- refused after-archive actions -------------------------------------------------------------
def test_an_action_the_server_refuses_is_a_folder_failure_that_is_retried_and_blocks_nothing(
        run, cyrus_box, data_dir, dovecot_like_cyrus):
    other = Mailbox(dovecot_like_cyrus, cyrus_box.user)
    cyrus_box.append([make_mail(i) for i in range(40, 43)])
    cyrus_box.append([make_mail(i) for i in range(43, 47)], folder="INBOX.Gesperrt")
    dovecot_like_cyrus.set_acl({"INBOX.Gesperrt": "lrws"})  # may read and flag \Seen, not delete or expunge
    try:
        add_imap(run, cyrus_box, "--folder", "Gesperrt", "--folder", "INBOX", "--after", "delete")
        second = fresh_mailbox(dovecot_like_cyrus)
        second.append([make_mail(47)])
        add_imap(run, second, "--after", "delete", name="zweites")

        test = run("account", "test", "acct")
        assert test.exit_code == 1
        assert "refused the after-archive action 'delete' in folder 'Gesperrt'" in test.output

        result = run("import")
        assert result.exit_code == 1, result.output  # a folder failure, not "no account reachable"
        assert "refused the after-archive action 'delete' in folder 'Gesperrt'" in result.output
        assert "the account's rights there are 'lrws'" in result.output
        assert len(docs(run)) == 8  # every mail archived, the locked folder's too, and the second account's
        assert len(other.messages("INBOX.Gesperrt")) == 4 and other.messages() == {}
        assert second.messages() == {}
        assert owed(data_dir) == [("Gesperrt", "delete")] * 4

        result = run("import")  # still refused: reported again, nothing archived twice
        assert result.exit_code == 1
        assert last_run(run)["archived"] == 0 and len(docs(run)) == 8
    finally:
        dovecot_like_cyrus.set_acl({})
    result = run("import")
    assert result.exit_code == 0, result.output
    assert other.messages("INBOX.Gesperrt") == {}
    assert owed(data_dir) == [] and len(docs(run)) == 8


def test_a_move_target_that_cannot_be_created_is_reported_by_the_test_and_the_moves_wait(
        run, cyrus_box, data_dir, dovecot_like_cyrus):
    cyrus_box.append([make_mail(i) for i in range(50, 53)])
    dovecot_like_cyrus.set_acl({"INBOX": "lrwstipe"})  # no "k": no folders can be created
    try:
        add_imap(run, cyrus_box, "--after", "move:Archiv/Alt")
        test = run("account", "test", "acct")
        assert test.exit_code == 1
        assert "'Archiv/Alt' does not exist on 127.0.0.1 and cannot be created there" in test.output
        result = run("import")
        assert result.exit_code == 1
        assert "refused the after-archive action 'move:Archiv/Alt' in folder 'INBOX'" in result.output
        assert len(docs(run)) == 3 and len(cyrus_box.messages()) == 3
        assert owed(data_dir) == [("INBOX", "move:Archiv/Alt")] * 3
    finally:
        dovecot_like_cyrus.set_acl({})
    assert run("import").exit_code == 0
    assert cyrus_box.messages() == {} and len(cyrus_box.messages("INBOX.Archiv.Alt")) == 3


def test_owed_actions_survive_editing_the_account_and_follow_its_new_setting(run, cyrus_box, data_dir):
    cyrus_box.append([make_mail(i) for i in range(60, 100)])
    add_imap(run, cyrus_box, "--after", "move:Bad.Name")  # "." cannot be in a name here: refused
    result = run("import")
    assert result.exit_code == 1
    assert len(docs(run)) == 40 and len(owed(data_dir)) == 40

    assert run("account", "remove", "acct").exit_code == 0
    add_imap(run, cyrus_box, "--after", "move:Erledigt")
    cyrus_box.append([make_mail(100)])
    result = run("import")
    assert result.exit_code == 0, result.output
    assert cyrus_box.messages() == {} and len(cyrus_box.messages("INBOX.Erledigt")) == 41
    assert owed(data_dir) == [] and len(docs(run)) == 41


def test_owed_actions_are_dropped_and_audited_when_the_account_now_keeps_mail(run, cyrus_box, data_dir):
    cyrus_box.append([make_mail(i) for i in range(110, 113)])
    add_imap(run, cyrus_box, "--after", "move:Bad.Name")
    assert run("import").exit_code == 1 and len(owed(data_dir)) == 3
    assert run("account", "remove", "acct").exit_code == 0
    add_imap(run, cyrus_box)  # --after none
    result = run("import")
    assert result.exit_code == 0, result.output
    assert owed(data_dir) == [] and len(cyrus_box.messages()) == 3
    entries = json.loads(run("audit", "--action", "actions.dropped", "--json").output)
    assert len(entries) == 1 and entries[0]["target"] == "acct/INBOX"
    assert "3 owed after-archive actions (move:Bad.Name) dropped" in entries[0]["detail"]


# -- logging in -----------------------------------------------------------------------------
def test_a_password_beyond_ascii_logs_in_over_imap_and_pop3(run, dovecot):
    box = Mailbox(dovecot, UMLAUT_USER)
    dovecot.write_maildir(UMLAUT_USER, [make_mail(120), make_mail(121)])
    add_imap(run, box, name="imap-umlaut", password=UMLAUT_PASSWORD)
    result = run("account", "add", "pop3", "pop-umlaut", "--host", "127.0.0.1", "--port", str(dovecot.ports["pop3s"]),
                 "--user", UMLAUT_USER, "--password-stdin", "--ca-file", str(dovecot.cert),
                 input=UMLAUT_PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert run("account", "test", "imap-umlaut").exit_code == 0
    result = run("import")
    assert result.exit_code == 0, result.output
    assert last_run(run)["fetched"] == 4 and last_run(run)["duplicates"] == 2
    assert len(docs(run)) == 2


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_server_refusing_passwords_without_tls_says_which_security_to_use(run, cyrus_box, dovecot_like_cyrus,
                                                                            protocol):
    proxy = CuttingProxy(dovecot_like_cyrus.ports[protocol], source="127.0.0.2")  # not "local": insecure
    try:
        result = run("account", "add", protocol, "plain", "--host", "127.0.0.1", "--port", str(proxy.port),
                     "--security", "plain", "--user", cyrus_box.user, "--password-stdin", input=PASSWORD + "\n")
        assert result.exit_code == 0
        result = run("account", "test", "plain")
    finally:
        proxy.close()
    assert result.exit_code == 3
    assert "refuses passwords on an unencrypted connection" in result.output
    assert "Use --security starttls on this port, or --security ssl" in result.output
    assert "rejected the login" not in result.output


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_tls_settings_that_do_not_fit_the_port_say_which_to_use_within_the_timeout(run, mailbox, tmp_path, protocol):
    config = tmp_path / "timeout.conf"
    config.write_text("[archivista-mail]\nnetwork_timeout = 2\n")
    ports = mailbox.server.ports
    tls_port, plain_port = ports[protocol + "s"], ports[protocol]
    for name, security, port in (("starttls-on-tls", "starttls", tls_port), ("ssl-on-plain", "ssl", plain_port)):
        result = run("account", "add", protocol, name, "--host", "127.0.0.1", "--port", str(port), "--security",
                     security, "--user", mailbox.user, "--password-stdin", "--ca-file", str(mailbox.server.cert),
                     input=PASSWORD + "\n")
        assert result.exit_code == 0
    started = time.monotonic()
    result = run("--config", str(config), "account", "test", "starttls-on-tls")
    assert time.monotonic() - started < 4
    assert result.exit_code == 3
    assert "sent no greeting within 2 seconds. If this port expects TLS from the first byte" in result.output
    assert "use --security ssl" in result.output
    result = run("--config", str(config), "account", "test", "ssl-on-plain")
    assert result.exit_code == 3
    assert "answered in plain text, not TLS. Use --security starttls on this port" in result.output


# -- the command line -------------------------------------------------------------------------
def test_runs_piped_into_head_ends_quietly(run, data_dir, tmp_path):
    mails = tmp_path / "mails"
    mails.mkdir()
    for i in range(3):
        (mails / f"{i}.eml").write_bytes(make_mail(130 + i))
        assert run("import", "--from", str(mails)).exit_code == 0
    many = "\n".join(f"error line {i}" for i in range(5000))
    import sqlite3

    with sqlite3.connect(data_dir / "state.db") as db:
        db.execute("UPDATE runs SET errors = ?", [json.dumps(many.splitlines())])
    shell = (f"set -o pipefail; {sys.executable} -m archivista_mail --data-dir {data_dir} runs --limit 3 | head -2")
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(done.stdout.splitlines()) == 2 and re.match(r"\d{4}-", done.stdout)


def test_webadmins_folder_picker_shows_folders_as_a_client_does_and_offers_only_those_that_hold_mail(
        run, cyrus_box, data_dir):
    from test_webadmin import csrf, login

    from archivista_mail.config import Config
    from webadmin import create_app

    cyrus_box.append([make_mail(140)], folder="INBOX.Kunden.2024")
    cyrus_box.append([make_mail(141)], folder="INBOX.Entwürfe")
    add_imap(run, cyrus_box, "--folder", "Entwürfe", "--folder", "Kunden")
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    client = create_app(Config(data_dir=data_dir)).test_client()
    assert login(client, "anna", "anna-password").status_code == 302
    token = csrf(client.get("/accounts/").data)
    page = client.post("/accounts/acct/test", data={"csrf_token": token}).data.decode()
    offered = re.findall(r'name="folder" value="([^"]+)"', page)
    assert offered == ["INBOX", "Entwürfe", "Kunden/2024"]
    assert re.search(r'value="Entwürfe" checked', page)
    assert "Kunden: " in page and "enthält nur andere Ordner, keine Mails" in page
