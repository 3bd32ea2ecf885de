"""Install the package in a clean Debian 12 booted with systemd, and check it as an operator would.

    python3 debian/tests/install_check.py OLD.deb NEW.deb

Makes a minimal bookworm root with mmdebstrap (from this host's own apt sources), boots it with
systemd-nspawn (sharing the host's network, so 127.0.0.1 is the host's loopback), and checks:
the service runs and /healthz answers; the cron file is accepted and run by the real cron daemon,
as the service user, importing from a Dovecot on the loopback; mailtest.py runs from its
directory, also for Google Workspace and Exchange (EWS) against their emulators; a CLI-created admin can log in;
an upgrade keeps data, key and links; remove stops the service; purge leaves nothing behind.
Prints one line per check and 'N passed, N failed'; exits 1 if any failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from mailfactory import make_mail  # noqa: E402
from servers import Dovecot  # noqa: E402

SOURCES = "/etc/apt/sources.list.d/debian.sources"
KEEP_CONFFILES = ["-o", "Dpkg::Options::=--force-confold"]
PORT = 8090  # the package's default; another when something on this host listens there (the container shares
#              the host's network)


def choose_port() -> int:
    """The package's default port if it is free on this host, else a free one (and say so)."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8090))
            return 8090
        except OSError:
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"note: 127.0.0.1:8090 is taken on this host (the container shares its network); WebAdmin is checked "
          f"on 127.0.0.1:{port} instead, set in /etc/default/archivista-mail before the install", flush=True)
    return port
results: list[tuple[bool, str]] = []


def check(ok: bool, what: str) -> bool:
    results.append((bool(ok), what))
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    return bool(ok)


class Container:
    def __init__(self, root: Path) -> None:
        self.root = root
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        self.proc = subprocess.Popen(["systemd-nspawn", "-q", "-D", str(root), "--boot", "--register=no",
                                      "--keep-unit"], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = None
        for _ in range(300):
            children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
            if children.strip():
                self.pid = int(children.split()[0])
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise RuntimeError("the container did not boot")

    def run(self, *cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", "-t", str(self.pid), "-a", *cmd], capture_output=True, text=True,
                              check=check, input=input)

    def sh(self, script: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return self.run("/bin/sh", "-c", script, check=check, input=input)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # only the nspawn we started
        self.proc.wait()


def http(container: Container, path: str, data: str | None = None) -> str:
    code = ("import urllib.request,sys,http.cookiejar,re;"
            "j=http.cookiejar.CookieJar();o=urllib.request.build_opener(urllib.request.HTTPCookieProcessor(j));"
            f"b='http://127.0.0.1:{PORT}';"
            "p=o.open(b+'/login').read().decode();t=re.search('csrf_token\" value=\"([^\"]+)',p).group(1);"
            "import urllib.parse as u;"
            "r=o.open(b+'/login',u.urlencode({'username':'anna','password':'anna-password','csrf_token':t}).encode());"
            f"print(r.geturl());print(o.open(b+'{path}').read().decode())")
    return container.run("python3", "-c", code, check=False).stdout


def check_watch_service(container, dovecot) -> None:
    """The watch service, switched on as WebAdmin's setting does, archives a mail delivered to the loopback
    Dovecot within seconds; cron is kept out of it (a one-day interval)."""
    as_user = "runuser -u archivista-mail -- archivista-mail "
    check(container.run("systemctl", "is-active", "archivista-mail-watch", check=False).stdout.strip() == "active",
          "the watch service runs (waiting until it is switched on)")
    container.sh(as_user + "settings set import_interval_minutes 1440 && " + as_user + "settings set watch_enabled 1")
    status = ""
    for _ in range(60):
        status = container.sh(as_user + "watch-status", check=False).stdout
        if "box/INBOX: idle, last seen 2" in status:
            break
        time.sleep(0.5)
    check("box/INBOX: idle, last seen 2" in status, f"the watch service watches the inbox with IDLE: {status!r}")
    dovecot.write_maildir("importer", [make_mail(99)])
    delivered = time.monotonic()
    count = ""
    while time.monotonic() - delivered < 30:
        count = container.sh(as_user + "docs list --json | python3 -c 'import json,sys;print(len(json.load("
                             "sys.stdin)))'", check=False).stdout.strip()
        if count == "6":
            break
        time.sleep(0.2)
    took = time.monotonic() - delivered
    check(count == "6" and took < 10, f"the watch service archived a new mail in {took:.1f} s, without cron")


def check_gmail_and_ews(container: Container, root: Path) -> None:
    """mailtest.py with the Google Workspace and Exchange (EWS) settings on its command line, against the emulators
    on the host's loopback (the installed libraries: google-auth, googleapiclient, exchangelib with NTLM)."""
    from ews_emulator import EwsEmulator
    from gmail_emulator import SCOPE_READONLY, GmailEmulator

    subject = b"Subject: =?utf-8?q?Rechnung_2024-117_f=C3=BCr_Beratung?=\r\nFrom: a@example.com\r\n\r\nHallo\r\n"
    gmail, ews = GmailEmulator().start(), EwsEmulator().start()
    try:
        gmail.add_mailbox("anna@kanzlei.example")
        gmail.deliver("anna@kanzlei.example", [subject])
        info = gmail.add_service_account("archivista@kanzlei.iam.gserviceaccount.com")
        gmail.authorize(info["client_id"], [SCOPE_READONLY])
        for name, data in (("sa.json", json.dumps(info).encode()), ("gmail-ca.pem", gmail.ca_file.read_bytes()),
                           ("ews-ca.pem", ews.ca_file.read_bytes())):
            (root / "opt" / name).write_bytes(data)
            (root / "opt" / name).chmod(0o644)
        tested = container.sh(f"cd /usr/share/archivista-mail && runuser -u archivista-mail -- env HTTPS_PROXY="
                              f"http://127.0.0.1:{gmail.port} HTTPLIB2_CA_CERTS=/opt/gmail-ca.pem python3 mailtest.py "
                              "--kind gmail --service-account-file /opt/sa.json --mailbox anna@kanzlei.example",
                              check=False)
        check(tested.stdout.splitlines() == ["Authenticated!", "Mailbox: anna@kanzlei.example",
                                             "Inbox: INBOX (1 message, 1 unread)",
                                             "First message: Rechnung 2024-117 für Beratung"],
              "mailtest.py tests a Google Workspace mailbox (Gmail API emulator)"
              + ("" if tested.returncode == 0 else f": {tested.stdout[-300:]} {tested.stderr[-500:]}"))
        ews.add_mailbox("bert@example.test", language="de")
        ews.add_user("EXAMPLE\\svc-archiv", "Dienst-Pa55")
        ews.grant_impersonation("EXAMPLE\\svc-archiv", "all")
        ews.deliver("bert@example.test", [subject])
        tested = container.sh("cd /usr/share/archivista-mail && runuser -u archivista-mail -- python3 mailtest.py "
                              f"--kind ews --url {ews.url} --user 'EXAMPLE\\svc-archiv' --password-stdin --mailbox "
                              "bert@example.test --ca-file /opt/ews-ca.pem", check=False, input="Dienst-Pa55\n")
        check(tested.stdout.splitlines()[-4:] == ["Authenticated!", "Mailbox: bert@example.test",
                                                  "Inbox: Posteingang (1 message, 1 unread)",
                                                  "First message: Rechnung 2024-117 für Beratung"]
              and set(ews.auth_used) == {"ntlm"},
              "mailtest.py tests an Exchange mailbox over EWS with NTLM (EWS emulator)"
              + ("" if tested.returncode == 0 else f": {tested.stdout[-300:]} {tested.stderr[-500:]}"))
    finally:
        gmail.stop()
        ews.stop()


def main() -> int:
    old_deb, new_deb = (Path(p).resolve() for p in sys.argv[1:3])
    work = Path(tempfile.mkdtemp(prefix="amdeb-"))
    root = work / "root"
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase",
                    "--include=systemd-sysv,dbus,cron,python3,ca-certificates", "bookworm", str(root), SOURCES],
                   check=True)
    (root / "opt" / "debs").mkdir(parents=True)  # not /tmp: the booted system mounts a tmpfs there
    for deb in (old_deb, new_deb):
        shutil.copy(deb, root / "opt" / "debs" / deb.name)
    global PORT
    PORT = choose_port()
    if PORT != 8090:  # a conffile the package then keeps (--force-confold), as an admin's edit would be kept
        (root / "etc" / "default").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "default" / "archivista-mail").write_text(f"ARCHIVISTA_MAIL_BIND=127.0.0.1:{PORT}\n")
    dovecot = Dovecot({"importer": "imap-password"}).start()
    container = None
    try:
        container = Container(root)
        container.run("apt-get", "update", "-qq")
        installed = container.run("apt-get", "install", "-y", "-qq", *KEEP_CONFFILES, f"/opt/debs/{old_deb.name}",
                                  check=False)
        check(installed.returncode == 0, f"apt installs {old_deb.name}" + ("" if installed.returncode == 0
                                                                          else f": {installed.stderr[-500:]}"))
        time.sleep(1)
        check(container.run("systemctl", "is-active", "archivista-mail", check=False).stdout.strip() == "active",
              "the WebAdmin service runs")
        health = container.run("python3", "-c", "import urllib.request;print(urllib.request.urlopen("
                               f"'http://127.0.0.1:{PORT}/healthz').read().decode())", check=False).stdout
        check('"ok"' in health, "/healthz answers")
        key_mode = container.sh("stat -c %a:%U /var/lib/archivista-mail/secret.key", check=False).stdout.strip()
        check(key_mode == "600:archivista-mail", f"the key is 0600 and the service user's ({key_mode})")
        made = container.sh("printf 'anna-password\\n' | runuser -u archivista-mail -- archivista-mail admin create "
                            "anna --password-stdin", check=False)
        check(made.returncode == 0, "an admin is created with the CLI")
        page = http(container, "/documents")
        check("/documents" in page and "Abmelden" in page, "that admin logs in to WebAdmin")

        # The importer from the real cron daemon, as the service user, against Dovecot on the loopback.
        dovecot.write_maildir("importer", [make_mail(i) for i in range(5)])
        container.sh("printf 'imap-password\\n' | runuser -u archivista-mail -- archivista-mail account add imap "
                     f"box --host 127.0.0.1 --port {dovecot.ports['imap']} --security plain --user importer "
                     "--password-stdin")
        # The interval, set in the configuration file: 1 minute, so the test need not wait 10.
        container.sh("echo 'import_interval_minutes = 1' >> /etc/archivista-mail/archivista-mail.conf")
        count = ""
        for _ in range(75):
            count = container.sh("runuser -u archivista-mail -- archivista-mail docs list --json | "
                                 "python3 -c 'import json,sys;print(len(json.load(sys.stdin)))'", check=False).stdout
            if count.strip() == "5":
                break
            time.sleep(2)
        check(count.strip() == "5", f"cron ran the importer as the service user: {count.strip() or 0} of 5 mails")
        check_watch_service(container, dovecot)
        tested = container.sh("cd /usr/share/archivista-mail && runuser -u archivista-mail -- python3 mailtest.py "
                              "--account box", check=False)
        check(tested.stdout.startswith("Authenticated!\nMailbox: importer@127.0.0.1"),
              "python3 mailtest.py runs from its directory with the importer's settings"
              + ("" if tested.returncode == 0 else f": {tested.stdout[-300:]} {tested.stderr[-500:]}"))
        check_gmail_and_ews(container, root)
        audit = container.sh("runuser -u archivista-mail -- archivista-mail audit --action import.run --json",
                             check=False).stdout
        check('"actor": "archivista-mail"' in audit, "the import ran as archivista-mail")
        container.sh("runuser -u archivista-mail -- python3 -c \"import sqlite3;c=sqlite3.connect("
                     "'/var/lib/archivista-mail/state.db');c.execute(\\\"insert or replace into settings values "
                     "('link_base_url','https://archiv.example.ch')\\\");c.commit()\"")
        key_before = container.sh("sha256sum /var/lib/archivista-mail/secret.key").stdout.split()[0]

        upgraded = container.run("apt-get", "install", "-y", "-qq", *KEEP_CONFFILES, f"/opt/debs/{new_deb.name}",
                                 check=False)
        check(upgraded.returncode == 0, f"upgrade to {new_deb.name}")
        key_after = container.sh("sha256sum /var/lib/archivista-mail/secret.key").stdout.split()[0]
        check(key_before == key_after, "the upgrade keeps the key")
        kept = container.sh("runuser -u archivista-mail -- archivista-mail docs list --json | "
                            "python3 -c 'import json,sys;print(len(json.load(sys.stdin)))'", check=False).stdout
        check(kept.strip() == "6", "the upgrade keeps the archive")
        link = container.sh("runuser -u archivista-mail -- archivista-mail link 1", check=False).stdout
        check("https://archiv.example.ch/doc/1" in link, "the upgrade keeps the links")
        time.sleep(1)
        check(container.run("systemctl", "is-active", "archivista-mail", check=False).stdout.strip() == "active",
              "the service runs after the upgrade")

        container.run("apt-get", "remove", "-y", "-qq", "archivista-mail", check=False)
        check(container.run("systemctl", "is-active", "archivista-mail", check=False).stdout.strip() != "active",
              "remove stops the service")
        check(container.sh("test -d /var/lib/archivista-mail", check=False).returncode == 0,
              "remove keeps the data")
        container.run("apt-get", "purge", "-y", "-qq", "archivista-mail", check=False)
        leftovers = container.sh("ls -d /var/lib/archivista-mail /etc/archivista-mail /usr/lib/archivista-mail "
                                 "/etc/cron.d/archivista-mail 2>/dev/null; getent passwd archivista-mail",
                                 check=False).stdout.strip()
        check(leftovers == "", f"purge leaves nothing behind{': ' + leftovers if leftovers else ''}")
    finally:
        if container:
            container.stop()
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)
    passed = sum(ok for ok, _ in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
