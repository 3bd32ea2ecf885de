"""WebAdmin as the service runs it (gunicorn with webadmin/gunicorn_conf.py): slow clients do not starve it,
and its connection test is no port scanner."""

from __future__ import annotations

import http.cookiejar
import re
import socket
import threading
import time
import urllib.parse
import urllib.request

import pytest
from servers import RecordingServer, WebAdmin


@pytest.fixture
def service(run, data_dir):
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    server = WebAdmin(data_dir)
    yield server
    server.stop()


class Browser:
    """A logged-in HTTP client with its cookie jar."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        page = self.get("/login")
        self.post("/login", username="anna", password="anna-password", csrf_token=self.token(page))

    def get(self, path: str) -> str:
        return self.opener.open(self.base + path, timeout=30).read().decode()

    def post(self, path: str, **form) -> str:
        return self.opener.open(self.base + path, urllib.parse.urlencode(form).encode(), timeout=30).read().decode()

    @staticmethod
    def token(page: str) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_half_sent_requests_do_not_starve_webadmin(service):
    held = []
    for _ in range(6):  # with the two sync workers of old, two of these stopped every answer
        s = socket.create_connection(("127.0.0.1", service.port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line that ends it
        held.append(s)
    try:
        time.sleep(0.3)
        started = time.monotonic()
        answer = urllib.request.urlopen(f"{service.base}/healthz", timeout=5).read()
        assert b'"ok"' in answer and time.monotonic() - started < 2
        Browser(service.base).get("/documents")  # and a real page, with its database connections
    finally:
        for s in held:
            s.close()


def test_the_connection_test_refuses_webadmins_own_port(service, run):
    result = run("account", "add", "imap", "self", "--host", "127.0.0.1", "--port", str(service.port),
                 "--security", "plain", "--user", "u", "--password-stdin", input="secret-1\n")
    assert result.exit_code == 0
    browser = Browser(service.base)
    started = time.monotonic()
    page = browser.post("/accounts/self/test", csrf_token=browser.token(browser.get("/accounts/")))
    assert time.monotonic() - started < 2
    assert "eigene Adresse und der eigene Port von WebAdmin" in page


def test_the_connection_test_shows_no_bytes_a_foreign_service_sent(service, run):
    banner = RecordingServer(greeting=b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    try:
        result = run("account", "add", "imap", "ssh", "--host", "127.0.0.1", "--port", str(banner.port),
                     "--security", "plain", "--user", "u", "--password-stdin", input="secret-1\n")
        assert result.exit_code == 0
        browser = Browser(service.base)
        page = browser.post("/accounts/ssh/test", csrf_token=browser.token(browser.get("/accounts/")))
    finally:
        banner.close()
    assert "SSH-2.0" not in page and "OpenSSH" not in page
    assert "ist beim Verbinden fehlgeschlagen. Prüfen Sie, ob Server, Port und Sicherheit zum Mailserver" in page
    cli = run("account", "test", "ssh")  # the operator's own CLI may show what the server said
    assert "SSH-2.0" in cli.output


def test_the_connection_test_ends_within_the_network_timeout(run, data_dir, tmp_path, monkeypatch):
    (tmp_path / "short.conf").write_text("[archivista-mail]\nnetwork_timeout = 2\n")
    monkeypatch.setenv("ARCHIVISTA_MAIL_CONFIG", str(tmp_path / "short.conf"))
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    drip = socket.socket()  # accepts, then sends a byte a second: every socket read succeeds, nothing ends
    drip.bind(("127.0.0.1", 0))
    drip.listen(4)

    done = threading.Event()

    def trickle():
        conn, _ = drip.accept()
        with conn:
            while not done.wait(1):
                try:
                    conn.sendall(b"*")
                except OSError:
                    return

    threading.Thread(target=trickle, daemon=True).start()
    server = WebAdmin(data_dir)
    try:
        assert run("account", "add", "imap", "drip", "--host", "127.0.0.1", "--port", str(drip.getsockname()[1]),
                   "--security", "plain", "--user", "u", "--password-stdin", input="secret-1\n").exit_code == 0
        browser = Browser(server.base)
        started = time.monotonic()
        page = browser.post("/accounts/drip/test", csrf_token=browser.token(browser.get("/accounts/")))
        assert time.monotonic() - started < 5
        assert "nicht innert 2 Sekunden abgeschlossen" in page
    finally:
        done.set()  # the drip hangs up: the abandoned test's thread ends, and gunicorn with it
        drip.close()
        time.sleep(1.1)
        server.stop()
