"""Exactly-once under faults, proven by doing them: SIGKILL mid-import, a connection cut
mid-fetch, a UIDVALIDITY reset, two imports at once. The server is Dovecot; the importer is
the real command in its own process."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest
from conftest import PASSWORD
from mailfactory import make_mail
from servers import CuttingProxy


def cli_process(data_dir, *args) -> subprocess.Popen:
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    return subprocess.Popen([sys.executable, "-m", "archivista_mail", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def archived_mail_hashes(data_dir) -> list[str]:
    """sha256 of every top-level mail document, read straight from the database (committed state)."""
    if not (data_dir / "archive.db").exists():
        return []
    with closing(sqlite3.connect(f"file:{data_dir}/archive.db?mode=ro", uri=True)) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name='documents'").fetchone():
            return []  # the first run was killed before its schema transaction committed
        return [r[0] for r in db.execute("SELECT sha256 FROM documents WHERE kind='mail' AND parent IS NULL")]


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def add_account(run, box, *extra, port=None, security="ssl"):
    result = run("account", "add", "imap", "acct", "--host", "127.0.0.1",
                 "--port", str(port or box.server.ports["imaps"]), "--security", security, "--user", box.user,
                 "--password-stdin", "--ca-file", str(box.server.cert), *extra, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output


def server_hashes(box, *folders) -> dict[str, list[str]]:
    return {f: [sha(raw) for raw, _ in box.messages(f).values()] for f in folders}


@pytest.mark.parametrize("after", ["move:Archived", "delete"])
def test_sigkill_at_random_points_then_rerun_archives_every_mail_exactly_once(run, mailbox, data_dir, after):
    originals = [make_mail(i, body_words=400) for i in range(1000)]
    mailbox.append(originals)
    add_account(run, mailbox, "--after", after)
    all_hashes = {sha(m) for m in originals}
    rng = random.Random(after)
    kills = 0
    for _ in range(40):
        # Kill at a random point: once a random number of further mails is committed, plus a random
        # few milliseconds, so kills land mid-fetch, mid-commit and between commit and server action.
        target = len(archived_mail_hashes(data_dir)) + rng.randint(0, 150)
        proc = cli_process(data_dir, "import", "--no-extract")
        while proc.poll() is None and len(archived_mail_hashes(data_dir)) < target:
            time.sleep(0.003)
        time.sleep(rng.uniform(0, 0.03))
        if proc.poll() is not None:
            proc.communicate()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.communicate()
        kills += 1
        # Invariant after every kill: whatever left the inbox has a durable archive copy.
        archived = set(archived_mail_hashes(data_dir))
        left_inbox = all_hashes - set(server_hashes(mailbox, "INBOX")["INBOX"])
        assert left_inbox <= archived, f"{len(left_inbox - archived)} mails left the inbox unarchived"
    assert kills >= 5, "the importer finished before it could be killed often enough"
    final = cli_process(data_dir, "import", "--no-extract")
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err

    hashes = archived_mail_hashes(data_dir)
    assert len(hashes) == len(set(hashes)) == 1000  # nothing twice
    assert set(hashes) == all_hashes  # nothing lost
    assert server_hashes(mailbox, "INBOX")["INBOX"] == []
    if after.startswith("move:"):
        assert set(server_hashes(mailbox, "Archived")["Archived"]) == all_hashes
    with closing(sqlite3.connect(data_dir / "archive.db")) as db:
        assert db.execute("SELECT count(*) FROM actions").fetchone()[0] == 0  # no server action left owed


def test_connection_cut_mid_fetch_loses_and_doubles_nothing(run, mailbox, data_dir):
    originals = [make_mail(i, body_words=1500) for i in range(2000, 2400)]  # about 10 KB each
    mailbox.append(originals)
    proxy = CuttingProxy(mailbox.server.ports["imaps"], cut_after=1_200_000)  # a batch is ~500 KB: each link dies in its third
    try:
        add_account(run, mailbox, "--after", "delete", port=proxy.port)
        results = []
        for _ in range(30):
            result = run("import", "--no-extract")
            results.append(result.exit_code)
            if result.exit_code == 0:
                break
            assert result.exit_code == 3
            assert "connection to 127.0.0.1" in result.output and "continues where this one stopped" in result.output
            archived = set(archived_mail_hashes(data_dir))
            left = {sha(m) for m in originals} - set(server_hashes(mailbox, "INBOX")["INBOX"])
            assert left <= archived
        assert proxy.cuts >= 3 and results[-1] == 0
    finally:
        proxy.close()
    hashes = archived_mail_hashes(data_dir)
    assert sorted(hashes) == sorted({sha(m) for m in originals})
    assert mailbox.messages() == {}


def test_uidvalidity_reset_rescans_without_duplicates_or_gaps(run, mailbox, data_dir):
    mailbox.append([make_mail(i) for i in range(3000, 3050)])
    add_account(run, mailbox)
    assert run("import").exit_code == 0
    mailbox.server.doveadm("mailbox", "update", "--uid-validity", "777", "-u", mailbox.user, "INBOX")
    mailbox.append([make_mail(i) for i in range(3050, 3055)])
    result = run("import")
    assert result.exit_code == 0, result.output
    assert "UIDVALIDITY" in result.output
    runs = json.loads(run("runs", "--json").output)["runs"]
    assert (runs[0]["archived"], runs[0]["duplicates"]) == (5, 50)
    hashes = archived_mail_hashes(data_dir)
    assert len(hashes) == len(set(hashes)) == 55
    again = run("import")
    runs = json.loads(run("runs", "--json").output)["runs"]
    assert again.exit_code == 0 and runs[0]["fetched"] == 0  # the new cursor holds


def test_two_imports_started_at_once_archive_each_mail_once(run, mailbox, data_dir):
    originals = [make_mail(i) for i in range(4000, 4300)]
    mailbox.append(originals)
    add_account(run, mailbox, "--after", "read")
    procs = [cli_process(data_dir, "import", "--no-extract") for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    said = [out for out, _ in outputs if "Another import is running" in out]
    assert len(said) == 1  # the second found the lock held and did nothing
    hashes = archived_mail_hashes(data_dir)
    assert sorted(hashes) == sorted(sha(m) for m in originals)


def test_extraction_killed_midway_resumes_where_it_stopped(run, mailbox, data_dir):
    mailbox.append([make_mail(i, attachment="pdf", secret_word=f"kiwi{i}") for i in range(5000, 5200)])
    add_account(run, mailbox)
    assert run("import", "--no-extract").exit_code == 0

    def pending() -> int:
        with closing(sqlite3.connect(data_dir / "archive.db")) as db:
            return db.execute("SELECT count(*) FROM documents WHERE text_status='pending'").fetchone()[0]

    assert pending() == 200

    proc = cli_process(data_dir, "extract")
    while proc.poll() is None and pending() == 200:  # kill once the first chunk is committed
        time.sleep(0.003)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert 0 < pending() < 200, "the kill did not land mid-way"
    result = run("extract")
    assert result.exit_code == 0, result.output
    with closing(sqlite3.connect(data_dir / "archive.db")) as db:
        statuses = dict(db.execute("SELECT text_status, count(*) FROM documents WHERE kind='attachment' GROUP BY 1"))
    assert statuses == {"done": 200}
    hits = json.loads(run("docs", "search", "kiwi5123", "--json").output)
    assert [h["filename"] for h in hits if h["kind"] == "attachment"] == ["report-5123.pdf"]
