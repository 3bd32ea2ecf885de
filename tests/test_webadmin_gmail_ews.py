"""WebAdmin's pages for Google Workspace and Exchange (EWS): built from the sources' declarations, the key and
the password entered once and never shown, the connection test against the emulators."""

from __future__ import annotations

import json

from test_webadmin import csrf, login

from archivista_mail.config import Config
from webadmin import create_app


def admin_client(run, data_dir):
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    client = create_app(Config(data_dir=data_dir)).test_client()
    assert login(client, "anna", "anna-password").status_code == 302
    return client


def test_a_google_workspace_account_is_added_tested_and_edited_in_webadmin(run, data_dir, workspace):
    from gmail_emulator import SCOPE_MODIFY

    workspace.authorize(SCOPE_MODIFY)
    workspace.deliver([b"Subject: Offerte 17\r\nFrom: a@example.com\r\n\r\nHallo\r\n"])
    client = admin_client(run, data_dir)
    menu = client.get("/documents").data.decode()
    assert "Google Workspace" in menu and "Exchange (EWS)" in menu
    form = client.get("/accounts/new?kind=gmail").data.decode()
    assert '<textarea name="service_account"' in form and 'name="mailboxes"' in form and "Dienstkonto" in form
    assert "Label hinzufügen" in form and "In den Papierkorb verschieben" in form
    bad = client.post("/accounts/new?kind=gmail", data={
        "csrf_token": csrf(form.encode()), "name": "gw", "service_account": '{"installed": {}}',
        "mailboxes": workspace.mailbox, "labels": "INBOX", "after": "none"})
    assert bad.status_code == 400 and "keine JSON-Schlüsseldatei eines Dienstkontos" in bad.data.decode()
    key = json.dumps(workspace.info, indent=2)
    response = client.post("/accounts/new?kind=gmail", data={
        "csrf_token": csrf(form.encode()), "name": "gw", "service_account": key, "mailboxes": workspace.mailbox,
        "labels": "INBOX\nSENT", "after": "label", "move_to": "Archiviert"})
    assert response.status_code == 302, response.data.decode()
    assert response.headers["Location"] == "/sources/gmail/"
    page = client.get("/sources/gmail/").data.decode()
    assert "gw" in page and workspace.mailbox in page and "private_key" not in page
    listed = json.loads(run("account", "list", "--json").output)[0]
    assert listed["after"] == "label:Archiviert" and listed["labels"] == ["INBOX", "SENT"]
    assert listed["service_account"] == "********"
    tested = client.post("/accounts/gw/test", data={"csrf_token": csrf(page.encode())}).data.decode()
    assert f"{workspace.mailbox}/INBOX" in tested and "1" in tested
    assert "das Label «Archiviert» wird beim ersten archivierten Mail angelegt" in tested
    assert 'name="folder" value="SENT" checked' in tested  # the picker shows the account's labels
    picked = client.post("/accounts/gw/folders", data={"folder": ["INBOX"], "csrf_token": csrf(tested.encode())})
    assert picked.status_code == 302
    assert json.loads(run("account", "list", "--json").output)[0]["labels"] == ["INBOX"]
    edit = client.get("/accounts/gw/edit").data.decode()
    assert workspace.info["private_key"].splitlines()[5] not in edit and "Archiviert" in edit
    kept = client.post("/accounts/gw/edit", data={  # an empty key field keeps the stored key
        "csrf_token": csrf(edit.encode()), "service_account": "", "mailboxes": workspace.mailbox, "labels": "INBOX",
        "after": "read"})
    assert kept.status_code == 302, kept.data.decode()
    assert run("import").exit_code == 0
    assert "UNREAD" not in next(iter(workspace.box.messages.values())).label_ids


def test_an_exchange_account_is_added_and_tested_in_webadmin(run, data_dir, exchange):
    exchange.deliver([b"Subject: Offerte 18\r\nFrom: a@example.com\r\n\r\nHallo\r\n"])
    client = admin_client(run, data_dir)
    form = client.get("/accounts/new?kind=ews").data.decode()
    assert 'name="url"' in form and 'name="password" type="password"' in form and 'name="ca_file_pem"' in form
    assert "Endgültig löschen" in form
    response = client.post("/accounts/new?kind=ews", data={
        "csrf_token": csrf(form.encode()), "name": "exch", "url": exchange.server.url, "user": exchange.SERVICE,
        "password": exchange.PASSWORD, "auth": "ntlm", "mailboxes": exchange.mailbox, "folders": "Posteingang",
        "ca_file_pem": exchange.server.ca_file.read_text(), "after": "move", "move_to": "Archiviert"})
    assert response.status_code == 302, response.data.decode()
    assert response.headers["Location"] == "/sources/ews/"
    page = client.get("/sources/ews/").data.decode()
    assert exchange.PASSWORD not in page
    tested = client.post("/accounts/exch/test", data={"csrf_token": csrf(page.encode())}).data.decode()
    assert f"{exchange.mailbox}/Posteingang" in tested and exchange.PASSWORD not in tested
    edit = client.get("/accounts/exch/edit").data.decode()
    moved = client.post("/accounts/exch/edit", data={  # another server: the stored password is not sent there
        "csrf_token": csrf(edit.encode()), "url": "https://127.0.0.2:1/EWS/Exchange.asmx", "user": exchange.SERVICE,
        "password": "", "auth": "ntlm", "mailboxes": exchange.mailbox, "folders": "Posteingang", "after": "none"})
    assert moved.status_code == 400
    assert "Eines von Typ, EWS-URL, Benutzer, Authentifizierung hat sich geändert" in moved.data.decode()
    assert run("import").exit_code == 0
    assert len(exchange.items("Archiviert")) == 1
