"""The IMAP source against a real Dovecot: TLS modes, cursors, actions, errors."""

from __future__ import annotations

import json

import pytest
from conftest import PASSWORD, run_on_terminal
from mailfactory import make_mail


def add_imap(run, box, name="acct", security="ssl", port=None, extra=(), password=PASSWORD, ca=True):
    ports = {"ssl": "imaps", "starttls": "imap", "plain": "imap"}
    args = ["account", "add", "imap", name, "--host", "127.0.0.1",
            "--port", str(port or box.server.ports[ports[security]]), "--security", security,
            "--user", box.user, "--password-stdin", *extra]
    if ca and security != "plain":
        args += ["--ca-file", str(box.server.cert)]
    result = run(*args, input=password + "\n")
    assert result.exit_code == 0, result.output
    return result


def docs(run, *args):
    result = run("docs", "list", "--limit", "10000", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_imap_mail_is_archived_byte_for_byte_over_tls(run, mailbox, security, tmp_path):
    mails = [make_mail(i, attachment="pdf" if i == 1 else None, secret_word="quokka") for i in range(3)]
    mailbox.append(mails)
    add_imap(run, mailbox, security=security)

    result = run("import")
    assert result.exit_code == 0, result.output

    found = docs(run, "--kind", "mail")
    assert len(found) == 3
    stored = set()
    for doc in found:
        out = tmp_path / f"{doc['number']}.eml"
        assert run("docs", "get", str(doc["number"]), "-o", str(out)).exit_code == 0
        stored.add(out.read_bytes())
    server_bytes = {raw for raw, _ in mailbox.messages().values()}
    assert stored == server_bytes
    attachments = docs(run, "--kind", "attachment")
    assert [(a["filename"], a["mime_type"]) for a in attachments] == [("report-1.pdf", "application/pdf")]
    hits = json.loads(run("docs", "search", "quokka", "--json").output)
    assert {h["kind"] for h in hits} == {"mail", "attachment"}  # body text and PDF text both indexed


def test_plain_imap_needs_the_explicit_security_setting_and_warns(run, mailbox):
    mailbox.append([make_mail(10)])
    result = add_imap(run, mailbox, security="plain")
    assert "unencrypted" in result.output
    assert run("import").exit_code == 0
    assert len(docs(run)) == 1


def test_second_run_fetches_only_new_mail(run, mailbox):
    mailbox.append([make_mail(i) for i in range(5)])
    add_imap(run, mailbox)
    assert run("import").exit_code == 0
    mailbox.append([make_mail(i) for i in range(5, 8)])
    result = run("import")
    assert result.exit_code == 0
    runs = json.loads(run("runs", "--json").output)["runs"]
    assert (runs[0]["fetched"], runs[0]["archived"]) == (3, 3)
    assert len(docs(run, "--kind", "mail")) == 8


def test_unread_only_skips_read_mail_and_mark_read_flags_archived_mail(run, mailbox):
    mailbox.append([make_mail(20)], flags=[b"\\Seen"])
    mailbox.append([make_mail(21), make_mail(22)])
    add_imap(run, mailbox, extra=["--unread-only", "--after", "read"])
    assert run("import").exit_code == 0
    subjects = sorted(d["message_id"] for d in docs(run))
    assert subjects == ["gen-21@example.com", "gen-22@example.com"]
    assert all(b"\\Seen" in flags for _, flags in mailbox.messages().values())


def test_move_after_archive_moves_only_archived_mail(run, mailbox):
    mailbox.append([make_mail(i) for i in range(30, 34)])
    add_imap(run, mailbox, extra=["--after", "move:Archived"])
    assert run("import").exit_code == 0
    assert mailbox.messages() == {}
    moved = {raw for raw, _ in mailbox.messages("Archived").values()}
    assert len(moved) == 4
    assert len(docs(run, "--kind", "mail")) == 4


def test_delete_after_archive_and_default_leaves_server_untouched(run, mailbox):
    mailbox.append([make_mail(i) for i in range(40, 43)])
    add_imap(run, mailbox, name="keep")
    assert run("import").exit_code == 0
    assert len(mailbox.messages()) == 3  # after=none: read-only EXAMINE, nothing changed
    assert all(b"\\Seen" not in f for _, f in mailbox.messages().values())
    add_imap(run, mailbox, name="purge", extra=["--after", "delete"])
    result = run("import", "--account", "purge")
    assert result.exit_code == 0, result.output
    assert mailbox.messages() == {}
    runs = json.loads(run("runs", "--json").output)["runs"]
    assert (runs[0]["archived"], runs[0]["duplicates"]) == (0, 3)  # same bytes: archived once only


def test_non_ascii_folder_names_work(run, mailbox):
    folder = "Verträge für Straße"
    mailbox.append([make_mail(50)], folder=folder)
    add_imap(run, mailbox, extra=["--folder", folder])
    result = run("import")
    assert result.exit_code == 0, result.output
    assert [d["folder"] for d in docs(run)] == [folder]


def test_wrong_password_names_the_account_and_other_accounts_still_run(run, mailbox, dovecot):
    mailbox.append([make_mail(60)])
    add_imap(run, mailbox, name="good")
    add_imap(run, mailbox, name="badpw", password="wrong")
    result = run("import")
    assert result.exit_code == 1
    assert "Account badpw" in result.output and "rejected the login" in result.output
    assert "Check the user name and password" in result.output
    assert "wrong" not in result.output.replace("wrong)", "")
    assert len(docs(run)) == 1


def test_all_accounts_unreachable_exits_3(run, mailbox):
    add_imap(run, mailbox, name="badpw", password="wrong")
    result = run("import")
    assert result.exit_code == 3


def test_untrusted_certificate_is_refused_by_default(run, mailbox):
    add_imap(run, mailbox, ca=False)
    result = run("account", "test", "acct")
    assert result.exit_code == 3
    assert "not trusted" in result.output and "--ca-file" in result.output


def test_a_closed_port_is_explained(run, mailbox):
    add_imap(run, mailbox, name="closed", port=1)
    result = run("account", "test", "closed")
    assert result.exit_code == 3 and "refused the connection" in result.output


def test_an_unknown_host_is_explained():
    """The adapter's translation of a failed name lookup (no lookup is made: tests stay on 127.0.0.1)."""
    import socket

    from archivista_mail.accounts import Account
    from archivista_mail.errors import ConnectError
    from archivista_mail.sources.mailserver import translated

    acc = Account(name="nohost", kind="imap", settings={"host": "imap.example.invalid", "port": 993,
                                                         "security": "ssl", "user": "u"})
    with pytest.raises(ConnectError) as e:
        with translated(acc, "connecting", 5):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert "Account nohost: the server name 'imap.example.invalid' cannot be resolved" in str(e.value)
    assert "Check the host name" in str(e.value)


def test_missing_folder_is_named_with_the_folders_that_exist_and_the_other_folders_are_still_tested(run, mailbox):
    mailbox.append([make_mail(70)])
    add_imap(run, mailbox, extra=["--folder", "Nope", "--folder", "INBOX"])
    result = run("account", "test", "acct")
    assert result.exit_code == 1, result.output
    assert "'Nope' does not exist" in result.output and "Folders there: INBOX" in result.output
    assert "INBOX: 1 message\n" in result.output


def test_account_test_reports_folders_and_counts(run, mailbox):
    mailbox.append([make_mail(80), make_mail(81)])
    add_imap(run, mailbox)
    result = run("account", "test", "acct")
    assert result.exit_code == 0, result.output
    assert "login ok" in result.output and "INBOX: 2 messages" in result.output


def test_a_message_that_fails_is_recorded_with_its_reason_and_retried_next_run(run, mailbox, monkeypatch):
    import archivista_mail.pipeline as pipeline

    mailbox.append([make_mail(i) for i in range(90, 93)])
    add_imap(run, mailbox, extra=["--after", "delete"])
    real_prepare = pipeline.prepare

    def failing_prepare(raw, rules=()):  # our own seam: the stage after the source
        if b"<gen-91@" in raw.raw:
            raise RuntimeError("simulated planner bug")
        return real_prepare(raw, rules)

    monkeypatch.setattr(pipeline, "prepare", failing_prepare)
    result = run("import")
    assert result.exit_code == 1
    assert "simulated planner bug" in result.output
    state = json.loads(run("runs", "--json").output)
    assert [f["reason"] for f in state["failures"]] == ["RuntimeError: simulated planner bug"]
    assert [raw for raw, _ in mailbox.messages().values()] == [make_mail(91)]  # not deleted: not archived

    monkeypatch.setattr(pipeline, "prepare", real_prepare)
    result = run("import")
    assert result.exit_code == 0, result.output
    state = json.loads(run("runs", "--json").output)
    assert state["failures"] == [] and state["runs"][0]["archived"] == 1
    assert mailbox.messages() == {}
    assert sorted(d["message_id"] for d in docs(run)) == [f"gen-{i}@example.com" for i in range(90, 93)]


def test_first_import_of_thousands_of_mails_splits_long_uid_lists(run, mailbox):
    mailbox.append([make_mail(i, body_words=5) for i in range(100_000, 102_500)])  # > 2,000 UIDs per command
    add_imap(run, mailbox, extra=["--after", "read"])
    result = run("import")
    assert result.exit_code == 0, result.output
    runs = json.loads(run("runs", "--json").output)["runs"]
    assert (runs[0]["fetched"], runs[0]["archived"]) == (2500, 2500)
    assert all(b"\\Seen" in flags for _, flags in mailbox.messages().values())


def test_an_empty_search_is_a_usage_error(run):
    result = run("docs", "search", "  ")
    assert result.exit_code == 2 and "at least one word" in result.output


def test_a_terminal_gets_a_progress_bar_for_imap(mailbox, data_dir, run):
    mailbox.append([make_mail(i) for i in range(700, 705)])
    add_imap(run, mailbox)
    code, shown = run_on_terminal(data_dir, "import")
    assert code == 0
    assert b"[##############################] 5/5 mails" in shown


def test_a_missing_folder_is_reported_and_the_accounts_other_folders_still_run(run, mailbox):
    mailbox.append([make_mail(800)])
    add_imap(run, mailbox, extra=["--folder", "Gone", "--folder", "INBOX"])
    result = run("import")
    assert result.exit_code == 1
    assert "'Gone' does not exist" in result.output
    assert [d["message_id"] for d in docs(run)] == ["gen-800@example.com"]
