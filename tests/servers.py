"""Real peers for tests and benchmarks: a throw-away Dovecot and a TCP proxy that can cut links.

Dovecot runs from its own config file on 127.0.0.1 high ports with a self-signed certificate;
it is stopped by killing the process group of the master PID we started, nothing else.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

VMAIL = "vmail"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_vmail_user() -> tuple[int, int]:
    """uid/gid of the system user Dovecot stores mail as (created if missing; needs root)."""
    try:
        pw = pwd.getpwnam(VMAIL)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", VMAIL], check=True)
        pw = pwd.getpwnam(VMAIL)
    return pw.pw_uid, pw.pw_gid


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Self-signed certificate for localhost / 127.0.0.1 (cert.pem, key.pem)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


CONFIG = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
listen = 127.0.0.1
protocols = imap pop3
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
ssl_dh = </usr/share/dovecot/dh.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}
mail_location = maildir:~/Maildir
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 100
pop3_uidl_format = %08Xu%08Xv
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{extra}protocol imap {{
  mail_max_userip_connections = 200
  mail_plugins = $mail_plugins {imap_plugins}
}}
"""

# Dovecot set up the way Cyrus (Debian defaults) and Courier behave, where Dovecot can imitate them:
# every folder under "INBOX." with "." as separator, no MOVE capability (copy + expunge instead),
# passwords refused on unencrypted connections (LOGINDISABLED / POP3 "-ERR [AUTH]"), and ACLs
# (global ACL file) so a test can take a user's right to delete or expunge in a folder.
LIKE_CYRUS = """\
disable_plaintext_auth = yes
imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES \
THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS \
LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS \
BINARY SPECIAL-USE ACL RIGHTS=texk
namespace inbox {{
  inbox = yes
  prefix = INBOX.
  separator = .
}}
mail_plugins = $mail_plugins acl
plugin {{
  acl = vfile:{d}/global-acl
}}
"""


# For a Postfix in front (class Postfix): delivery over LMTP and SASL authentication through Dovecot.
WITH_LMTP = """\
protocols = $protocols lmtp
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
service lmtp {
  unix_listener lmtp-postfix {
    mode = 0666
  }
}
protocol lmtp {
  auth_username_format = %Ln
}
"""


class Dovecot:
    """A private Dovecot instance. ``users`` maps user name to password."""

    def __init__(self, users: dict[str, str], like: str = "dovecot", lmtp: bool = False) -> None:
        self.uid, self.gid = ensure_vmail_user()
        self.dir = Path(tempfile.mkdtemp(prefix="amd-", dir="/tmp"))  # short: socket paths < 108 bytes
        os.chmod(self.dir, 0o755)
        self.ports = {name: free_port() for name in ("imap", "imaps", "pop3", "pop3s")}
        self.cert, self.key = make_certificate(self.dir)
        self.users = dict(users)
        self._write_users()
        self.config = self.dir / "dovecot.conf"
        self.like = like
        extra = LIKE_CYRUS.format(d=self.dir) if like == "cyrus" else ""
        if lmtp:  # Postfix delivers into it (LMTP) and asks it about SASL logins
            extra += WITH_LMTP
        if like == "cyrus":
            self.set_acl({})
        self.config.write_text(CONFIG.format(d=self.dir, extra=extra, imap_plugins="imap_acl" if like == "cyrus" else "",
                                             **self.ports))
        self.master_pid: int | None = None

    def _write_users(self) -> None:
        lines = []
        for user, password in self.users.items():
            home = self.home(user)
            (home / "Maildir").mkdir(parents=True, exist_ok=True)
            for p in (home, home / "Maildir"):
                os.chown(p, self.uid, self.gid)
            lines.append(f"{user}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{home}::")
        (self.dir / "passwd").write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(self.dir / "passwd", 0o644)

    def set_acl(self, rules: dict[str, str]) -> None:
        """Cyrus-like servers: the global ACL file, ``{mailbox pattern: rights of its owner}`` (RFC 4314 letters).

        Mailboxes not named keep every right. Connections opened after a change see it.
        """
        lines = [f"{pattern} owner {rights}" for pattern, rights in rules.items()]
        (self.dir / "global-acl").write_text("\n".join(lines) + "\n")
        os.chmod(self.dir / "global-acl", 0o644)

    def home(self, user: str) -> Path:
        return self.dir / "home" / user

    def start(self) -> Dovecot:
        (self.dir / "home").mkdir(exist_ok=True)
        os.chmod(self.dir / "home", 0o755)
        subprocess.run(["dovecot", "-c", str(self.config)], check=True)
        pidfile = self.dir / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            written = pidfile.read_text().split() if pidfile.exists() else []  # empty while Dovecot writes it
            if written and self._listening(self.ports["imaps"]) and self._listening(self.ports["pop3s"]):
                self.master_pid = int(written[0])
                return self
            time.sleep(0.02)
        raise RuntimeError(f"Dovecot did not start; see {self.dir}/dovecot.log")

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        """Stop the server (its mail stays): a crashed or restarted mail server."""
        if self.master_pid:
            try:
                os.killpg(self.master_pid, signal.SIGKILL)  # the daemonised master leads its own group
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self._listening(self.ports["imaps"]):
                time.sleep(0.02)
            self.master_pid = None
            (self.dir / "run" / "master.pid").unlink(missing_ok=True)  # a start afterwards waits for its own

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def doveadm(self, *args: str) -> str:
        """Run doveadm against this instance (never the system one)."""
        out = subprocess.run(["doveadm", "-c", str(self.config), *args], check=True, capture_output=True, text=True)
        return out.stdout

    def write_maildir(self, user: str, messages: list[bytes], folder: str = "INBOX") -> None:
        """Deliver messages straight into the Maildir (fast seeding), owned by vmail, in order."""
        base = self.home(user) / "Maildir"
        if folder != "INBOX":
            base = base / ("." + folder)
            for sub in ("", "cur", "new", "tmp"):
                (base / sub).mkdir(parents=True, exist_ok=True)
                os.chown(base / sub, self.uid, self.gid)
        for sub in ("cur", "new", "tmp"):
            (base / sub).mkdir(exist_ok=True)
            os.chown(base / sub, self.uid, self.gid)
        stamp = int(time.time())
        for i, raw in enumerate(messages):
            path = base / "new" / f"{stamp}.M{i:08d}P1.test"
            path.write_bytes(raw)
            os.chown(path, self.uid, self.gid)


# max_use = 1: every connection gets a fresh smtpd, which reads main.cf anew (tests change it on the fly).
POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {d}/q
data_directory = {d}/data
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mail.example.test
mydomain = example.test
myorigin = example.test
mydestination = example.test, localhost
mynetworks = 127.0.0.0/8
local_recipient_maps =
local_transport = lmtp:unix:{dovecot}/run/lmtp-postfix
default_transport = error:this test server relays nothing
relay_transport = error:this test server relays nothing
smtp_dns_support_level = disabled
alias_maps =
alias_database =
biff = no
smtputf8_enable = yes
max_use = 1
message_size_limit = {size_limit}
smtpd_sasl_type = dovecot
smtpd_sasl_path = {dovecot}/run/auth-postfix
smtpd_tls_cert_file = {dovecot}/cert.pem
smtpd_tls_key_file = {dovecot}/key.pem
smtpd_recipient_restrictions = check_recipient_access regexp:{d}/rcpt, permit_sasl_authenticated, reject
header_checks = regexp:{d}/header_checks
"""

POSTFIX_MASTER = """\
{submission} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
{smtps} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup unix n - n 60 1 pickup
tlsmgr unix - - n 1000? 1 tlsmgr
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""

# A recipient fail-NNN@... is refused with that reply code (tests of 4xx and 5xx at RCPT).
POSTFIX_RCPT = "/^fail-([45][0-9][0-9])@/ $1 injected failure $1\n"


class Postfix:
    """A private Postfix (its own config directory and queue) on 127.0.0.1 high ports: submission with
    STARTTLS and SMTPS, SASL through ``dovecot`` (started with ``lmtp=True``), delivering into that
    Dovecot's mailboxes over LMTP. Stopped by killing the process group of the master we started."""

    def __init__(self, dovecot: Dovecot, size_limit: int = 20 << 20) -> None:
        self.dovecot = dovecot
        self.dir = Path(tempfile.mkdtemp(prefix="pfx-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.ports = {name: free_port() for name in ("submission", "smtps")}
        (self.dir / "main.cf").write_text(POSTFIX_MAIN.format(d=self.dir, dovecot=dovecot.dir, size_limit=size_limit))
        (self.dir / "master.cf").write_text(POSTFIX_MASTER.format(**self.ports))
        self.set_rejections({})
        pw = pwd.getpwnam("postfix")
        postdrop = grp.getgrnam("postdrop").gr_gid
        q = self.dir / "q"
        q.mkdir(mode=0o755)
        for sub in ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private",
                    "saved", "trace"):
            (q / sub).mkdir()
            os.chown(q / sub, pw.pw_uid, 0)
            os.chmod(q / sub, 0o700)
        for sub, mode in (("maildrop", 0o1730), ("public", 0o2710)):
            (q / sub).mkdir()
            os.chown(q / sub, pw.pw_uid, postdrop)
            os.chmod(q / sub, mode)
        (q / "pid").mkdir(mode=0o755)  # the master's lock lives here; without it, it exits 1 without a word
        (self.dir / "data").mkdir()
        os.chown(self.dir / "data", pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir / "data", 0o700)
        self._backdate()
        self.proc: subprocess.Popen | None = None

    def _backdate(self) -> None:
        # Postfix re-reads a main.cf younger than a second every 0.3 s, which slows the first start by 2 s.
        old = time.time() - 60
        for f in self.dir.iterdir():
            if f.is_file():
                os.utime(f, (old, old))

    def set_rejections(self, headers: dict[str, str]) -> None:
        """Refuse mails at DATA whose header matches: ``{regex: "REJECT 5.7.1 text"}`` (or 4.7.1); SIGHUP if running."""
        (self.dir / "rcpt").write_text(POSTFIX_RCPT)
        (self.dir / "header_checks").write_text("".join(f"/{k}/ {v}\n" for k, v in headers.items()))
        if getattr(self, "proc", None) is not None:
            os.kill(self.proc.pid, signal.SIGHUP)
            time.sleep(0.3)

    def start(self) -> Postfix:
        self.proc = subprocess.Popen(["/usr/lib/postfix/sbin/master", "-c", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(Dovecot._listening(p) for p in self.ports.values()):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        log = (self.dir / "postfix.log").read_text(errors="replace") if (self.dir / "postfix.log").exists() else ""
        self.stop()
        raise RuntimeError(f"Postfix did not start: {log[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the master calls setsid: its PID is its group
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc.stderr.close()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class CuttingProxy:
    """TCP proxy to a port on 127.0.0.1 that drops the connection after ``cut_after`` bytes from the server (if set)."""

    def __init__(self, target_port: int, cut_after: int | None = None, source: str | None = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        # Dovecot counts a connection from its own address as secure (and then takes plain passwords);
        # connecting from another loopback address (127.0.0.2) makes it an ordinary, insecure one.
        self.source = source
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.cuts = 0
        self.connections = 0  # accepted so far
        self._open: set[socket.socket] = set()
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def cut_all(self) -> None:
        """Drop every connection open now, as a router that restarts does (the server itself never notices)."""
        for s in list(self._open):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port),
                                                  source_address=(self.source, 0) if self.source else None)
            except OSError:  # the server is down (a test restarts it): this client is refused, the next one tried
                client.close()
                continue
            self.connections += 1
            self._open |= {client, server}
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.cut_after), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[:max(0, limit - sent)])
                    self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._open.discard(s)
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


class RecordingServer:
    """A TCP server on 127.0.0.1 that greets like an IMAP server, refuses everything and records what it got.

    For tests that no secret is ever sent where it was not entered for.
    """

    def __init__(self, greeting: bytes = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n") -> None:
        self.greeting = greeting
        self.received = bytearray()
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(self.greeting)
                while data := conn.recv(65536):
                    self.received += data
                    for line in data.splitlines():
                        tag = line.split(b" ", 1)[0] or b"*"
                        conn.sendall(tag + b" NO refused\r\n")
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


class WebAdmin:
    """gunicorn serving WebAdmin for a data directory with the service's own settings (webadmin/gunicorn_conf.py)."""

    def __init__(self, data_dir: Path, tls: tuple[Path, Path, Path] | None = None) -> None:
        """``tls``: (certificate chain, key, CA file) to serve HTTPS, as behind the appliance's DNS name."""
        import ssl
        import sys
        import urllib.request

        self.port = free_port()
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        extra = ["--certfile", str(tls[0]), "--keyfile", str(tls[1])] if tls else []
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(
            context=ssl.create_default_context(cafile=str(tls[2])) if tls else None))
        env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
        # Its log beside the data directory (a pipe nobody reads would block a chatty server): a failing test
        # finds the traceback of a 500 there.
        self.log = Path(data_dir).parent / "gunicorn.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config",
                                          "python:webadmin.gunicorn_conf", "--bind", f"127.0.0.1:{self.port}",
                                          *extra, "webadmin:create_app()"], env=env, stdout=subprocess.DEVNULL,
                                         stderr=log)
        for _ in range(200):
            try:
                opener.open(f"{self.base}/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError(f"gunicorn did not start: {self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # only the gunicorn we started; it stops its workers
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
