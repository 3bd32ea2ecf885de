"""A source kind from outside archivista_mail, registered only through the entry point group
``archivista_mail.sources`` (tests/plugins: a package and its .dist-info): without any other change the CLI
offers it, WebAdmin shows a working form for it, account test and mailtest.py probe it, and the import
archives from it exactly once through kill -9 and a rerun."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from archived import archived_count
from mailfactory import make_mail
from test_webadmin import csrf, login

from archivista_mail.config import Config
from archivista_mail.sources import forget_installed
from webadmin import create_app

PLUGINS = Path(__file__).parent / "plugins" / "dirsource"
TOKEN = "dir-token-123"
MAILTEST = Path(__file__).parent.parent / "scripts" / "mailtest.py"


@pytest.fixture
def plugin(monkeypatch):
    """The plugin installed for this process (and, through PYTHONPATH, for the processes it starts)."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
    forget_installed()
    yield
    forget_installed()


@pytest.fixture
def mails(tmp_path) -> Path:
    directory = tmp_path / "maildir"
    directory.mkdir()
    (directory / ".token").write_text(TOKEN)
    for i in range(7):
        (directory / f"{i:04d}.eml").write_bytes(make_mail(700 + i))
    return directory


def add(run, directory, *extra, name="dirs"):
    result = run("account", "add", "dirsource", name, "--directory", str(directory), "--token-stdin", *extra,
                 input=TOKEN + "\n")
    assert result.exit_code == 0, result.output
    return result


def archived(data_dir) -> list[str]:
    import sqlite3

    with sqlite3.connect(data_dir / "archive.db") as db:
        return [r[0] for r in db.execute("SELECT sha256 FROM documents WHERE kind='mail' AND parent IS NULL")]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_cli_offers_the_plugins_kind_with_its_declared_options(plugin, run, mails):
    assert "dirsource" in run("account", "add", "--help").output
    shown = run("account", "add", "dirsource", "--help").output
    assert "--directory TEXT" in shown and "--token-stdin" in shown and "--batch INTEGER" in shown
    assert "The directory holding the .eml files." in shown
    add(run, mails, "--after", "move:done")
    listed = json.loads(run("account", "list", "--json").output)
    assert listed == [{"name": "dirs", "kind": "dirsource", "directory": str(mails), "batch": 3,
                       "after": "move:done", "enabled": True, "token": "********"}]
    assert run("account", "add", "dirsource", "bad", "--directory", str(mails), "--after", "read", "--token-stdin",
               input=TOKEN + "\n").exit_code == 2  # not one of its declared actions


def test_account_test_and_mailtest_probe_it(plugin, run, mails, data_dir):
    add(run, mails)
    result = run("account", "test", "dirs")
    assert result.exit_code == 0, result.output
    assert "inbox: 7 messages" in result.output
    done = subprocess.run([sys.executable, str(MAILTEST), "--data-dir", str(data_dir), "--account", "dirs"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Authenticated!", f"Mailbox: {mails}", "Inbox: inbox (7 messages)",
                                        "First message: " + re.search(r"Subject: (.*)\r", make_mail(700).decode())[1]]
    wrong = subprocess.run([sys.executable, str(MAILTEST), "--directory", str(mails), "--token-stdin"],
                           input="wrong\n", capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "the token is wrong" in wrong.stderr


def test_webadmin_shows_a_working_page_and_form_for_it(plugin, run, mails, data_dir):
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    client = create_app(Config(data_dir=data_dir)).test_client()
    assert login(client, "anna", "anna-password").status_code == 302
    menu = client.get("/documents").data.decode()
    assert "Mail-Verzeichnisse" in menu  # its page, under the title it declares
    form = client.get("/accounts/new?kind=dirsource").data.decode()
    assert 'name="directory"' in form and 'name="token" type="password"' in form and "Dateien pro Stapel" in form
    response = client.post("/accounts/new?kind=dirsource", data={
        "csrf_token": csrf(form.encode()), "name": "web", "directory": str(mails), "token": TOKEN, "batch": "2",
        "after": "delete"})
    assert response.status_code == 302, response.data.decode()
    assert response.headers["Location"] == "/sources/directories/"
    page = client.get("/sources/directories/").data.decode()
    assert "web" in page and str(mails) in page
    tested = client.post("/accounts/web/test", data={"csrf_token": csrf(page.encode())}).data.decode()
    assert 'class="ok" id="test-result"' in tested and "inbox: 7" in tested
    assert run("import").exit_code == 0
    assert len(archived(data_dir)) == 7 and list(mails.glob("*.eml")) == []


def test_import_archives_it_exactly_once_through_kill_9_and_a_rerun(plugin, run, tmp_path, data_dir):
    directory = tmp_path / "many"
    directory.mkdir()
    (directory / ".token").write_text(TOKEN)
    sent = {}
    for i in range(120):
        raw = make_mail(800 + i)
        (directory / f"{i:04d}.eml").write_bytes(raw)
        sent[f"{i:04d}.eml"] = sha(raw)
    add(run, directory, "--after", "delete", "--batch", "4")
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir), DIRSOURCE_DELAY="0.004")
    rng = random.Random(7)
    midway = 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-m", "archivista_mail", "import", "--no-extract"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill it a random number of mails into its run (however slowly the machine starts it).
        target = archived_count(data_dir) + rng.randrange(1, 25)
        deadline = time.monotonic() + 60
        while proc.poll() is None and archived_count(data_dir) < target and time.monotonic() < deadline:
            time.sleep(0.003)
        time.sleep(rng.uniform(0, 0.05))  # somewhere between a commit and the next
        proc.send_signal(signal.SIGKILL)  # only the import we started
        proc.wait()
        left = {p.name for p in directory.glob("*.eml")}
        have = set(archived(data_dir))
        assert all(sent[name] in have for name in sent if name not in left), "a file left before it was archived"
        midway += 0 < len(have) < len(sent)
    assert midway, "no kill fell inside an import: the test proved nothing"
    result = subprocess.run([sys.executable, "-m", "archivista_mail", "import", "--no-extract"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(archived(data_dir)) == sorted(sent.values())  # each exactly once
    assert list(directory.glob("*.eml")) == []


def test_the_built_in_kinds_are_registered_under_the_entry_point_group_as_found_without_it():
    from importlib.metadata import entry_points

    from archivista_mail.sources import BUILT_IN, GROUP

    ours = {ep.name: ep.value for ep in entry_points(group=GROUP) if ep.value.startswith("archivista_mail.")}
    assert ours == BUILT_IN
