"""Every WebAdmin route, walked with hostile parameters by an admin, a viewer and a stranger: never a 5xx."""

from __future__ import annotations

import re

import pytest
from test_webadmin import csrf, login

from archivista_mail.config import Config
from webadmin import create_app

HOSTILE_VALUES = ["nonexist", "99999999999999999999999", "-1", "0", "\x00", '"', '""', '"" ""', "'; DROP TABLE x;--",
                  "<script>alert(1)</script>", "../../etc/passwd", "\u202etxt.exe", "x" * 5000, "%", "*", "NEAR("]
QUERY_KEYS = ["q", "page", "action", "actor", "edit", "next", "lang", "account", "field"]
FORM_KEYS = ["name", "kind", "host", "port", "security", "username", "password", "folders", "mode", "after",
             "move_to", "ca_file_pem", "ca_file_remove", "user", "unread_only", "tenant", "client_id", "client_secret", "mailboxes", "batch_size", "base_url",
             "title_field", "minutes", "folder", "account", "lang", "next"]


@pytest.fixture
def app(run, data_dir):
    from pathlib import Path

    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    assert run("admin", "create", "victor", "--password-stdin", "--role", "viewer",
               input="victor-password\n").exit_code == 0
    assert run("import", "--from", str(Path(__file__).parent.parent / "samples")).exit_code == 0
    assert run("account", "add", "imap", "box", "--host", "mail.example.invalid", "--user", "u", "--password-stdin",
               input="imap-secret-123\n").exit_code == 0
    return create_app(Config(data_dir=data_dir, network_timeout=2))


def urls(app, values: list[str] = HOSTILE_VALUES) -> list[tuple[str, str]]:
    """(method, url) for every route, each variable filled with each hostile value (URL-quoted)."""
    from urllib.parse import quote

    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "imports.run"):  # run-now starts real imports: tested in test_webadmin
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for value in values if rule.arguments else [None]:
                path = rule.rule
                for arg in rule.arguments:
                    path = re.sub(rf"<(?:\w+:)?{arg}>", quote(value, safe=""), path)
                out.append((method, path))
    return out


@pytest.mark.parametrize("who", ["anna", "victor", None])
def test_no_route_answers_with_a_server_error_whatever_it_is_sent(app, who):
    client = app.test_client()
    if who:
        assert login(client, who, f"{who}-password").status_code == 302
    token = csrf(client.get("/login").data)
    failures = []
    # A viewer and a stranger are turned away before parameters are read: a few values show that for
    # every route; the admin, who gets the pages themselves, gets every hostile value on every route.
    values = HOSTILE_VALUES if who == "anna" else HOSTILE_VALUES[:4] + HOSTILE_VALUES[-3:]
    for method, path in urls(app, values):
        for value in values:
            if method == "GET":
                response = client.get(path, query_string={k: value for k in QUERY_KEYS})
            else:
                response = client.post(path, data={"csrf_token": token, **{k: value for k in FORM_KEYS}})
            if response.status_code >= 500:
                failures.append(f"{method} {path} {value[:20]!r}: {response.status_code}")
            if method == "POST" and path in ("/logout",):  # logged out: log in again for the rest
                if who:
                    login(client, who, f"{who}-password")
                token = csrf(client.get("/login").data)
    assert failures == []
