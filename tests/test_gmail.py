"""Google Workspace: the real google-auth and google-api-python-client against the Gmail API emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from archived import archived_count, archived_hashes, docs, kept, last_run, sha
from gmail_emulator import SCOPE_FULL, SCOPE_MODIFY, SCOPE_READONLY
from mailfactory import make_mail

from archivista_mail.sources.gmail import QuotaWindow

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_gmail_mail_is_archived_byte_for_byte_and_searchable(run, workspace, tmp_path):
    mails = [make_mail(i, attachment="pdf" if i == 1 else None, secret_word="quokka") for i in range(3)]
    workspace.deliver(mails)
    workspace.add_account(run)
    result = run("import")
    assert result.exit_code == 0, result.output
    found = docs(run, "--kind", "mail")
    stored = set()
    for doc in found:
        run("docs", "get", str(doc["number"]), "-o", str(tmp_path / "m.eml"))
        stored.add((tmp_path / "m.eml").read_bytes())
    assert stored == set(mails)
    assert {d["folder"] for d in found} == {f"{workspace.mailbox}/INBOX"}
    hits = json.loads(run("docs", "search", "quokka", "--json").output)
    assert {h["kind"] for h in hits} == {"mail", "attachment"}
    assert all("UNREAD" in m.label_ids for m in workspace.box.messages.values())  # --after none changes nothing


def test_later_runs_read_only_the_history_since_the_cursor(run, workspace, gmail_server):
    workspace.deliver([make_mail(i) for i in range(10, 100)])
    workspace.add_account(run)
    assert run("import").exit_code == 0
    assert last_run(run)["archived"] == 90
    gmail_server.reset_stats()
    assert run("import").exit_code == 0
    assert last_run(run)["fetched"] == 0
    paths = [r[1] for r in gmail_server.requests]
    assert any("/history" in p for p in paths) and not any("/messages/" in p for p in paths)
    workspace.deliver([make_mail(i) for i in range(100, 103)])
    workspace.deliver([make_mail(103)], labels=("SENT",))  # another label: not this folder
    assert run("import").exit_code == 0
    assert (last_run(run)["fetched"], last_run(run)["archived"]) == (3, 3)


def test_labels_by_their_names_nested_ones_included_and_an_unknown_one_fails_alone(run, workspace):
    workspace.server.add_label(workspace.mailbox, "Kunden/Müller")
    workspace.deliver([make_mail(200)], labels=("INBOX",))
    workspace.deliver([make_mail(201)], labels=("Kunden/Müller",))
    workspace.add_account(run, "--label", "INBOX", "--label", "Kunden/Müller", "--label", "Lieferanten")
    result = run("import")
    assert result.exit_code == 1
    assert "has no label 'Lieferanten'" in result.output and "Kunden/Müller" in result.output
    assert {d["folder"] for d in docs(run, "--kind", "mail")} == {f"{workspace.mailbox}/INBOX",
                                                                   f"{workspace.mailbox}/Kunden/Müller"}


@pytest.mark.parametrize("after,scope,check", [
    ("read", SCOPE_MODIFY, lambda m, box: "UNREAD" not in m.label_ids and "INBOX" in m.label_ids),
    ("label:Archiviert", SCOPE_MODIFY, lambda m, box: box.label("Archiviert").id in m.label_ids),
    ("trash", SCOPE_MODIFY, lambda m, box: "TRASH" in m.label_ids and "INBOX" not in m.label_ids),
])
def test_after_archive_actions_change_the_mail_only_after_its_commit(run, workspace, after, scope, check):
    workspace.authorize(scope)
    ids = workspace.deliver([make_mail(i) for i in range(300, 345)])
    workspace.add_account(run, "--after", after)
    result = run("import")
    assert result.exit_code == 0, result.output
    box = workspace.box
    assert all(check(box.messages[i], box) for i in ids)
    assert len(docs(run, "--kind", "mail")) == 45


def test_delete_needs_the_full_scope_and_then_deletes_for_good(run, workspace):
    workspace.authorize(SCOPE_MODIFY)  # not https://mail.google.com/
    workspace.deliver([make_mail(i) for i in range(350, 353)])
    workspace.add_account(run, "--after", "delete")
    result = run("import")
    assert result.exit_code == 3
    assert "unauthorized_client" in result.output and SCOPE_FULL in result.output
    assert workspace.client_id in result.output
    assert len(workspace.box.messages) == 3
    workspace.authorize(SCOPE_FULL)
    assert run("import").exit_code == 0
    assert not workspace.box.messages and len(docs(run, "--kind", "mail")) == 3


def test_usual_set_up_mistakes_are_explained(run, workspace, gmail_server):
    workspace.deliver([make_mail(360)])
    workspace.authorize()  # no delegation at all
    workspace.add_account(run)
    result = run("account", "test", "workspace")
    assert result.exit_code != 0
    assert "domain-wide delegation" in result.output and SCOPE_READONLY in result.output
    workspace.authorize(SCOPE_READONLY)
    gmail_server.api_disabled = True
    result = run("import")
    assert result.exit_code == 3
    assert "Gmail API is not enabled" in result.output and "Enable the Gmail API" in result.output
    gmail_server.api_disabled = False
    workspace.add_account(run, name="stranger", mailbox=f"nobody@{workspace.mailbox.split('@')[1]}")
    result = run("import", "--account", "stranger")
    assert result.exit_code == 1 and "does not know the mailbox nobody@" in result.output


def test_a_file_that_is_not_a_service_account_key_is_refused(run, workspace, tmp_path):
    bad = tmp_path / "client_secret.json"
    bad.write_text(json.dumps({"installed": {"client_id": "x", "client_secret": "y"}}))
    result = run("account", "add", "gmail", "oauth", "--service-account-file", str(bad), "--mailbox",
                 workspace.mailbox)
    assert result.exit_code != 0
    assert "not a service account's JSON key file" in result.output
    assert "oauth" not in run("account", "list").output


def test_the_key_is_stored_encrypted_and_never_shown_or_logged(run, workspace, data_dir, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    workspace.deliver([make_mail(370)])
    workspace.add_account(run)
    assert run("import").exit_code == 0
    key = workspace.info["private_key"]
    marker = key.splitlines()[5]  # a line of the key itself
    shown = run("account", "list", "--json").output + run("account", "list").output + run("runs").output
    assert marker not in shown and "private_key" not in shown
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path
    tokens = list(workspace.server.tokens)
    assert tokens and not any(token in caplog.text for token in tokens)
    assert marker not in caplog.text and "Bearer" not in caplog.text


def test_an_expired_history_id_lists_the_label_again_without_duplicates(run, workspace, gmail_server):
    workspace.deliver([make_mail(i) for i in range(400, 420)])
    workspace.add_account(run)
    assert run("import").exit_code == 0
    workspace.deliver([make_mail(i) for i in range(420, 425)])
    gmail_server.expire_history(workspace.mailbox)
    result = run("import")
    assert result.exit_code == 0, result.output
    summary = last_run(run)
    assert summary["archived"] == 5 and summary["fetched"] == 5  # the 20 archived ones are not fetched again
    assert "read again" in " ".join(summary["errors"])
    assert len(docs(run, "--kind", "mail")) == 25


def test_a_throttling_storm_loses_and_doubles_nothing(run, workspace, gmail_server):
    mails = [make_mail(i) for i in range(500, 620)]
    workspace.deliver(mails)
    workspace.add_account(run)
    gmail_server.throttle = 0.3  # 429 and 403 userRateLimitExceeded, batch parts included
    result = run("import")
    gmail_server.throttle = 0.0
    assert result.exit_code == 0, result.output
    assert gmail_server.throttled > 10
    assert archived_hashes(run) == sorted(sha(m) for m in mails)


def test_the_import_stays_within_the_per_user_quota(run, workspace, gmail_server):
    workspace.authorize(SCOPE_MODIFY)
    workspace.deliver([make_mail(i) for i in range(700, 1000)])
    workspace.add_account(run, "--after", "read")
    gmail_server.reset_stats()
    assert run("import").exit_code == 0
    assert len(docs(run, "--kind", "mail")) == 300
    assert gmail_server.over_quota == 0
    assert 0 < gmail_server.max_units_per_second[workspace.mailbox] <= 250
    assert max(gmail_server.batch_sizes) > 1  # HTTP batch requests, not one request per message


def test_the_quota_window_waits_for_the_units_of_the_last_second():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    window = QuotaWindow(limit=200, span=1.2, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        window.take(50)
        now[0] += 0.1
    assert slept == []
    window.take(50)  # waits until the first 50 units are 1.2 s old
    assert now[0] == pytest.approx(1.2)
    window.take(120)  # waits for the next three
    assert now[0] == pytest.approx(1.5)
    assert sum(units for when, units in window.sent if when > now[0] - 1.2) <= 200


def test_mailboxes_are_archived_side_by_side_each_exactly_once(run, workspace, gmail_server):
    others = [workspace.add_mailbox(f"team{i}") for i in range(3)]
    sent = {}
    for n, box in enumerate([workspace.mailbox, *others]):
        mails = [make_mail(2000 + 100 * n + i) for i in range(40)]
        workspace.deliver(mails, mailbox=box)
        sent[box] = mails
    gmail_server.latency = 0.02
    args = [a for box in others for a in ("--mailbox", box)]
    workspace.add_account(run, *args)
    result = run("import")
    gmail_server.latency = 0.0
    assert result.exit_code == 0, result.output
    found = docs(run, "--kind", "mail")
    for box, mails in sent.items():
        assert sorted(d["sha256"] for d in found if d["folder"] == f"{box}/INBOX") == sorted(sha(m) for m in mails)
    assert last_run(run)["archived"] == 160


def test_importer_killed_at_random_points_then_rerun_archives_each_mail_once(workspace, gmail_server, data_dir,
                                                                              run):
    import random

    workspace.authorize(SCOPE_MODIFY)
    mails = [make_mail(i) for i in range(3000, 3240)]
    workspace.deliver(mails)
    workspace.add_account(run, "--after", "trash")
    gmail_server.latency = 0.01
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    rng = random.Random(11)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "archivista_mail", "import"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = archived_count(data_dir) + rng.randrange(10, 60)
        while proc.poll() is None and archived_count(data_dir) < target:
            time.sleep(0.003)
        time.sleep(rng.random() * 0.05)  # somewhere between a commit and the next
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        trashed = {sha(m.raw) for m in workspace.box.messages.values() if "TRASH" in m.label_ids}
        assert trashed <= kept(data_dir)  # nothing left the inbox without its archive copy
    assert kills >= 2
    final = subprocess.run([sys.executable, "-m", "archivista_mail", "import"], env=env, capture_output=True,
                           text=True, timeout=180)
    gmail_server.latency = 0.0
    assert final.returncode == 0, final.stderr
    assert archived_hashes(run) == sorted(sha(m) for m in mails)
    assert not workspace.labelled("INBOX")  # every owed action was carried out


def test_dropped_connections_are_replaced_and_each_mail_archived_once(run, workspace, gmail_server):
    mails = [make_mail(i) for i in range(3300, 3400)]
    workspace.deliver(mails)
    workspace.add_account(run)
    gmail_server.drop_connection_after = 4  # mid-response, in the middle of the batches
    result = run("import")
    assert gmail_server.drop_connection_after is None  # it happened
    assert result.exit_code == 0, result.output
    assert archived_hashes(run) == sorted(sha(m) for m in mails)
    more = [make_mail(i) for i in range(3400, 3410)]
    workspace.deliver(more)
    gmail_server.drop_connection_after = 0  # the history request itself
    assert run("import").exit_code == 0
    assert archived_hashes(run) == sorted(sha(m) for m in mails + more)


def test_two_runs_at_once_archive_each_mail_once(workspace, gmail_server, data_dir, run):
    mails = [make_mail(i) for i in range(3500, 3620)]
    workspace.deliver(mails)
    workspace.add_account(run)
    gmail_server.latency = 0.01
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    procs = [subprocess.Popen([sys.executable, "-m", "archivista_mail", "import"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [p.communicate(timeout=180) for p in procs]
    gmail_server.latency = 0.0
    assert sorted(p.returncode for p in procs) in ([0, 0], [0, 2]), outcomes  # 2: another import is running
    assert run("import").exit_code == 0
    assert archived_hashes(run) == sorted(sha(m) for m in mails)


def test_account_test_and_mailtest_show_the_inbox_and_never_the_key(run, workspace, data_dir):
    workspace.deliver([make_mail(3700)], labels=("INBOX",))
    workspace.deliver([b"Subject: =?utf-8?q?Rechnung_2024-117_f=C3=BCr_Beratung?=\r\nFrom: a@example.com\r\n\r\n"
                       b"Hallo\r\n"])
    workspace.add_account(run)
    result = run("account", "test", "workspace")
    assert result.exit_code == 0, result.output
    assert f"{workspace.mailbox}/INBOX" in result.output and "2 messages" in result.output
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    proc = subprocess.run([sys.executable, str(SCRIPTS / "mailtest.py")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "Authenticated!" in lines
    assert f"Mailbox: {workspace.mailbox}" in lines
    assert "Inbox: INBOX (2 messages, 1 unread)" in lines
    assert "First message: Rechnung 2024-117 für Beratung" in lines
    marker = workspace.info["private_key"].splitlines()[5]
    assert marker not in proc.stdout + proc.stderr + result.output
    given = subprocess.run([sys.executable, str(SCRIPTS / "mailtest.py"), "--kind", "gmail",
                            "--service-account-file", str(workspace.key_file), "--mailbox", workspace.mailbox],
                           env=env, capture_output=True, text=True, timeout=60)
    assert given.returncode == 0, given.stderr
    assert "Authenticated!" in given.stdout and "First message: Rechnung 2024-117 für Beratung" in given.stdout


def test_google_out_of_reach_through_the_proxy_is_a_sentence_not_a_crash(run, workspace):
    """A proxy that cannot reach Google answers CONNECT with 502; PySocks raises its own error for that."""
    workspace.authorize(SCOPE_MODIFY, SCOPE_READONLY)
    workspace.add_account(run)
    workspace.deliver([make_mail(1)])
    workspace.server.set_outage(True)
    try:
        result = run("import")
    finally:
        workspace.server.set_outage(False)
    assert result.exit_code == 3, result.output  # unreachable, not "unexpected" (4)
    assert "Account workspace: Google's login service cannot be reached (Socket error: 502: Bad Gateway)" in \
        result.output and "Check the network, proxy and firewall" in result.output
    assert run("import").exit_code == 0
