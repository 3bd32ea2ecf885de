"""Exchange on-premises: the real exchangelib (NTLM through pyspnego, Basic) against the EWS emulator."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from archived import archived_count, archived_hashes, docs, last_run, sha
from mailfactory import make_mail

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_ews_mail_is_archived_byte_for_byte_over_ntlm_by_impersonation(run, exchange, tmp_path):
    mails = [make_mail(i, attachment="pdf" if i == 1 else None, secret_word="wombat") for i in range(3)]
    exchange.deliver(mails)
    exchange.add_account(run)
    result = run("import")
    assert result.exit_code == 0, result.output
    found = docs(run, "--kind", "mail")
    stored = set()
    for doc in found:
        run("docs", "get", str(doc["number"]), "-o", str(tmp_path / "m.eml"))
        stored.add((tmp_path / "m.eml").read_bytes())
    assert stored == set(mails)
    assert {d["folder"] for d in found} == {f"{exchange.mailbox}/inbox"}
    hits = json.loads(run("docs", "search", "wombat", "--json").output)
    assert {h["kind"] for h in hits} == {"mail", "attachment"}
    assert set(exchange.server.auth_used) == {"ntlm"}
    assert {m for _, m in exchange.server.requests if m} == {exchange.mailbox}  # impersonated
    assert not any(i.is_read for i in exchange.items())  # --after none changes nothing


def test_later_runs_fetch_only_what_the_sync_state_says_is_new(run, exchange):
    exchange.deliver([make_mail(i) for i in range(10, 240)])
    exchange.add_account(run)
    assert run("import").exit_code == 0
    assert last_run(run)["archived"] == 230
    before = len(exchange.server.requests)
    assert run("import").exit_code == 0
    assert last_run(run)["fetched"] == 0
    assert "GetItem" not in [op for op, _ in exchange.server.requests[before:]]
    exchange.deliver([make_mail(i) for i in range(240, 243)])
    assert run("import").exit_code == 0
    assert (last_run(run)["fetched"], last_run(run)["archived"]) == (3, 3)


def test_folders_by_their_german_and_english_names_and_a_missing_one_fails_alone(run, exchange):
    exchange.server.add_folder(exchange.mailbox, "Posteingang/Kunden")
    exchange.deliver([make_mail(300)])
    exchange.deliver([make_mail(301)], folder="Posteingang/Kunden")
    exchange.deliver([make_mail(302)], folder="sentitems")
    exchange.add_account(run, "--folder", "Posteingang", "--folder", "Posteingang/Kunden", "--folder",
                         "Gesendete Elemente", "--folder", "Lieferanten")
    result = run("import")
    assert result.exit_code == 1
    assert "has no folder 'Lieferanten'" in result.output
    assert sorted(d["folder"].split("/", 1)[1] for d in docs(run, "--kind", "mail")) == \
        ["Gesendete Elemente", "Posteingang", "Posteingang/Kunden"]


@pytest.mark.parametrize("after,check", [
    ("read", lambda ex: all(i.is_read for i in ex.items()) and len(ex.items()) == 60),
    ("move:Archiviert", lambda ex: not ex.items() and len(ex.items("Archiviert")) == 60),
    ("delete", lambda ex: not ex.items() and len(ex.items("deleteditems")) == 60),
    ("delete-hard", lambda ex: not ex.items() and not ex.items("deleteditems")),
])
def test_after_archive_actions(run, exchange, after, check):
    exchange.deliver([make_mail(i) for i in range(400, 460)])
    exchange.add_account(run, "--after", after)
    result = run("import")
    assert result.exit_code == 0, result.output
    assert check(exchange)
    assert len(docs(run, "--kind", "mail")) == 60


def test_unread_only_skips_read_mail(run, exchange):
    exchange.deliver([make_mail(500)], is_read=True)
    exchange.deliver([make_mail(501)])
    exchange.add_account(run, "--unread-only")
    assert run("import").exit_code == 0
    assert [d["message_id"] for d in docs(run)] == ["gen-501@example.com"]


def test_basic_authentication(run, exchange):
    exchange.server.auth = {"basic"}
    exchange.deliver([make_mail(510)])
    exchange.add_account(run, "--auth", "basic")
    assert run("import").exit_code == 0
    assert set(exchange.server.auth_used) == {"basic"} and len(docs(run)) == 1


@pytest.mark.parametrize("case,words", [
    ("password", ["refused the login of EXAMPLE\\svc-archiv with NTLM", "(401)", "--auth basic"]),
    ("ntlm_not_offered", ["refused the login", "only accept basic authentication"]),
    ("impersonation", ["may not act for the mailbox anna@example.test", "ApplicationImpersonation"]),
    ("url", ["does not answer as Exchange Web Services", "/EWS/Exchange.asmx"]),
    ("certificate", ["is not trusted", "--ca-file"]),
])
def test_usual_set_up_mistakes_are_explained(run, exchange, tmp_path, case, words):
    exchange.deliver([make_mail(520)])
    if case == "password":
        exchange.add_account(run, password="wrong")
    elif case == "ntlm_not_offered":
        exchange.server.auth = {"basic"}
        exchange.add_account(run)
    elif case == "impersonation":
        exchange.server.grant_impersonation(exchange.SERVICE, [])
        exchange.add_account(run)
    elif case == "url":
        url = exchange.server.url.replace("/EWS/Exchange.asmx", "/owa/")
        result = run("account", "add", "ews", "exchange", "--url", url, "--user", exchange.SERVICE,
                     "--password-stdin", "--mailbox", exchange.mailbox, "--ca-file", str(exchange.server.ca_file),
                     input=exchange.PASSWORD + "\n")
        assert result.exit_code == 0, result.output
    else:
        result = run("account", "add", "ews", "exchange", "--url", exchange.server.url, "--user", exchange.SERVICE,
                     "--password-stdin", "--mailbox", exchange.mailbox, input=exchange.PASSWORD + "\n")
        assert result.exit_code == 0, result.output
    result = run("import")
    assert result.exit_code in (1, 3), result.output
    for word in words:
        assert word in result.output
    assert "Account exchange" in result.output
    assert exchange.PASSWORD not in result.output
    tested = run("account", "test", "exchange")
    assert tested.exit_code != 0 and words[0] in tested.output


def test_an_invalid_sync_state_reads_the_folder_again_without_duplicates(run, exchange):
    exchange.deliver([make_mail(i) for i in range(600, 620)])
    exchange.add_account(run)
    assert run("import").exit_code == 0
    exchange.deliver([make_mail(i) for i in range(620, 625)])
    exchange.server.invalidate_sync_states()
    result = run("import")
    assert result.exit_code == 0, result.output
    summary = last_run(run)
    assert summary["archived"] == 5 and summary["fetched"] == 5  # the 20 archived ones are not fetched again
    assert "read again" in " ".join(summary["errors"])
    assert len(docs(run, "--kind", "mail")) == 25


def test_server_busy_storms_are_waited_out_and_lose_and_double_nothing(run, exchange):
    mails = [make_mail(i) for i in range(700, 820)]
    exchange.deliver(mails)
    exchange.add_account(run, "--after", "read")
    exchange.server.server_busy, exchange.server.busy_backoff_ms = 0.3, 20
    result = run("import")
    exchange.server.server_busy = 0.0
    assert result.exit_code == 0, result.output
    assert archived_hashes(run) == sorted(sha(m) for m in mails)
    assert all(i.is_read for i in exchange.items())


def test_a_dropped_connection_is_replaced_and_each_mail_archived_once(run, exchange):
    mails = [make_mail(i) for i in range(900, 1000)]
    exchange.deliver(mails)
    exchange.add_account(run, "--after", "move:Archiviert")
    exchange.server.drop_connection_after = 6
    result = run("import")
    assert exchange.server.drop_connection_after is None  # it happened
    assert result.exit_code == 0, result.output
    assert archived_hashes(run) == sorted(sha(m) for m in mails)
    assert not exchange.items() and len(exchange.items("Archiviert")) == 100


def test_mailboxes_are_archived_side_by_side_each_exactly_once(run, exchange):
    others = [f"team{i}@example.test" for i in range(3)]
    sent = {exchange.mailbox: [make_mail(1100 + i) for i in range(50)]}
    for n, box in enumerate(others):
        exchange.server.add_mailbox(box)
        sent[box] = [make_mail(1200 + 100 * n + i) for i in range(50)]
    for box, mails in sent.items():
        exchange.deliver(mails, mailbox=box)
    exchange.server.latency = 0.01
    exchange.add_account(run, *[a for box in others for a in ("--mailbox", box)])
    result = run("import")
    exchange.server.latency = 0.0
    assert result.exit_code == 0, result.output
    found = docs(run, "--kind", "mail")
    for box, mails in sent.items():
        assert sorted(d["sha256"] for d in found if d["folder"] == f"{box}/inbox") == sorted(sha(m) for m in mails)
    assert max(exchange.server.max_concurrent.values()) >= 1


def test_importer_killed_at_random_points_then_rerun_archives_each_mail_once(exchange, data_dir, run):
    mails = [make_mail(i) for i in range(1500, 1800)]
    exchange.deliver(mails)
    exchange.add_account(run, "--after", "delete")
    exchange.server.latency = 0.005
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    rng = random.Random(5)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "archivista_mail", "import"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = archived_count(data_dir) + rng.randrange(20, 70)
        while proc.poll() is None and archived_count(data_dir) < target:
            time.sleep(0.003)
        time.sleep(rng.random() * 0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        deleted = {sha(i.mime) for i in exchange.items("deleteditems")}
        with closing(sqlite3.connect(data_dir / "archive.db")) as db:
            kept = {r[0] for r in db.execute("SELECT sha256 FROM documents WHERE parent IS NULL")}
        assert deleted <= kept  # nothing left the inbox without its archive copy
    assert kills >= 2
    final = subprocess.run([sys.executable, "-m", "archivista_mail", "import"], env=env, capture_output=True,
                           text=True, timeout=180)
    exchange.server.latency = 0.0
    assert final.returncode == 0, final.stderr
    assert archived_hashes(run) == sorted(sha(m) for m in mails)
    assert not exchange.items()  # every owed action was carried out


def test_two_runs_at_once_archive_each_mail_once(exchange, data_dir, run):
    mails = [make_mail(i) for i in range(2000, 2150)]
    exchange.deliver(mails)
    exchange.add_account(run)
    exchange.server.latency = 0.005
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    procs = [subprocess.Popen([sys.executable, "-m", "archivista_mail", "import"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [p.communicate(timeout=180) for p in procs]
    exchange.server.latency = 0.0
    assert sorted(p.returncode for p in procs) in ([0, 0], [0, 2]), outcomes
    assert run("import").exit_code == 0
    assert archived_hashes(run) == sorted(sha(m) for m in mails)


def test_account_test_and_mailtest_show_the_inbox_and_never_the_password(run, exchange, data_dir):
    exchange.deliver([b"Subject: =?utf-8?q?Rechnung_2024-117_f=C3=BCr_Beratung?=\r\nFrom: a@example.com\r\n\r\n"
                      b"Hallo\r\n"])
    exchange.deliver([make_mail(2200)], is_read=True)
    exchange.add_account(run, "--after", "move:Archiviert")
    result = run("account", "test", "exchange")
    assert result.exit_code == 0, result.output
    assert f"{exchange.mailbox}/inbox" in result.output and "2 messages" in result.output
    assert "Archiviert" in result.output
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    proc = subprocess.run([sys.executable, str(SCRIPTS / "mailtest.py")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "Authenticated!" in lines
    assert f"Mailbox: {exchange.mailbox}" in lines
    assert "Inbox: Posteingang (2 messages, 1 unread)" in lines
    assert "First message: Rechnung 2024-117 für Beratung" in lines
    assert exchange.PASSWORD not in proc.stdout + proc.stderr + result.output
    assert len(exchange.items()) == 2  # a test changes nothing


def test_the_password_is_stored_encrypted_and_never_shown_or_logged(run, exchange, data_dir, caplog):
    import logging

    caplog.set_level(logging.DEBUG)  # exchangelib logs requests at debug level
    exchange.deliver([make_mail(2300)])
    exchange.server.auth = {"basic"}  # the password itself crosses the wire (base64), not only an NTLM hash
    exchange.add_account(run, "--auth", "basic")
    assert run("import").exit_code == 0
    listed = json.loads(run("account", "list", "--json").output)[0]
    assert listed["password"] == "********"
    shown = run("account", "list").output + run("runs").output + run("account", "test", "exchange").output
    assert exchange.PASSWORD not in shown
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert exchange.PASSWORD.encode() not in path.read_bytes(), path
    import base64

    basic = base64.b64encode(f"{exchange.SERVICE}:{exchange.PASSWORD}".encode("latin-1")).decode()
    assert exchange.PASSWORD not in caplog.text and basic not in caplog.text


def test_without_mailboxes_the_users_own_mailbox_is_archived_without_impersonation(run, exchange):
    exchange.server.add_mailbox("Bert@example.test")
    exchange.server.add_user("Bert@example.test", "bert-Pa55", mailbox="Bert@example.test")
    exchange.deliver([make_mail(2400)], mailbox="Bert@example.test")
    result = run("account", "add", "ews", "own", "--url", exchange.server.url, "--user", "Bert@example.test",
                 "--password-stdin", "--ca-file", str(exchange.server.ca_file), input="bert-Pa55\n")
    assert result.exit_code == 0, result.output
    assert run("import").exit_code == 0
    assert [d["folder"] for d in docs(run)] == ["bert@example.test/inbox"]
    refused = run("account", "add", "ews", "nobody", "--url", exchange.server.url, "--user", "EXAMPLE\\bert",
                  "--password-stdin", input="x\n")
    assert refused.exit_code != 0 and "name the mailbox to archive with --mailbox" in refused.output
