"""Real Courier-IMAP/POP3 and Cyrus IMAP/POP3 for tests, run from extracted Debian packages.

Their packages conflict with dovecot-imapd, so they are never installed: ``make foreign-servers``
downloads the .deb files and unpacks them into ``build/foreign-servers/root``. The binaries have
compiled-in paths (/usr/lib/courier, /etc/courier, /run/courier, /usr/lib/cyrus, ...), so each
instance runs in a private PID and mount namespace (``unshare --fork --pid --mount --kill-child``)
whose PID 1 is a bash script (``init.sh`` in the instance directory) that mounts, inside that
namespace only:

- an overlay on /usr: the extracted tree's usr/ above the host's /usr (read-only);
- an overlay on /etc: the host's /etc below, the instance's ``etc/`` as the writable upper layer
  (it holds /etc/courier or /etc/imapd.conf and /etc/cyrus.conf, and takes the namespace-only
  passwd entry of the "courier" or "cyrus" user);
- a tmpfs on /run (/var/run is a symlink to it on Debian 12);
- for Cyrus, which logs only to syslog, an overlay on /dev whose /dev/log is a small listener
  writing ``log/syslog.log``;

and then starts the daemons in the foreground with their output in ``log/``. If one of them
exits, PID 1 exits and the namespace ends. ``stop()`` kills the unshare process (the only PID
started here and the only one ever signalled): the kernel then kills the namespace's PID 1 and
with it every server process. Should the test process die, a parent-death signal does the same.
Mail is stored as the unprivileged ``vmail`` user, on free 127.0.0.1 ports, with TLS from a
self-signed certificate made by ``servers.make_certificate`` (``.cert`` is the file to trust).
Needs root.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from servers import ensure_vmail_user, free_port, make_certificate

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / "build" / "foreign-servers" / "root"
COURIER_UID = COURIER_GID = 65534  # "courier" inside the namespace: nobody/nogroup's ids
MISSING = "Courier/Cyrus are not unpacked in build/foreign-servers/root: run 'make foreign-servers'"


def foreign_root(*required: str) -> Path:
    """The extracted package tree; one-line error if it (or one of ``required``) is missing."""
    for rel in required or ("usr",):
        if not (ROOT / rel).exists():
            raise RuntimeError(MISSING)
    return ROOT


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _greets(port: int, tls: bool, cafile: Path, expected: bytes) -> bool:
    """True when the server on ``port`` sends its greeting (through TLS if ``tls``)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return False
    try:
        if tls:
            sock = ssl.create_default_context(cafile=str(cafile)).wrap_socket(sock, server_hostname="localhost")
        return sock.recv(200).startswith(expected)
    except (OSError, ssl.SSLError):
        return False
    finally:
        sock.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL unshare (and so the namespace) if the test process dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _crypt(password: str) -> str:
    """SHA-512 crypt(3) hash of the UTF-8 bytes of ``password`` (what libcrypt checks)."""
    out = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password.encode() + b"\n",
                         check=True, capture_output=True)
    return out.stdout.decode().strip()


class _Namespaced:
    """Common part: the instance directory, ports, certificate, and starting/stopping the namespace."""

    name = "server"
    prefix = "afs-"

    def __init__(self, users: dict[str, str]) -> None:
        self.root = foreign_root(*self.required)
        self.uid, self.gid = ensure_vmail_user()
        self.dir = Path(tempfile.mkdtemp(prefix=self.prefix, dir="/tmp"))  # short: socket paths < 108 bytes
        os.chmod(self.dir, 0o755)
        self.log_dir = self.dir / "log"
        self.log_dir.mkdir()
        self.ports = {name: free_port() for name in ("imap", "imaps", "pop3", "pop3s")}
        self.cert, self.key = make_certificate(self.dir)
        self.users = dict(users)
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None
        self._counter = 0

    # The namespace ---------------------------------------------------------------------------

    def _mounts(self) -> str:
        d, r = shlex.quote(str(self.dir)), shlex.quote(str(self.root))
        return f"""\
set -e
mount -t overlay overlay -o lowerdir={r}/usr:/usr /usr
mkdir -p {d}/etc {d}/.etc-work
mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/etc,workdir={d}/.etc-work /etc
mount -t tmpfs -o mode=0755 tmpfs /run
"""

    def _syslog(self) -> str:
        """Shell lines giving the namespace a /dev/log that writes to log/syslog.log (Cyrus logs only there).

        /dev gets an overlay with an upper layer of our own, so the socket never appears in the host's /dev.
        """
        d = shlex.quote(str(self.dir))
        listener = ("import os, socket, sys\n"
                    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                    "s.bind('/dev/log'); os.chmod('/dev/log', 0o666)\n"
                    "f = open(sys.argv[1], 'ab', buffering=0)\n"
                    "while True:\n    f.write(s.recv(65536).rstrip(b'\\0\\n') + b'\\n')\n")
        return f"""\
mkdir -p {d}/.dev {d}/.dev-work
mount -t overlay overlay -o lowerdir=/dev,upperdir={d}/.dev,workdir={d}/.dev-work /dev
{shlex.quote(sys.executable)} -c {shlex.quote(listener)} {d}/log/syslog.log &
i=0; while [ ! -S /dev/log ]; do i=$((i+1)); [ $i -gt 200 ] && {{ echo 'no /dev/log'; exit 1; }}; sleep 0.05; done
"""

    def _script(self) -> str:
        raise NotImplementedError

    def _ready(self) -> bool:
        return (all(_listening(p) for p in self.ports.values())
                and _greets(self.ports["imaps"], True, self.cert, b"* OK")
                and _greets(self.ports["pop3s"], True, self.cert, b"+OK"))

    def start(self):
        if os.geteuid() != 0:
            raise RuntimeError(f"{self.name} needs root (mount namespace, mail as vmail)")
        script = self.dir / "init.sh"
        script.write_text(self._mounts() + self._script())
        init_log = self.log_dir / "init.log"
        began = time.monotonic()
        with open(init_log, "wb") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--fork", "--pid", "--mount", "--mount-proc", "--kill-child", "--propagation", "private",
                 "/bin/bash", str(script)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}, preexec_fn=_die_with_parent)
        deadline = began + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._ready():
                self.start_seconds = time.monotonic() - began
                return self
            time.sleep(0.05)
        self.stop(keep_logs=True)
        last = init_log.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty)"]
        raise RuntimeError(f"{self.name} did not start ({last[0]}); see the logs in {self.log_dir}")

    def stop(self, keep_logs: bool = False) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)  # unshare only: --kill-child takes the namespace down
            self.proc.wait()
            self.proc = None
        if not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def logs(self) -> str:
        """All log files of this instance, for assertion messages."""
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')}" for p in sorted(self.log_dir.iterdir()))


class Courier(_Namespaced):
    """Courier-IMAP 5 and Courier-POP3 with authdaemond/userdb. ``users`` maps user name to password.

    Debian's own /etc/courier files are used with only these lines appended: 127.0.0.1 and our
    ports, the test certificate, no TLS session cache, higher per-IP limits, ``authuserdb`` as the
    only auth module. Folders are Maildir++: ``INBOX.Kunden.2024`` is ``~/Maildir/.Kunden.2024``.
    """

    name = "Courier"
    prefix = "acr-"
    required = ("usr/lib/courier/courier/imaplogin", "usr/lib/courier/courier/courierpop3d",
                "usr/lib/courier/courier-authlib/authdaemond", "usr/sbin/makeuserdb")

    def __init__(self, users: dict[str, str]) -> None:
        super().__init__(users)
        (self.dir / "home").mkdir()
        os.chmod(self.dir / "home", 0o755)
        for user in self.users:
            self._make_maildir(self.home(user) / "Maildir")
        self._write_config()

    def home(self, user: str) -> Path:
        return self.dir / "home" / user

    def _write_config(self) -> None:
        etc = self.dir / "etc" / "courier"
        etc.mkdir(parents=True)
        os.chmod(self.dir / "etc", 0o755)
        for name in ("authdaemonrc", "imapd", "imapd-ssl", "pop3d", "pop3d-ssl"):
            shutil.copy(self.root / "etc" / "courier" / name, etc / name)
        pem = etc / "server.pem"  # couriertls wants key and certificate in one file
        pem.write_bytes(self.key.read_bytes() + self.cert.read_bytes())
        os.chmod(pem, 0o600)
        os.chown(pem, COURIER_UID, COURIER_GID)  # STARTTLS runs couriertls as "courier" (see _script)
        tls = f"""
TLS_CERTFILE={pem}
TLS_DHPARAMS=
TLS_CACHEFILE=
TLS_TRUSTCERTS={self.cert}
"""
        with open(etc / "authdaemonrc", "a") as f:
            f.write('\n# archivista-mail test fixture\nauthmodulelist="authuserdb"\ndaemons=3\n')
        with open(etc / "imapd", "a") as f:
            f.write(f"\n# archivista-mail test fixture\nADDRESS=127.0.0.1\nPORT={self.ports['imap']}\n"
                    "MAXDAEMONS=100\nMAXPERIP=100\n")
        with open(etc / "imapd-ssl", "a") as f:
            f.write(f"\n# archivista-mail test fixture\nSSLADDRESS=127.0.0.1\nSSLPORT={self.ports['imaps']}\n{tls}")
        with open(etc / "pop3d", "a") as f:
            f.write(f"\n# archivista-mail test fixture\nADDRESS=127.0.0.1\nPORT={self.ports['pop3']}\n"
                    "MAXDAEMONS=100\nMAXPERIP=100\n")
        with open(etc / "pop3d-ssl", "a") as f:
            f.write(f"\n# archivista-mail test fixture\nSSLADDRESS=127.0.0.1\nSSLPORT={self.ports['pop3s']}\n{tls}")
        lines = []
        for user, password in self.users.items():
            fields = [f"uid={self.uid}", f"gid={self.gid}", f"home={self.home(user)}",
                      f"mail={self.home(user) / 'Maildir'}", f"systempw={_crypt(password)}"]
            lines.append(f"{user}\t{'|'.join(fields)}")
        userdb = etc / "userdb"
        userdb.write_text("\n".join(lines) + "\n")
        os.chmod(userdb, 0o600)  # makeuserdb refuses group/world permissions

    def _script(self) -> str:
        log = shlex.quote(str(self.log_dir))
        user = "courier"  # imaplogin hard-codes it for STARTTLS; it exists only in the namespace's /etc/passwd
        tcpd = "/usr/sbin/couriertcpd -address=$ADDRESS -maxprocs=$MAXDAEMONS -maxperip=$MAXPERIP $TCPDOPTS"
        tcpd_ssl = "/usr/sbin/couriertcpd -address=$SSLADDRESS -maxprocs=$MAXDAEMONS -maxperip=$MAXPERIP $TCPDOPTS"
        imap = "/usr/lib/courier/courier/imaplogin /usr/bin/imapd $MAILDIRPATH"
        pop3 = "/usr/lib/courier/courier/courierpop3login /usr/lib/courier/courier/courierpop3d $MAILDIRPATH"
        # What Debian's /usr/lib/courier/{imapd,imapd-ssl,pop3d,pop3d-ssl} start scripts run,
        # without courierlogger (it logs to a syslog that does not exist here).
        daemons = {
            "imapd": (". /etc/courier/imapd; . /etc/courier/imapd-ssl; IMAP_STARTTLS=$IMAPDSTARTTLS; "
                      f"exec {tcpd} -stderr={log}/imapd.log $PORT {imap}"),
            "imapd-ssl": (". /etc/courier/imapd; . /etc/courier/imapd-ssl; IMAP_TLS=1; "
                          f"exec {tcpd_ssl} -stderr={log}/imapd-ssl.log $SSLPORT $COURIERTLS -server -tcpd "
                          f"-user={user} {imap}"),
            "pop3d": (". /etc/courier/pop3d; . /etc/courier/pop3d-ssl; "
                      f"exec {tcpd} -stderr={log}/pop3d.log $PORT {pop3}"),
            "pop3d-ssl": (". /etc/courier/pop3d; . /etc/courier/pop3d-ssl; "
                          "POP3_TLS=1; POP3_STARTTLS=NO; POP3_TLS_REQUIRED=0; "
                          f"exec {tcpd_ssl} -stderr={log}/pop3d-ssl.log $SSLPORT $COURIERTLS -server -tcpd "
                          f"-user={user} {pop3}"),
        }
        env = "/usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c"
        passwd = f"courier:x:{COURIER_UID}:{COURIER_GID}:couriertls, test namespace:/nonexistent:/usr/sbin/nologin"
        lines = [
            f"echo '{passwd}' >>/etc/passwd",
            "mkdir -p /run/courier/authdaemon",
            "cd / && /usr/sbin/makeuserdb",
            f"{env} 'set -a; . /etc/courier/authdaemonrc; exec /usr/lib/courier/courier-authlib/authdaemond' "
            f"2>>{log}/authdaemond.log &",
            "i=0; while [ ! -S /run/courier/authdaemon/socket ]; do i=$((i+1)); "
            "[ $i -gt 200 ] && { echo 'authdaemond did not create its socket'; exit 1; }; sleep 0.05; done",
        ]
        for name, command in daemons.items():
            lines.append(f"{env} {shlex.quote('set -a; ' + command)} 2>>{log}/{name}.log &")
        lines.append("echo started")
        # PID 1 of the namespace: if any server exits, say so and end (which ends all the others).
        lines.append("set +e; wait -n; echo \"a server process exited with status $?\"; exit 1")
        return "\n".join(lines) + "\n"

    # Mail ------------------------------------------------------------------------------------

    def _make_maildir(self, path: Path) -> None:
        for p in (path.parent, path, path / "cur", path / "new", path / "tmp"):
            p.mkdir(exist_ok=True)
            os.chown(p, self.uid, self.gid)

    def folder_path(self, user: str, folder: str = "INBOX") -> Path:
        """Maildir++ directory of an IMAP folder name (``INBOX`` or ``INBOX.A.B``, or ``A.B``)."""
        maildir = self.home(user) / "Maildir"
        if folder.upper() == "INBOX":
            return maildir
        if folder.upper().startswith("INBOX."):
            folder = folder[len("INBOX."):]
        return maildir / ("." + folder)

    def create_folder(self, user: str, name: str) -> Path:
        """Create a folder (only this one: Courier shows missing parents as \\Noselect)."""
        path = self.folder_path(user, name)
        if path == self.home(user) / "Maildir":
            return path
        self._make_maildir(path)
        marker = path / "maildirfolder"
        marker.touch()
        os.chown(marker, self.uid, self.gid)
        return path

    def deliver(self, user: str, raw: bytes | list[bytes], folder: str = "INBOX", seen: bool = False):
        """Write a message (or a list, in order) into ``folder`` (created if needed) as new (or seen) Maildir
        files owned by vmail; returns the path (or the list of paths).

        Stored with LF line ends, as an MDA does: Courier adds the CR when it sends a message, so a
        CRLF file would be served with CR CR LF. Clients get ``raw`` back with CRLF line ends.
        """
        base = self.create_folder(user, folder)
        paths = []
        for message in [raw] if isinstance(raw, bytes) else raw:
            self._counter += 1
            unique = f"{int(time.time())}.M{self._counter:06d}P{os.getpid()}.test"
            tmp = base / "tmp" / unique
            tmp.write_bytes(message.replace(b"\r\n", b"\n"))
            os.chown(tmp, self.uid, self.gid)
            final = base / "cur" / f"{unique}:2,S" if seen else base / "new" / unique
            os.rename(tmp, final)
            paths.append(final)
        return paths[0] if isinstance(raw, bytes) else paths


CYRUS_CONF = """\
# archivista-mail test fixture: only what the tests use (Debian's also runs nntp, http, sieve, notify)
START {{
  recover cmd="ctl_cyrusdb -r"
}}
SERVICES {{
  imap cmd="imapd -U 30" listen="127.0.0.1:{imap}" prefork=0 maxchild=100
  imaps cmd="imapd -s -U 30" listen="127.0.0.1:{imaps}" prefork=0 maxchild=100
  pop3 cmd="pop3d -U 30" listen="127.0.0.1:{pop3}" prefork=0 maxchild=50
  pop3s cmd="pop3d -s -U 30" listen="127.0.0.1:{pop3s}" prefork=0 maxchild=50
  lmtpunix cmd="lmtpd" listen="/run/cyrus/socket/lmtp" prefork=0 maxchild=20
}}
EVENTS {{
  checkpoint cmd="ctl_cyrusdb -c" period=30
}}
"""


class Cyrus(_Namespaced):
    """Cyrus IMAP 3.6 with IMAP and POP3; ``users`` maps user name to password (SASL sasldb, PLAIN/LOGIN).

    Debian's /etc/imapd.conf with only paths, TLS and the sasldb changed, so by default the Debian
    namespace: "." separator, no altnamespace (folders are ``INBOX.Name``), ``popminpoll: 1``.
    ``unixhierarchysep=True, altnamespace=True`` gives the other common set-up ("/" separator,
    folders beside INBOX). ``config`` overrides or adds imapd.conf options.
    Mail is stored by the Cyrus server itself, as the user ``cyrus``, which inside the namespace has
    vmail's uid and the group mail; mail goes in through IMAP (``deliver`` appends as the user).
    """

    name = "Cyrus"
    prefix = "acy-"
    required = ("usr/lib/cyrus/bin/master", "usr/lib/cyrus/bin/imapd", "usr/lib/cyrus/bin/pop3d",
                "usr/sbin/saslpasswd2", "etc/imapd.conf")
    MAIL_GID = 8  # Debian's group "mail", which Debian's Cyrus runs as

    def __init__(self, users: dict[str, str], *, unixhierarchysep: bool = False, altnamespace: bool = False,
                 config: dict[str, str] | None = None) -> None:
        super().__init__(users)
        self.separator = "/" if unixhierarchysep else "."
        self.altnamespace = altnamespace
        os.chown(self.key, self.uid, self.MAIL_GID)  # imapd reads it after dropping root
        d = self.dir
        options = {
            "configdirectory": f"{d}/lib",
            "partition-default": f"{d}/spool",
            "partition-news": f"{d}/news",
            "newsspool": f"{d}/newsspool",
            "sievedir": f"{d}/sieve",
            "altnamespace": "yes" if altnamespace else "no",
            "unixhierarchysep": "yes" if unixhierarchysep else "no",
            "sasl_pwcheck_method": "auxprop",
            "sasl_auxprop_plugin": "sasldb",
            "sasl_sasldb_path": f"{d}/sasldb2",
            "sasl_mech_list": "PLAIN LOGIN",
            "tls_server_cert": str(self.cert),
            "tls_server_key": str(self.key),
            "servername": "localhost",
            **(config or {}),
        }
        etc = d / "etc"
        (etc / "default").mkdir(parents=True)
        os.chmod(etc, 0o755)
        lines, seen = [], set()
        for line in (self.root / "etc" / "imapd.conf").read_text().splitlines():
            key = line.split(":", 1)[0].strip() if ":" in line and not line.lstrip().startswith("#") else None
            if key in options:
                line = f"{key}: {options[key]}"
                seen.add(key)
            lines.append(line)
        lines += ["", "# archivista-mail test fixture"] + [f"{k}: {v}" for k, v in options.items() if k not in seen]
        (etc / "imapd.conf").write_text("\n".join(lines) + "\n")
        (etc / "cyrus.conf").write_text(CYRUS_CONF.format(**self.ports))
        (etc / "default" / "cyrus-imapd").write_text("CYRUSOPTFILESYS=0\n")  # no chattr in makedirs
        passwords = d / "passwords"  # user TAB password lines for saslpasswd2, removed by the init script
        passwords.touch(mode=0o600)
        passwords.write_bytes(b"".join(f"{u}\t{p}\n".encode() for u, p in self.users.items()))

    def _script(self) -> str:
        d = shlex.quote(str(self.dir))
        return self._syslog() + f"""\
echo 'cyrus:x:{self.uid}:{self.MAIL_GID}:Cyrus IMAP in the test namespace:/nonexistent:/usr/sbin/nologin' >>/etc/passwd
mkdir -p /run/cyrus/proc /run/cyrus/lock /run/cyrus/socket && chown -R cyrus:mail /run/cyrus
mkdir -p {d}/lib {d}/spool
/usr/lib/cyrus/bin/makedirs >{d}/log/makedirs.log 2>&1 || {{ echo "makedirs failed: see makedirs.log"; exit 1; }}
while IFS= read -r line; do
  user=${{line%%$'\\t'*}}; password=${{line#*$'\\t'}}
  printf '%s' "$password" | /usr/sbin/saslpasswd2 -f {d}/sasldb2 -u localhost -p -c "$user"  # realm = servername
done <{d}/passwords
rm -f {d}/passwords
chown cyrus:mail {d}/sasldb2 && chmod 0640 {d}/sasldb2
/usr/lib/cyrus/bin/master -C /etc/imapd.conf -M /etc/cyrus.conf -p /run/cyrus/master.pid -L {d}/log/master.log &
echo started
set +e; wait -n; echo "a server process exited with status $?"; exit 1
"""

    # Mail (through IMAP: Cyrus keeps its own index) --------------------------------------------

    def _imap(self, user: str):
        import imaplib

        client = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], timeout=10,
                                   ssl_context=ssl.create_default_context(cafile=str(self.cert)))
        credentials = f"\0{user}\0{self.users[user]}".encode()  # AUTHENTICATE PLAIN: UTF-8 passwords work
        client.authenticate("PLAIN", lambda _challenge: credentials)
        return client

    @staticmethod
    def _create(client, name: str) -> None:
        if name.upper() == "INBOX":
            return
        typ, data = client.create(_quote(name))
        if typ != "OK" and b"exists" not in b" ".join(data).lower():
            raise RuntimeError(f"Cyrus refused CREATE {name!r}: {data}")

    def create_folder(self, user: str, name: str) -> None:
        """CREATE as the user (Cyrus creates missing parents as real folders)."""
        client = self._imap(user)
        try:
            self._create(client, name)
        finally:
            client.logout()

    def deliver(self, user: str, raw: bytes | list[bytes], folder: str = "INBOX", seen: bool = False) -> None:
        """APPEND one message (or a list, in order) as the user, creating the folder if needed.

        Cyrus applies its own rules as on any delivery: raw 8-bit header bytes become "X" (munge8bit).
        """
        client = self._imap(user)
        try:
            self._create(client, folder)
            for message in [raw] if isinstance(raw, bytes) else raw:
                typ, data = client.append(_quote(folder), "(\\Seen)" if seen else None, None, message)
                if typ != "OK":
                    raise RuntimeError(f"Cyrus refused APPEND to {folder!r}: {data}")
        finally:
            client.logout()

    def set_acl(self, user: str, folder: str, identifier: str, rights: str) -> None:
        """SETACL as the owning user. The owner cannot drop its own "a"; it always keeps "kxan"
        (implicit_owner_rights), so ``set_acl(u, f, u, "lrswa")`` leaves no "t"/"e": no \\Deleted, no EXPUNGE."""
        client = self._imap(user)
        try:
            typ, data = client.setacl(_quote(folder), identifier, rights)
            if typ != "OK":
                raise RuntimeError(f"Cyrus refused SETACL {folder!r}: {data}")
        finally:
            client.logout()


def _quote(name: str) -> str:
    """An IMAP quoted string of a folder name (modified UTF-7 for non-ASCII names)."""
    from imapclient.imap_utf7 import encode

    return '"' + encode(name).decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"'
