"""scripts/mailtest.py, run as an installer would: python3 mailtest.py from its directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import PASSWORD
from mailfactory import make_mail

SCRIPTS = Path(__file__).parent.parent / "scripts"


def mailtest(*args, env=None, input=None):
    return subprocess.run([sys.executable, "mailtest.py", *args], cwd=SCRIPTS, capture_output=True, text=True,
                          env=env or dict(os.environ), input=input, timeout=60)


def test_mailtest_with_o365_settings_prints_the_inbox_and_first_subject(tenant, data_dir, run):
    tenant.deliver([make_mail(900), make_mail(901)])
    tenant.add_account(run)
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    result = mailtest(env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Authenticated!"
    assert lines[1] == f"Mailbox: {tenant.mailbox}"
    assert lines[2] == "Inbox: Inbox (2 messages, 2 unread)"
    assert lines[3].startswith("First message: Test mail 901")  # Graph lists the newest first
    assert tenant.secret not in result.stdout + result.stderr


def test_mailtest_with_arguments_and_a_wrong_secret_fails_with_a_sentence(tenant):
    result = mailtest("--tenant", tenant.tenant, "--client-id", tenant.client_id, "--mailbox", tenant.mailbox,
                      "--client-secret-stdin", input="not-the-secret\n")
    assert result.returncode == 1
    assert "client secret is wrong" in result.stderr and "not-the-secret" not in result.stderr + result.stdout


def test_mailtest_speaks_imap_too(mailbox, data_dir, run):
    mailbox.append([make_mail(910)])
    assert run("account", "add", "imap", "box", "--host", "127.0.0.1", "--port", str(mailbox.server.ports["imaps"]),
               "--user", mailbox.user, "--password-stdin", "--ca-file", str(mailbox.server.cert),
               input=PASSWORD + "\n").exit_code == 0
    result = mailtest("--data-dir", str(data_dir), "--account", "box")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "Authenticated!"
    assert "Inbox: INBOX (1 message)" in result.stdout and "First message: Test mail 910" in result.stdout


def test_mailtest_without_settings_says_what_to_give(tmp_path):
    result = mailtest("--data-dir", str(tmp_path / "empty"))
    assert result.returncode == 2 and "--tenant" in result.stderr
