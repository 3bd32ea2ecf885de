"""WebAdmin through the Flask test client: access rules for every route, CSRF, secrets, safe HTML."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import invoke_cli

from archivista_mail.config import Config
from webadmin import create_app

SAMPLES = Path(__file__).parent.parent / "samples"
COOKIE = "archivista_mail_session"


def csrf(html: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', html).group(1).decode()


def login(client, user, password, next_=""):
    token = csrf(client.get("/login").data)
    return client.post("/login", data={"username": user, "password": password, "csrf_token": token, "next": next_})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The module's data directory, built once: users, the samples, an IMAP and an Office 365 account; and a
    session cookie per user (logging in costs a scrypt hash). Each test gets a copy (see ``app``)."""
    data = tmp_path_factory.mktemp("webadmin") / "data"

    def run(*args, input=None):
        result = invoke_cli("--data-dir", str(data), *args, input=input)
        assert result.exit_code == 0, result.output

    run("init")
    run("admin", "create", "anna", "--password-stdin", input="anna-password\n")
    run("admin", "create", "victor", "--password-stdin", "--role", "viewer", input="victor-password\n")
    run("import", "--from", str(SAMPLES))
    run("account", "add", "imap", "box", "--host", "mail.example.org", "--user", "u", "--password-stdin",
        input="imap-secret-123\n")
    run("account", "add", "o365", "m365", "--tenant", "t", "--client-id", "c", "--client-secret-stdin",
        "--mailbox", "a@example.org", input="graph-secret-456\n")
    app = create_app(Config(data_dir=data))
    cookies = {}
    for user in ("anna", "victor"):
        client = app.test_client()
        assert login(client, user, f"{user}-password").status_code == 302
        cookies[user] = client.get_cookie(COOKIE).value
    return data, cookies


@pytest.fixture
def app(prepared, tmp_path, monkeypatch):
    """WebAdmin on this test's own copy of the prepared data directory (same keys, so the cookies hold)."""
    data = tmp_path / "data"
    shutil.copytree(prepared[0], data)
    return create_app(Config(data_dir=data))


@pytest.fixture
def data_dir(app) -> Path:
    """This test's data directory: the copy WebAdmin serves."""
    return app.config["ARCHIVISTA"].data_dir


@pytest.fixture
def run(data_dir):
    """The CLI on this test's copy."""

    def invoke(*args, input=None):
        return invoke_cli("--data-dir", str(data_dir), *args, input=input)

    return invoke


def logged_in(app, cookies, user):
    client = app.test_client()
    client.set_cookie(COOKIE, cookies[user])
    return client


@pytest.fixture
def admin_client(app, prepared):
    return logged_in(app, prepared[1], "anna")


@pytest.fixture
def viewer_client(app, prepared):
    return logged_in(app, prepared[1], "victor")


DOCUMENT_PAGES = ["/", "/documents", "/documents?q=Rechnung", "/documents/1", "/documents/1/download",
                  "/documents/2/preview", "/documents/3/body", "/doc/1"]
ADMIN_PAGES = ["/accounts/", "/accounts/new", "/accounts/box/edit", "/sources/mail/", "/sources/o365/",
               "/accounts/new?kind=pop3", "/accounts/new?kind=o365", "/accounts/m365/edit", "/imports/",
               "/settings/links", "/audit", "/audit?action=account"]


@pytest.mark.parametrize("path", DOCUMENT_PAGES + ADMIN_PAGES)
def test_anonymous_visitors_are_sent_to_the_login_page(app, path):
    response = app.test_client().get(path)
    assert response.status_code == 302, re.findall(r"role=\"alert\">([^<]*)", response.data.decode())
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", ["/login", "/healthz"])
def test_login_and_health_are_open(app, path):
    assert app.test_client().get(path).status_code == 200


@pytest.mark.parametrize("path", DOCUMENT_PAGES)
def test_viewers_reach_documents(viewer_client, path):
    assert viewer_client.get(path).status_code in (200, 302)
    if path != "/doc/1":
        assert viewer_client.get(path).status_code == 200


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_viewers_cannot_reach_admin_pages(viewer_client, path):
    assert viewer_client.get(path).status_code == 403


@pytest.mark.parametrize("path", DOCUMENT_PAGES + ADMIN_PAGES)
def test_admins_reach_everything(admin_client, path):
    response = admin_client.get(path, follow_redirects=True)  # /doc/1 leads to the document's page
    assert response.status_code == 200, (path, response.status_code)
    assert response.request.path != "/login"
    if response.mimetype == "text/html" and not path.endswith(("/body", "/preview")):
        assert b'id="logout"' in response.data  # the page itself, in the layout of a logged-in admin
    else:  # a file, a preview or a mail's body: the archived bytes, not an error page
        assert b"<title>" not in response.data[:300] or path.endswith("/body")


@pytest.mark.parametrize("path", ["/accounts/box/delete", "/accounts/box/toggle", "/imports/run",
                                  "/settings/links", "/logout", "/accounts/new"])
def test_posts_without_a_csrf_token_are_refused(admin_client, path):
    assert admin_client.post(path, data={"base_url": "http://x"}).status_code == 400


ADMIN_POSTS = ["/accounts/new", "/accounts/box/edit", "/accounts/box/delete", "/accounts/box/toggle",
               "/accounts/box/test", "/accounts/box/folders", "/accounts/new?kind=o365", "/accounts/m365/test", "/imports/run",
               "/imports/interval", "/settings/links"]


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_viewers_cannot_post_admin_actions_even_with_a_token(viewer_client, path):
    token = csrf(viewer_client.get("/documents").data)
    assert viewer_client.post(path, data={"csrf_token": token}).status_code == 403


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_anonymous_posts_change_nothing(app, path):
    client = app.test_client()
    token = csrf(client.get("/login").data)
    response = client.post(path, data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_wrong_password_is_refused_and_audited(app, run):
    client = app.test_client()
    response = login(client, "anna", "nope")
    assert response.status_code == 401 and "Benutzername oder Passwort falsch" in response.get_data(as_text=True)
    assert client.get("/documents").status_code == 302
    assert "webadmin.login_failed" in run("audit").output


def test_the_login_page_returns_people_to_the_page_they_asked_for_and_only_there(app):
    client = app.test_client()
    first = client.get("/doc/1")
    assert first.headers["Location"] == "/login?next=/doc/1"
    assert login(client, "anna", "anna-password", "/doc/1").headers["Location"] == "/doc/1"
    assert client.get("/doc/1").headers["Location"] == "/documents/1"
    other = app.test_client()
    assert login(other, "anna", "anna-password", "//evil.example/x").headers["Location"] == "/documents"


def test_passwords_and_secrets_never_appear_in_a_page(admin_client):
    pages = b"".join(admin_client.get(p).data for p in ADMIN_PAGES)
    assert b"imap-secret-123" not in pages and b"graph-secret-456" not in pages
    o365 = admin_client.get("/sources/o365/").data.decode()
    assert "m365" in o365 and "a@example.org" in o365  # the account is listed, its secret never


def test_editing_an_account_with_an_empty_password_keeps_the_old_one(admin_client, run, data_dir):
    page = admin_client.get("/accounts/box/edit").data
    response = admin_client.post("/accounts/box/edit", data={
        "csrf_token": csrf(page), "host": "MAIL.example.org", "port": "993", "security": "ssl",
        "user": "u", "password": "", "folders": "INBOX\nArchiv", "after": "none"})
    assert response.status_code == 302, re.findall(r"role=\"alert\">([^<]*)", response.data.decode())
    from archivista_mail.state import State
    from archivista_mail.vault import Vault

    acc = State(data_dir).account("box")
    assert (acc.host, acc.folders) == ("mail.example.org", ["INBOX", "Archiv"])  # host names in lower case
    assert Vault(data_dir / "secret.key").secret_of(acc) == "imap-secret-123"


def test_archived_html_is_cleaned_and_sandboxed(admin_client):
    newsletter = [m for m in re.findall(rb'href="/documents/(\d+)">Our spring newsletter', admin_client.get(
        "/documents?q=newsletter").data)][0].decode()
    response = admin_client.get(f"/documents/{newsletter}/body")
    html = response.get_data(as_text=True)
    assert "Spring offers" in html and "<script" not in html and "alert(1)" not in html
    assert 'src="data:image/png;base64,' in html  # the inline logo (cid:) shown from the mail itself
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_text_previews_are_never_served_as_html(admin_client):
    for number in range(1, 10):
        response = admin_client.get(f"/documents/{number}/preview")
        assert response.mimetype != "text/html"


def test_link_settings_are_validated_and_used_by_the_view_and_the_cli(admin_client, run):
    page = admin_client.get("/settings/links").data
    bad = admin_client.post("/settings/links", data={"csrf_token": csrf(page), "base_url": "ftp://x"})
    assert bad.status_code == 400 and "https://archiv.example.ch:8443" in bad.get_data(as_text=True)
    ok = admin_client.post("/settings/links", data={"csrf_token": csrf(page), "base_url": "https://archiv.example.ch/",
                                                    "title_field": ""})
    assert ok.status_code == 302
    view = admin_client.get("/documents/1").get_data(as_text=True)
    assert 'value="https://archiv.example.ch/doc/1"' in view
    assert 'data-title="1: Rechnung 2024-117 für Beratung"' in view
    printed = run("link", "1")
    assert printed.output == "1: Rechnung 2024-117 für Beratung\nhttps://archiv.example.ch/doc/1\n"


def test_the_interface_speaks_german_by_default_and_english_on_request(admin_client):
    assert "Dokumente" in admin_client.get("/documents").get_data(as_text=True)
    token = csrf(admin_client.get("/documents").data)
    admin_client.post("/language", data={"csrf_token": token, "lang": "en", "next": "/documents"})
    assert ">Documents<" in admin_client.get("/documents").get_data(as_text=True)


def test_admin_create_refuses_short_passwords(run):
    result = run("admin", "create", "x", "--password-stdin", input="short\n")
    assert result.exit_code == 2 and "at least 8" in result.output


def test_run_now_respects_the_importers_lock(admin_client, data_dir, run):
    from archivista_mail.runs import import_lock
    from webadmin import imports

    for name in ("box", "m365"):  # their servers are not on this machine: nothing may try to reach them
        assert run("account", "remove", name).exit_code == 0

    token = csrf(admin_client.get("/imports/").data)
    with import_lock(data_dir) as locked:
        assert locked
        response = admin_client.post("/imports/run", data={"csrf_token": token}, follow_redirects=True)
    assert "Ein anderer Import läuft" in response.get_data(as_text=True)
    response = admin_client.post("/imports/run", data={"csrf_token": token}, follow_redirects=True)
    assert "Der Import läuft" in response.get_data(as_text=True)
    import time

    for _ in range(100):  # the import runs in its own process; its run appears when it is done
        if len(admin_client.get("/imports/").get_data(as_text=True).split("<td>alle Konten</td>")) > 1:
            break
        time.sleep(0.1)
    page = admin_client.get("/imports/").get_data(as_text=True)
    assert "<td>alle Konten</td><td>OK</td>" in page  # stored as "all accounts" and "ok"
    for process in imports._started:
        process.wait(timeout=30)


def test_the_import_interval_is_set_on_the_import_page(admin_client, data_dir):
    from archivista_mail.config import Config
    from archivista_mail.schedule import interval_minutes
    from archivista_mail.state import State

    token = csrf(admin_client.get("/imports/").data)
    bad = admin_client.post("/imports/interval", data={"csrf_token": token, "minutes": "0"}, follow_redirects=True)
    assert "ganze Zahl von 1 bis 1440" in bad.get_data(as_text=True)
    admin_client.post("/imports/interval", data={"csrf_token": token, "minutes": "25"})
    assert interval_minutes(Config(data_dir=data_dir), State(data_dir)) == 25
    assert 'value="25"' in admin_client.get("/imports/").get_data(as_text=True)
