"""A stored secret goes only to the endpoint it was entered for: WebAdmin, the CLI and mailtest.py.

A recording server stands in for the host an attacker (or a careless edit) points an account at;
it must never see a connection carrying a stored secret.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PASSWORD
from servers import RecordingServer
from test_webadmin import csrf, login

from archivista_mail.config import Config
from archivista_mail.state import State
from archivista_mail.vault import Vault
from webadmin import create_app

GRAPH_SECRET = "graph-secret-456"


@pytest.fixture
def recorder():
    server = RecordingServer()
    yield server
    server.close()


@pytest.fixture
def admin(run, data_dir, mailbox):
    """A WebAdmin admin session, an IMAP account on the test Dovecot and an Office 365 account."""
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    result = run("account", "add", "imap", "box", "--host", "127.0.0.1", "--port", str(mailbox.server.ports["imaps"]),
                 "--user", mailbox.user, "--password-stdin", "--ca-file", str(mailbox.server.cert),
                 input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert run("account", "add", "o365", "m365", "--tenant", "t", "--client-id", "c", "--client-secret-stdin",
               "--mailbox", "a@example.org", input=GRAPH_SECRET + "\n").exit_code == 0
    client = create_app(Config(data_dir=data_dir)).test_client()
    assert login(client, "anna", "anna-password").status_code == 302
    return client


def edit(client, name, **fields):
    token = csrf(client.get("/accounts/").data)
    form = {"csrf_token": token, "security": "plain", "user": "u", "password": "", "folders": "INBOX",
            "after": "none", **fields}
    return client.post(f"/accounts/{name}/edit", data=form)


def point_row_at(data_dir: Path, name: str, kind: str | None = None, **settings) -> None:
    """Change an account behind every form's back, as a bug or a tampered database would."""
    with sqlite3.connect(data_dir / "state.db") as db:
        stored = json.loads(db.execute("SELECT settings FROM accounts WHERE name=?", [name]).fetchone()[0])
        db.execute("UPDATE accounts SET settings=?, kind=coalesce(?, kind) WHERE name=?",
                   [json.dumps({**stored, **settings}), kind, name])


def test_webadmin_refuses_a_new_server_without_the_password_and_keeps_the_account(admin, data_dir, mailbox, recorder):
    before = State(data_dir).account("box")
    response = edit(admin, "box", host="127.0.0.1", port=str(recorder.port), user=mailbox.user)
    assert response.status_code == 400
    assert "geben Sie deshalb das Passwort bzw. Secret neu ein" in response.data.decode()  # WebAdmin's default: German
    assert State(data_dir).account("box") == before
    token = csrf(admin.get("/accounts/").data)
    page = admin.post("/accounts/box/test", data={"csrf_token": token}).data.decode()
    assert 'class="ok" id="test-result"' in page  # the stored account still works, on its own server
    assert recorder.connections == 0


def test_webadmin_cannot_turn_an_office_365_account_into_imap(admin, data_dir, recorder):
    before = State(data_dir).account("m365")
    response = edit(admin, "m365", kind="imap", host="127.0.0.1", port=str(recorder.port), user="c")
    assert response.status_code == 400  # the Office 365 form: its own fields are missing, the others ignored
    assert State(data_dir).account("m365") == before
    response = edit(admin, "m365", kind="imap", tenant="t2", client_id="c", mailboxes="a@example.org")
    assert response.status_code == 400
    assert "geben Sie deshalb das Passwort bzw. Secret neu ein" in response.data.decode()  # a new tenant
    assert State(data_dir).account("m365") == before
    assert recorder.connections == 0


def test_with_the_password_entered_again_the_changed_account_is_saved(admin, data_dir, mailbox):
    response = edit(admin, "box", host="localhost", port=str(mailbox.server.ports["imap"]), user=mailbox.user,
                    password=PASSWORD)
    assert response.status_code == 302
    acc = State(data_dir).account("box")
    assert (acc.host, acc.security) == ("localhost", "plain")
    assert Vault(data_dir / "secret.key").secret_of(acc) == PASSWORD


@pytest.mark.parametrize("change", [
    {"host": "127.0.0.1"}, {"user": "someone-else"}, {"security": "plain"}, {"kind": "pop3"},
])
def test_no_code_path_sends_a_stored_password_to_an_endpoint_it_was_not_entered_for(
        admin, run, data_dir, recorder, change):
    point_row_at(data_dir, "box", port=recorder.port, **change)
    result = run("account", "test", "box")
    assert result.exit_code == 1 and "entered for another server" in result.output
    result = run("import")
    assert result.exit_code != 0 and "entered for another server" in result.output
    token = csrf(admin.get("/accounts/").data)
    page = admin.post("/accounts/box/test", data={"csrf_token": token}).data.decode()
    assert "für einen anderen Server, Benutzer oder Tenant eingegeben" in page
    done = subprocess.run([sys.executable, str(Path(__file__).parent.parent / "scripts" / "mailtest.py"),
                           "--data-dir", str(data_dir), "--account", "box"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "entered for another server" in done.stderr
    assert recorder.connections == 0 and PASSWORD.encode() not in recorder.received


def test_an_office_365_secret_is_never_sent_as_an_imap_password(admin, run, data_dir, recorder):
    point_row_at(data_dir, "m365", kind="imap", host="127.0.0.1", port=recorder.port, security="plain", user="c")
    result = run("account", "test", "m365")
    assert "entered for another server" in result.output
    assert recorder.connections == 0 and GRAPH_SECRET.encode() not in recorder.received


def test_secrets_stored_before_binding_are_bound_to_their_account_on_first_use(run, data_dir, mailbox, recorder):
    assert run("account", "list").exit_code == 0  # creates the key and the schema
    legacy = Vault(data_dir / "secret.key")._key().encrypt(PASSWORD.encode()).decode()
    with sqlite3.connect(data_dir / "state.db") as db:
        db.execute("DELETE FROM settings WHERE key='secrets_bound_to_endpoints'")
        db.execute("INSERT INTO accounts (name, kind, host, port, security, username, secret, folders, unread_only, "
                   "after, ca_file, enabled) VALUES ('old', 'imap', '127.0.0.1', ?, 'ssl', ?, ?, '[\"INBOX\"]', 0, "
                   "'none', ?, 1)", [mailbox.server.ports["imaps"], mailbox.user, legacy, str(mailbox.server.cert)])
    result = run("account", "test", "old")
    assert result.exit_code == 0, result.output
    acc = State(data_dir).account("old")
    assert acc.secret != legacy and Vault(data_dir / "secret.key").is_bound(acc.secret)
    point_row_at(data_dir, "old", port=recorder.port)
    assert "entered for another server" in run("account", "test", "old").output
    assert recorder.connections == 0
    assert json.loads(run("account", "list", "--json").output)[0]["password"] == "********"


def test_webadmin_takes_a_ca_certificate_not_a_path_so_it_cannot_tell_which_files_exist(admin, data_dir, mailbox):
    token = csrf(admin.get("/accounts/").data)
    base = {"csrf_token": token, "host": "127.0.0.1", "port": str(mailbox.server.ports["imaps"]),
            "security": "ssl", "user": mailbox.user, "password": PASSWORD, "folders": "INBOX", "after": "none"}
    answers = {admin.post("/accounts/box/edit", data={**base, "ca_file_pem": path}).data.decode()
               .split('role="alert">')[1].split("<")[0] for path in ("/etc/passwd", "/no/such/file")}
    assert len(answers) == 1 and "/etc/passwd" not in answers.pop()  # the same answer, whatever exists
    response = admin.post("/accounts/box/edit", data={**base, "ca_file_pem": mailbox.server.cert.read_text()})
    assert response.status_code == 302
    acc = State(data_dir).account("box")
    stored = Path(acc.ca_file)
    assert stored.parent == data_dir / "ca" and stored.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert stored.stat().st_mode & 0o777 == 0o640
    page = admin.get("/accounts/box/edit").data.decode()
    assert "CN=localhost" in page
    token = csrf(admin.get("/accounts/").data)
    assert 'class="ok" id="test-result"' in admin.post("/accounts/box/test", data={"csrf_token": token}).data.decode()
