"""Fixtures: a real Dovecot per test session, fresh data directories, a CLI runner."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from servers import Dovecot, Postfix  # noqa: E402

from archivista_mail.cli import cli  # noqa: E402

PASSWORD = "s3cret-Pa55"
UMLAUT_USER, UMLAUT_PASSWORD = "umlaut", "pässwörd-Ä1 ☃"  # IMAP LOGIN cannot carry it; AUTHENTICATE PLAIN can


SERVER_PROGRAMS = {"dovecot": "dovecot-imapd", "doveadm": "dovecot-core", "openssl": "openssl"}


def require_programs(programs: dict[str, str] = SERVER_PROGRAMS) -> None:
    """Fail with one line naming the Debian packages to install when a server program is missing."""
    missing = sorted({package for program, package in programs.items() if shutil.which(program) is None})
    if missing:
        pytest.fail(f"Missing Debian packages for the test servers: {' '.join(missing)}. Run 'make test', which "
                    "installs them, or 'apt-get install' them.", pytrace=False)


@pytest.fixture(scope="session")
def dovecot():
    """A private Dovecot with users user001... (password PASSWORD), stopped by PID at the end."""
    require_programs()
    users = {f"user{i:03d}": PASSWORD for i in range(200)}  # Dovecot reads its passwd-file lazily: all up front
    server = Dovecot({**users, UMLAUT_USER: UMLAUT_PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dovecot_like_cyrus():
    """A second private Dovecot set up like Cyrus and Courier: folders under "INBOX." with ".", no MOVE, no
    passwords on insecure connections, ACLs (see servers.LIKE_CYRUS)."""
    require_programs()
    server = Dovecot({f"cyrus{i:03d}": PASSWORD for i in range(60)}, like="cyrus").start()
    yield server
    server.stop()


class Mailbox:
    """One Dovecot user for one test, with helpers to append and inspect mail over IMAP."""

    def __init__(self, server: Dovecot, user: str) -> None:
        self.server = server
        self.user = user

    def client(self):
        from imapclient import IMAPClient

        c = IMAPClient("127.0.0.1", port=self.server.ports["imap"], ssl=False)
        c.login(self.user, PASSWORD)
        return c

    def append(self, messages: list[bytes], folder: str = "INBOX", flags=()) -> None:
        with self.client() as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            for i in range(0, len(messages), 200):
                c.multiappend(folder, [dict(flags=flags, msg=m) for m in messages[i:i + 200]])

    def messages(self, folder: str = "INBOX") -> dict[int, tuple[bytes, tuple]]:
        with self.client() as c:
            if not c.folder_exists(folder):
                return {}
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            if not uids:
                return {}
            data = c.fetch(uids, ["BODY.PEEK[]", "FLAGS"])
            return {uid: (d[b"BODY[]"], d[b"FLAGS"]) for uid, d in data.items()}


_users_handed_out: set[str] = set()


def fresh_mailbox(server) -> Mailbox:
    for user, password in server.users.items():
        if user not in _users_handed_out and password == PASSWORD:
            _users_handed_out.add(user)
            return Mailbox(server, user)
    pytest.fail("Out of test mailboxes: add users in conftest")


@pytest.fixture
def mailbox(dovecot) -> Mailbox:
    """An empty mailbox of its own for the test (users are not reused within a session)."""
    return fresh_mailbox(dovecot)


@pytest.fixture
def cyrus_box(dovecot_like_cyrus) -> Mailbox:
    """An empty mailbox of its own on the Cyrus-like Dovecot; folder names there start with "INBOX."."""
    return fresh_mailbox(dovecot_like_cyrus)


# -- sending: Postfix in front of a Dovecot that takes its deliveries (LMTP) and its logins (SASL) ----------
POSTFIX_PROGRAMS = {"/usr/lib/postfix/sbin/master": "postfix", "/usr/lib/dovecot/lmtp": "dovecot-lmtpd",
                    "dovecot": "dovecot-imapd", "openssl": "openssl"}


@pytest.fixture(scope="session")
def mail_system():
    """A private Dovecot (IMAP, LMTP, SASL) with users archiv000..., kunde000... and a Postfix delivering into it
    (submission with STARTTLS, SMTPS), both on 127.0.0.1 high ports, stopped by their PIDs at the end."""
    missing = sorted({pkg for prog, pkg in POSTFIX_PROGRAMS.items()
                      if (shutil.which(prog) if "/" not in prog else (None if not os.path.exists(prog) else prog)) is None})
    if missing:
        pytest.fail(f"Postfix cannot be started: missing Debian packages {' '.join(missing)} (run 'make test', which "
                    "installs them).", pytrace=False)
    users = {f"{who}{i:03d}": PASSWORD for who in ("archiv", "kunde") for i in range(60)}
    dovecot = Dovecot(users, lmtp=True).start()
    try:
        postfix = Postfix(dovecot).start()
    except RuntimeError as e:
        dovecot.stop()
        pytest.fail(f"Postfix cannot be started: {str(e).splitlines()[0]}", pytrace=False)
    yield dovecot, postfix
    postfix.stop()
    dovecot.stop()


class Post:
    """One test's view of the mail system: the archive's mailbox (imported, sends through SMTP) and a customer's."""

    def __init__(self, dovecot: Dovecot, postfix: Postfix) -> None:
        self.dovecot, self.postfix = dovecot, postfix
        self.archive_box = fresh_mailbox(dovecot)
        self.customer_box = fresh_mailbox(dovecot)
        self.archive_address = f"{self.archive_box.user}@example.test"
        self.customer_address = f"{self.customer_box.user}@example.test"
        self.ca = str(dovecot.cert)

    def add_accounts(self, run, *extra: str, name: str = "versand", security: str = "starttls") -> None:
        """The SMTP account (as the archive's user) and an IMAP account importing the archive's inbox."""
        port = self.postfix.ports["submission" if security == "starttls" else "smtps"]
        result = run("account", "add", "smtp", name, "--host", "127.0.0.1", "--port", str(port), "--security",
                     security, "--user", self.archive_box.user, "--from", self.archive_address, "--ca-file", self.ca,
                     "--password-stdin", *extra, input=PASSWORD + "\n")
        assert result.exit_code == 0, result.output
        result = run("account", "add", "imap", "eingang", "--host", "127.0.0.1", "--port",
                     str(self.dovecot.ports["imaps"]), "--user", self.archive_box.user, "--ca-file", self.ca,
                     "--password-stdin", input=PASSWORD + "\n")
        assert result.exit_code == 0, result.output

    def received(self, box: Mailbox | None = None, wait: float = 5.0) -> list[bytes]:
        """The mails in a mailbox's INBOX (the customer's by default), waiting up to ``wait`` s for a first one."""
        import time

        box = box or self.customer_box
        deadline = time.monotonic() + wait
        while True:
            found = [raw for raw, _ in box.messages().values()]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def reply(self, original: bytes, text: str = "Danke, erhalten.", subject: str | None = None,
              references: bool = True, sender: str | None = None) -> bytes:
        """The customer answers ``original`` through Postfix (with In-Reply-To/References unless told not to)."""
        import email
        import smtplib
        import ssl
        from email.message import EmailMessage

        parsed = email.message_from_bytes(original)
        msg = EmailMessage()
        msg["From"] = sender or self.customer_address
        msg["To"] = self.archive_address
        msg["Subject"] = subject if subject is not None else "Re: " + str(parsed["Subject"])
        msg["Message-ID"] = email.utils.make_msgid(domain="example.test")
        if references:
            msg["In-Reply-To"] = parsed["Message-ID"]
            msg["References"] = parsed["Message-ID"]
        msg.set_content(text)
        with smtplib.SMTP("127.0.0.1", self.postfix.ports["submission"], timeout=10) as s:
            s.starttls(context=ssl.create_default_context(cafile=self.ca))
            s.login(self.customer_box.user, PASSWORD)
            s.send_message(msg, from_addr=self.customer_address, to_addrs=[self.archive_address])
        return bytes(msg)


@pytest.fixture
def post(mail_system) -> Post:
    """Mailboxes of their own for this test on the shared Dovecot + Postfix."""
    return Post(*mail_system)


def invoke_cli(*args, input=None):
    """The CLI in this process. It sets the process umask (0027) as it does in production; the test
    servers create their files under the usual 0022, so it is put back afterwards."""
    try:
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    finally:
        os.umask(0o022)


@pytest.fixture(autouse=True)
def _usual_umask():
    """WebAdmin's create_app sets the umask too: every test ends with the usual one."""
    yield
    os.umask(0o022)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A data directory made by 'archivista-mail init', as the package and 'make demo' make it."""
    d = tmp_path / "data"
    result = invoke_cli("--data-dir", str(d), "init")
    assert result.exit_code == 0, result.output
    return d


@pytest.fixture
def run(data_dir):
    """Invoke the CLI on this test's data directory: run('import', input=...)."""

    def invoke(*args, input=None):
        return invoke_cli("--data-dir", str(data_dir), *args, input=input)

    return invoke


@pytest.fixture(autouse=True)
def _no_system_config(monkeypatch):
    monkeypatch.delenv("ARCHIVISTA_MAIL_DATA", raising=False)
    monkeypatch.delenv("ARCHIVISTA_MAIL_CONFIG", raising=False)
    os.environ.pop("SUDO_USER", None)


def run_on_terminal(data_dir: Path, *args: str) -> tuple[int, bytes]:
    """Run the CLI with a pseudo-terminal as its stdin/stdout/stderr; returns (exit code, what it showed)."""
    import pty
    import subprocess

    leader, follower = pty.openpty()
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    proc = subprocess.run([sys.executable, "-m", "archivista_mail", *args], env=env, stdin=follower,
                          stdout=follower, stderr=follower, timeout=60)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return proc.returncode, shown


@pytest.fixture(scope="session")
def graph_server():
    """The Graph emulator (an HTTPS proxy on 127.0.0.1), for the whole session."""
    from graph_emulator import GraphEmulator

    server = GraphEmulator().start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


_graph_tenants = iter(range(1, 10_000))


class Tenant:
    """A fresh tenant, app and mailbox in the emulator for one test."""

    def __init__(self, server, n: int) -> None:
        self.server = server
        self.tenant = f"tenant-{n:04d}"
        self.client_id = f"client-{n:04d}"
        self.secret = f"secret-{n:04d}~value"
        self.mailbox = f"archive{n}@contoso.example"
        server.add_app(self.tenant, self.client_id, self.secret)
        server.add_mailbox(self.mailbox)

    def deliver(self, mimes, **kw):
        return self.server.deliver(self.mailbox, mimes, **kw)

    def folder(self, name="inbox"):
        return self.server.mailboxes[self.mailbox.lower()].folder(name)

    def add_account(self, run, *extra, name="m365", secret=None):
        result = run("account", "add", "o365", name, "--tenant", self.tenant, "--client-id", self.client_id,
                     "--client-secret-stdin", "--mailbox", self.mailbox, *extra, input=(secret or self.secret) + "\n")
        assert result.exit_code == 0, result.output
        return result


@pytest.fixture
def tenant(graph_server, monkeypatch) -> Tenant:
    """A fresh tenant in the emulator, with this process's requests routed to it."""
    for name in ("CURL_CA_BUNDLE", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in graph_server.environ().items():
        monkeypatch.setenv(name, value)
    graph_server.throttle, graph_server.latency, graph_server.token_lifetime = 0.0, 0.0, 3600
    graph_server.expire_delta_tokens, graph_server.after_delta_page = False, None
    graph_server.fail_next.clear()
    graph_server.set_outage(False)
    return Tenant(graph_server, next(_graph_tenants))


# -- Google Workspace (Gmail API emulator) -----------------------------------------------------------------


@pytest.fixture(scope="session")
def gmail_server():
    """The Gmail API emulator (an HTTPS proxy on 127.0.0.1 for Google's hosts), for the whole session."""
    from gmail_emulator import GmailEmulator

    server = GmailEmulator().start()
    yield server
    server.stop()


_workspaces = iter(range(1, 10_000))


class Workspace:
    """A fresh Google Workspace domain in the emulator: a service account, its key file, a mailbox."""

    def __init__(self, server, n: int, tmp_path: Path) -> None:
        from gmail_emulator import SCOPE_READONLY

        self.server = server
        self.mailbox = f"anna{n}@kanzlei{n}.example"
        server.add_mailbox(self.mailbox)
        self.info = server.add_service_account(f"archivista{n}@project-{n}.iam.gserviceaccount.com")
        self.client_id = self.info["client_id"]
        self.key_file = tmp_path / f"sa-{n}.json"
        self.key_file.write_text(__import__("json").dumps(self.info))
        self.authorize(SCOPE_READONLY)

    def authorize(self, *scopes: str) -> None:
        self.server.authorize(self.client_id, list(scopes))

    def add_mailbox(self, name: str) -> str:
        address = f"{name}@{self.mailbox.split('@')[1]}"
        self.server.add_mailbox(address)
        return address

    def deliver(self, mimes, mailbox: str | None = None, **kw):
        return self.server.deliver(mailbox or self.mailbox, mimes, **kw)

    @property
    def box(self):
        return self.server.mailbox(self.mailbox)

    def labelled(self, label: str, mailbox: str | None = None) -> dict:
        """The raw bytes of the mailbox's messages with the label (an id such as INBOX, or a user label's name)."""
        box = self.server.mailbox(mailbox or self.mailbox)
        ids = {label} | {lb.id for lb in box.labels.values() if lb.name == label}
        return {m.id: m.raw for m in box.messages.values() if ids & set(m.label_ids)}

    def add_account(self, run, *extra, name="workspace", mailbox=None):
        result = run("account", "add", "gmail", name, "--service-account-file", str(self.key_file),
                     "--mailbox", mailbox or self.mailbox, *extra)
        assert result.exit_code == 0, result.output
        return result


@pytest.fixture
def workspace(gmail_server, monkeypatch, tmp_path) -> Workspace:
    """A fresh domain in the Gmail emulator, with this process's (and its children's) requests routed to it."""
    import httplib2

    for name in ("CURL_CA_BUNDLE", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in gmail_server.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(httplib2, "CA_CERTS", str(gmail_server.ca_file))  # read once, at import, from the env
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the other test servers are reached directly
    s = gmail_server
    s.api_disabled, s.latency, s.throttle, s.drop_connection_after = False, 0.0, 0.0, None
    s.set_outage(False)
    s.quota_per_second, s.quota_burst = 250.0, 250.0
    s.fail_next.clear()
    return Workspace(s, next(_workspaces), tmp_path)


# -- Exchange on-premises (EWS emulator) -----------------------------------------------------------------


class Exchange:
    """An EWS emulator of its own for one test: a service account with impersonation, a German mailbox."""

    SERVICE, PASSWORD = "EXAMPLE\\svc-archiv", "Dienst-Pa55 ö"

    def __init__(self, emulator) -> None:
        self.server = emulator
        self.mailbox = "anna@example.test"
        emulator.add_mailbox(self.mailbox, language="de")
        emulator.add_user(self.SERVICE, self.PASSWORD)
        emulator.grant_impersonation(self.SERVICE, "all")

    def deliver(self, mimes, mailbox: str | None = None, **kw):
        return self.server.deliver(mailbox or self.mailbox, mimes, **kw)

    def items(self, folder: str = "inbox", mailbox: str | None = None) -> list:
        return self.server.items(mailbox or self.mailbox, folder)

    def add_account(self, run, *extra, name="exchange", password=None, mailbox=None):
        result = run("account", "add", "ews", name, "--url", self.server.url, "--user", self.SERVICE,
                     "--password-stdin", "--mailbox", mailbox or self.mailbox, "--ca-file", str(self.server.ca_file),
                     *extra, input=(password or self.PASSWORD) + "\n")
        assert result.exit_code == 0, result.output
        return result


@pytest.fixture
def exchange():
    """An EWS emulator on 127.0.0.1 (HTTPS with its own CA) for one test, stopped at its end."""
    from ews_emulator import EwsEmulator

    emulator = EwsEmulator().start()
    yield Exchange(emulator)
    emulator.stop()
    assert emulator.errors == []  # emulator bugs surface here, not as mysterious client errors
