"""IMAP through imapclient: login, folders, new UIDs above the cursor, BODY.PEEK[], actions."""

from __future__ import annotations

import imaplib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imap_utf7 import encode as encode_utf7
from imapclient.response_parser import parse_response

from ..accounts import Account, AfterAction
from ..errors import (
    ActionRefusedError,
    AuthError,
    ConfigError,
    ConnectError,
    FolderError,
    FolderSkippedError,
    Text,
    escaped,
    t,
)
from ..folders import FolderNameError, Namespace
from ..model import RawMail, SpooledData
from ..spool import SpoolWriter
from . import base
from .base import (
    UNREAD_ONLY,
    Batch,
    Folder,
    FolderReport,
    InboxReport,
    Item,
    Lang,
    Ledger,
    ProbeReport,
    Setting,
    Source,
    after_setting,
    batches_of,
    check_folder_names,
)
from .mailserver import Session, plain_warning, reason_of, server_settings, tls_context


def _announces_mail(responses: list) -> bool:
    """True when untagged IDLE responses say the folder has new mail (``* n EXISTS``, ``* n RECENT``)."""
    return any(isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses)


def _statuses(responses: list) -> list[tuple[str, dict]]:
    """What NOTIFY announced: (server name, STATUS items) of each ``* STATUS name (...)`` (RFC 5465 5.2), from
    responses as imapclient parses them."""
    found = []
    for r in responses:
        if isinstance(r, tuple) and len(r) > 2 and r[0] == b"STATUS" and isinstance(r[2], tuple):
            name = r[1]  # the parser gives a name like 2024 as a number
            items = dict(zip(r[2][::2], r[2][1::2]))
            found.append((name.decode("ascii", "replace") if isinstance(name, bytes) else str(name), items))
    return found


def _overflowed(responses: list) -> bool:
    """``* OK [NOTIFICATIONOVERFLOW]``: the server stopped notifying (RFC 5465 5.8)."""
    return any(isinstance(r, tuple) and r[:1] == (b"OK",) and b"NOTIFICATIONOVERFLOW" in bytes(r[-1])
               for r in responses if len(r) > 1 and isinstance(r[-1], bytes))


def _begin_idle(client: IMAPClient) -> list:
    """IDLE, accepting untagged responses before the server's "+" (NOTIFY's STATUS may come at any moment, and
    imapclient's idle() takes them for errors); returns them, parsed. imapclient has no such call: its imaplib
    object is used as imapclient's own idle() uses it."""
    imap = client._imap
    tag = imap._command("IDLE")
    while imap._get_response() is not None:  # an untagged line (None: the "+")
        if imap.tagged_commands.get(tag):
            typ, data = imap.tagged_commands.pop(tag)
            raise IMAPClientError(f"IDLE refused: {typ} {data}")
    client._idle_tag = tag
    return _stored(client)


def _stored(client: IMAPClient) -> list:
    """The STATUS responses imaplib kept while it waited for something else (they are dropped there)."""
    stored = client._imap.untagged_responses.pop("STATUS", [])
    client._imap.untagged_responses.clear()  # nothing else kept there is read on a watching connection
    return [(b"STATUS", *parse_response([data])) for data in stored if isinstance(data, bytes)]


def _keepalive(client: IMAPClient) -> None:
    """TCP keepalive on a long-lived connection, so a peer that vanished is noticed within about two minutes."""
    sock = client.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


@dataclass(frozen=True)
class FolderInfo:
    """What selecting a folder told us. ``name`` is the folder as configured, ``server_name`` the server's."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int
    server_name: str = ""
    permanent_flags: frozenset[bytes] | None = None  # upper case; None: the server did not say (all are kept)


SEEN = b"\\Seen"
DELETED = b"\\Deleted"
# LIST flags of names that exist only as a level above other folders, or not at all (RFC 3501, RFC 5258).
NOT_SELECTABLE = {b"\\NOSELECT", b"\\NONEXISTENT"}
# Servers cap a command's length (Dovecot: "Too long argument" near 64 KB); imapclient sends
# UID lists as they are, so long lists go in slices.
UIDS_PER_COMMAND = 2000
PROTOCOL_ERRORS = (IMAPClientError, imaplib.IMAP4.error, imaplib.IMAP4.abort)


class ImapSession(Session):
    """One logged-in IMAP connection for an account. Use as a context manager."""

    auth_errors = (LoginError,)
    protocol_errors = PROTOCOL_ERRORS

    default_ports = {"ssl": 993, "starttls": 143}

    def _connect(self) -> None:
        acc = self.account
        self._folders: dict[str, set[bytes]] | None = None
        self._rights_checked: set[tuple[str, str]] = set()
        with self._guard(t("connecting")):
            if acc.security == "ssl":
                self.client = IMAPClient(acc.host, port=acc.port, ssl=True, ssl_context=tls_context(acc),
                                         timeout=self.timeout)
            elif acc.security in ("starttls", "plain"):
                self.client = IMAPClient(acc.host, port=acc.port, ssl=False, timeout=self.timeout)
                if acc.security == "starttls":
                    self.client.starttls(tls_context(acc))
            else:
                raise ConfigError(t("Account %(name)s: unknown security '%(security)s'.", name=acc.name,
                                    security=escaped(acc.security)))
        with self._guard(t("logging in")):
            self._login()
        with self._guard(t("reading the folder namespace")):
            self.namespace = self._read_namespace()

    def _login(self) -> None:
        acc, client = self.account, self.client
        if client.has_capability("LOGINDISABLED"):  # RFC 3501 7.2.1: no passwords in the clear
            raise ConnectError(t(
                "Account %(name)s: %(host)s:%(port)s refuses passwords on an unencrypted connection (LOGINDISABLED). "
                "Use --security starttls on this port, or --security ssl on the server's TLS port (usually 993).",
                name=acc.name, host=acc.host, port=acc.port))
        if (acc.user + self._password).isascii():
            client.login(acc.user, self._password)
        elif client.has_capability("AUTH=PLAIN"):
            # LOGIN's quoted strings are ASCII in imaplib; AUTHENTICATE PLAIN (RFC 4616) carries UTF-8.
            client.plain_login(acc.user, self._password)
        else:
            raise AuthError(t(
                "Account %(name)s: the user name or password contains characters beyond ASCII, and %(host)s offers "
                "no AUTHENTICATE PLAIN, the only way IMAP can carry them. Ask the mail server's administrator to "
                "enable it, or use an ASCII password.", name=acc.name, host=acc.host))

    def _read_namespace(self) -> Namespace:
        """The personal namespace (RFC 2342), or the separator from LIST "" "" (RFC 3501 6.3.8) without it."""
        client = self.client
        if client.has_capability("NAMESPACE"):
            personal = client.namespace().personal
            if personal:
                prefix, separator = personal[0]
                return Namespace(prefix or "", separator or None)
        found = client.list_folders("", "")
        separator = found[0][1] if found else None
        if isinstance(separator, bytes):
            separator = separator.decode()
        return Namespace("", separator or None)

    def close(self) -> None:
        """Log out; a connection that is already broken is simply dropped."""
        if self.client is None:
            return
        client, self.client = self.client, None
        try:
            client.logout()
        except Exception:  # logging out of a dead connection: nothing left to lose
            try:
                client.shutdown()
            except Exception:
                pass

    def server_folders(self) -> dict[str, set[bytes]]:
        """Every folder on the server by its server name, with its LIST flags (upper case); one LIST per session."""
        if self._folders is None:
            with self._guard(t("listing folders")):
                listed = self.client.list_folders()
            self._folders = {(name if isinstance(name, str) else name.decode()): {f.upper() for f in flags}
                             for flags, _, name in listed}
        return self._folders

    def list_folders(self) -> list[str]:
        """The folders that can hold mail, as a mail client shows them (``Archiv/Alt``), sorted."""
        return sorted((self.namespace.to_display(name) for name, flags in self.server_folders().items()
                       if not flags & NOT_SELECTABLE), key=lambda n: (n != "INBOX", n.casefold()))

    def server_name(self, name: str) -> str:
        """The server's name of a folder written as a mail client shows it; raises FolderError if impossible."""
        try:
            return self.namespace.to_server(name)
        except FolderNameError as e:
            if name in self.server_folders():  # the server's own spelling, written before names were mapped
                return name
            raise FolderError(t("Account %(name)s: %(problem)s", name=self.account.name, problem=e.text)) from e

    def open_folder(self, name: str) -> FolderInfo:
        """SELECT (or EXAMINE when read-only) a folder written as a mail client shows it.

        Raises FolderError if it does not exist or the server refuses it, FolderSkippedError if
        it is only a level above other folders (``\\Noselect``).
        """
        server = self.server_name(name)
        with self._guard(t("opening folder '%(folder)s'", folder=escaped(name))):
            try:
                info = self.client.select_folder(server, readonly=self.account.readonly)
            except imaplib.IMAP4.abort:
                raise
            except IMAPClientError as e:
                raise self._folder_problem(name, server, e) from e
        permanent = info.get(b"PERMANENTFLAGS")
        self.folder = FolderInfo(name, int(info[b"UIDVALIDITY"]), _int_or_none(info.get(b"UIDNEXT")),
                                 int(info.get(b"EXISTS", 0)), server,
                                 None if permanent is None else frozenset(f.upper() for f in permanent))
        return self.folder

    def _folder_problem(self, name: str, server: str, e: Exception) -> Exception:
        acc = self.account
        flags = self.server_folders().get(server)
        if flags is None:
            folders = ", ".join(self.list_folders()[:20])
            return FolderError(t("Account %(name)s: the folder '%(folder)s' does not exist on %(host)s. Folders "
                                 "there: %(folders)s. Fix the account's folder list.", name=acc.name,
                                 folder=escaped(name), host=acc.host, folders=folders))
        if flags & NOT_SELECTABLE:
            return FolderSkippedError(t(
                "Account %(name)s: the folder '%(folder)s' on %(host)s only holds other folders, not mail; it was "
                "skipped. Remove it from the account's folder list, or list the folders inside it.", name=acc.name,
                folder=escaped(name), host=acc.host))
        return FolderError(t("Account %(name)s: %(host)s refused to open the folder '%(folder)s' (%(reason)s). Check "
                             "the account's rights on that folder.", name=acc.name, host=acc.host,
                             folder=escaped(name), reason=reason_of(e)),
                           public=t("Account %(name)s: %(host)s refused to open the folder '%(folder)s'. Check the "
                                    "account's rights on that folder.", name=acc.name, host=acc.host,
                                    folder=escaped(name)))

    def list_new(self, after_uid: int, unread_only: bool) -> list[tuple[int, int]]:
        """(uid, size) of messages with UID above ``after_uid``, oldest first; unread ones only if asked.

        ``UID SEARCH UID n:*`` costs what is new, not the mailbox size. It returns the last
        message even when its UID is below n (RFC 3501 6.4.8), hence the filter.
        """
        criteria = ["UID", f"{after_uid + 1}:*"] + (["UNSEEN"] if unread_only else [])
        with self._guard(t("listing new mail")):
            uids = [uid for uid in self.client.search(criteria) if uid > after_uid]
        return self.sizes(uids)

    def sizes(self, uids: list[int]) -> list[tuple[int, int]]:
        """(uid, size) for given UIDs that still exist."""
        out = []
        for i in range(0, len(uids), UIDS_PER_COMMAND):
            with self._guard(t("listing mail")):
                found = self.client.fetch(uids[i:i + UIDS_PER_COMMAND], [b"RFC822.SIZE"])
            out += [(uid, int(item.get(b"RFC822.SIZE", 0))) for uid, item in found.items()]
        return sorted(out)

    def fetch(self, uids: list[int]) -> dict[int, tuple[bytes, str | None]]:
        """Original bytes (BODY.PEEK[]: does not set \\Seen) and INTERNALDATE of each UID still there."""
        wanted = set(uids)
        with self._guard(t("fetching mail")):
            found = self.client.fetch(uids, [b"BODY.PEEK[]", b"INTERNALDATE"])
        out = {}
        for uid, item in found.items():
            body = item.get(b"BODY[]")
            if uid in wanted and body is not None:
                when = item.get(b"INTERNALDATE")
                out[uid] = (bytes(body), when.isoformat() if isinstance(when, datetime) else None)
        return out

    def fetch_to_spool(self, uid: int, spool_dir: Path, chunk: int = 8 << 20) -> SpooledData | None:
        """Fetch one large message in pieces (``BODY.PEEK[]<offset.length>``) into a spool file.

        Memory stays at one piece whatever the size. Returns None if the message is gone.
        """
        with SpoolWriter(spool_dir) as writer:
            offset = 0
            while True:
                key = f"BODY[]<{offset}>".encode()
                with self._guard(t("fetching a large mail")):
                    found = self.client.fetch([uid], [f"BODY.PEEK[]<{offset}.{chunk}>".encode()])
                if uid not in found:
                    return None
                piece = found[uid].get(key) or b""
                writer.write(piece)
                offset += len(piece)
                if len(piece) < chunk:
                    return writer.close()

    def apply(self, action: AfterAction, uids: list[int]) -> None:
        """Carry out an after-archive action on UIDs of the open folder (idempotent).

        Raises ActionRefusedError when the server refuses it (or the account lacks the rights it
        needs, checked before anything is changed), FetchError when the connection fails.
        """
        if action.kind == "none" or not uids:
            return
        target = self._move_target(action) if action.kind == "move" else ""
        self.check_rights(action)
        for i in range(0, len(uids), UIDS_PER_COMMAND):
            self._apply_slice(action, target, uids[i:i + UIDS_PER_COMMAND])

    def _apply_slice(self, action: AfterAction, target: str, uids: list[int]) -> None:
        with self._guard(t("applying the after-archive action '%(action)s'", action=escaped(action))), \
                self._refusal(action):
            client = self.client
            if action.kind == "read":
                client.add_flags(uids, [SEEN], silent=True)
            elif action.kind == "delete":
                client.add_flags(uids, [DELETED], silent=True)
                self._expunge(uids)
            elif action.kind == "move":
                if client.has_capability("MOVE"):
                    client.move(uids, target)
                else:
                    client.copy(uids, target)
                    client.add_flags(uids, [DELETED], silent=True)
                    self._expunge(uids)
            else:
                raise ConfigError(t("Account %(name)s: unknown after-archive action '%(action)s'.",
                                    name=self.account.name, action=escaped(action)))

    @contextmanager
    def _refusal(self, action: AfterAction) -> Iterator[None]:
        """A NO or BAD answer to an action's command is the server's refusal, not a broken connection."""
        try:
            yield
        except imaplib.IMAP4.abort:
            raise
        except IMAPClientError as e:
            raise self._refused(action, reason_of(e)) from e

    def _refused(self, action: AfterAction, why: str | Text) -> ActionRefusedError:
        acc, folder = self.account, self.folder.name
        advice = t("The mails are archived; the action is tried again on the next run. Check the target folder and "
                   "the account's rights on the server.")
        return ActionRefusedError(
            t("Account %(name)s: %(host)s refused the after-archive action '%(action)s' in folder '%(folder)s' "
              "(%(reason)s). %(advice)s", name=acc.name, host=acc.host, action=escaped(action),
              folder=escaped(folder), reason=why, advice=advice),
            public=t("Account %(name)s: %(host)s refused the after-archive action '%(action)s' in folder "
                     "'%(folder)s'. %(advice)s", name=acc.name, host=acc.host, action=escaped(action),
                     folder=escaped(folder), advice=advice))

    def _move_target(self, action: AfterAction) -> str:
        """The server name of a move target, created if missing; raises ActionRefusedError if impossible."""
        try:
            target = self.server_name(action.target)
        except FolderError as e:
            cause = e.__cause__ if isinstance(e.__cause__, FolderNameError) else e
            raise self._refused(action, cause.text) from e
        if target not in self.server_folders():
            with self._guard(t("creating the folder '%(folder)s'", folder=escaped(action.target))), \
                    self._refusal(action):
                self.client.create_folder(target)
            self.server_folders()[target] = set()
        return target

    def check_rights(self, action: AfterAction) -> None:
        """Refuse, before changing anything, an action the open folder does not allow this account.

        Servers differ in how they refuse: Cyrus answers NO, Dovecot drops the flag silently. So
        the flags the folder keeps (PERMANENTFLAGS, RFC 3501 7.1) and, where the server has ACLs,
        the account's rights (MYRIGHTS, RFC 4314) are checked first. A copy into the target
        without the right to remove the original would leave a second copy at every retry.
        """
        folder = self.folder
        if action.kind == "none" or (folder.name, action.kind) in self._rights_checked:
            return
        flag = SEEN if action.kind == "read" else DELETED
        if folder.permanent_flags is not None and flag.upper() not in folder.permanent_flags \
                and b"\\*" not in folder.permanent_flags:
            raise self._refused(action, t("the folder does not keep the %(flag)s flag for this account",
                                          flag=flag.decode()))
        if self.client.has_capability("ACL"):
            needed = self._needed_rights(action)
            with self._guard(t("reading the account's rights on '%(folder)s'", folder=escaped(folder.name))), \
                    self._refusal(action):
                typ, data = self.client._imap.myrights(_quoted(folder.server_name))
                if typ != "OK":
                    raise IMAPClientError(f"MYRIGHTS failed: {data!r}")
            rights = _rights_of(data)
            missing = [r for r in needed if rights is not None and r not in rights]
            if missing:
                raise self._refused(action, t("the account's rights there are '%(rights)s'; it needs '%(missing)s' "
                                              "as well", rights=escaped(rights), missing=escaped("".join(missing))))
        self._rights_checked.add((folder.name, action.kind))

    def _needed_rights(self, action: AfterAction) -> str:
        if action.kind == "read":
            return "s"
        # RFC 4314 split RFC 2086's "d" into "t" (flag \\Deleted) and "e" (expunge); RIGHTS= says which.
        modern = any(c.startswith(b"RIGHTS=") for c in self.client.capabilities())
        return "te" if modern else "d"

    def _expunge(self, uids: list[int]) -> None:
        if self.client.has_capability("UIDPLUS"):
            self.client.uid_expunge(uids)
        else:  # without UIDPLUS this also expunges messages others flagged \Deleted
            self.client.expunge()

    def first_subject(self) -> str | None:
        """Subject of the oldest message in the open folder (for connection tests), None if empty."""
        with self._guard(t("reading the first message")):
            uids = self.client.search(["ALL"])
            if not uids:
                return None
            found = self.client.fetch([min(uids)], [b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        item = next(iter(found.values()), None)
        header: bytes = item.get(b"BODY[HEADER.FIELDS (SUBJECT)]", b"") if item else b""
        return header.decode("ascii", "surrogateescape")

    def count(self, folder: str) -> int:
        """How many messages a folder holds (for connection tests)."""
        with self._guard(t("counting messages in '%(folder)s'", folder=escaped(folder))):
            return int(self.client.folder_status(self.server_name(folder), [b"MESSAGES"])[b"MESSAGES"])

    def check_move_target(self, action: AfterAction) -> Text:
        """For connection tests: whether a move target exists or can be created; raises ActionRefusedError.

        A missing target is created and removed again, so the test leaves the server as it was.
        """
        try:
            target = self.server_name(action.target)
        except FolderError as e:
            raise ActionRefusedError(e.text, public=e.public_text) from e
        flags = self.server_folders().get(target)
        if flags is not None and not flags & NOT_SELECTABLE:
            return t("the folder '%(folder)s' exists", folder=escaped(action.target))
        with self._guard(t("creating the folder '%(folder)s'", folder=escaped(action.target))):
            try:
                self.client.create_folder(target)
                self.client.delete_folder(target)
            except imaplib.IMAP4.abort:
                raise
            except IMAPClientError as e:
                acc, folder = self.account, escaped(action.target)
                raise ActionRefusedError(
                    t("Account %(name)s: the folder '%(folder)s' does not exist on %(host)s and cannot be created "
                      "there (%(reason)s). Create it in a mail client or choose another folder.", name=acc.name,
                      folder=folder, host=acc.host, reason=reason_of(e)),
                    public=t("Account %(name)s: the folder '%(folder)s' does not exist on %(host)s and cannot be "
                             "created there. Create it in a mail client or choose another folder.", name=acc.name,
                             folder=folder, host=acc.host)) from e
        return t("the folder '%(folder)s' does not exist yet; it can be created and will be at the first move",
                 folder=escaped(action.target))


def _int_or_none(value) -> int | None:
    return int(value) if value is not None else None


def _quoted(name: str) -> str:
    """A mailbox name as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3)."""
    encoded = encode_utf7(name).decode("ascii")
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rights_of(data: list) -> str | None:
    """The rights string of a MYRIGHTS answer (``mailbox rights``), None if it cannot be read."""
    for item in data:
        if isinstance(item, bytes):
            parts = item.rsplit(b" ", 1)
            if len(parts) == 2:
                return parts[1].decode("ascii", "replace")
    return None


def subject_of(header: str | bytes | None) -> str | None:
    """The decoded Subject of a header block (for connection tests); None for no header at all."""
    from ..mime import decode_header_text

    if header is None:
        return None
    text = header.decode("ascii", "surrogateescape") if isinstance(header, bytes) else header
    value = ""
    for line in text.splitlines():
        if line.lower().startswith("subject:"):
            value = line[8:]
        elif value and line[:1] in (" ", "\t"):
            value += line
    return decode_header_text(value, [], "subject") or ""


class ImapSource(Source):
    """IMAP (imapclient): folders with a cursor each (UIDVALIDITY and the highest archived UID)."""

    kind = "imap"
    title = Lang("IMAP", "IMAP")
    watch_mode = "idle"
    page = "mail"
    page_title = Lang("Mail archiving (IMAP/POP3)", "Mail-Archivierung (IMAP/POP3)")
    actions = ("none", "read", "move", "delete")
    settings = (
        *server_settings("IMAP", {"ssl": 993, "starttls": 143, "plain": 143}),
        Setting("folders", "list", Lang("Folders", "Ordner"),
                Lang("Folder to archive (repeatable), as a mail client shows it, levels joined with '/' (Entwürfe, "
                     "Archiv/Alt); mapped to the server's namespace. Default: INBOX.",
                     "Zu archivierender Ordner (mehrfach), wie ihn ein Mailprogramm zeigt, Ebenen mit '/' getrennt "
                     "(Entwürfe, Archiv/Alt). Standard: INBOX."), default=("INBOX",), option="--folder"),
        UNREAD_ONLY,
        after_setting(actions),
    )

    def __enter__(self) -> ImapSource:
        self.session = ImapSession(self.account, self.secret, self.timeout).__enter__()
        self._watched: str | None = None  # the folder watch_folder selected
        self._notified: dict[str, str] = {}  # server name -> label, of the folders given to notify
        self._stands: dict[str, tuple] = {}  # server name -> (UIDVALIDITY, UIDNEXT) last announced
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    @classmethod
    def validate(cls, account: Account) -> None:
        super().validate(account)
        if not account.settings.get("folders"):
            raise ConfigError(t("Account %(name)s: at least one folder is needed (--folder).", name=account.name))
        check_folder_names(account)

    @classmethod
    def warnings(cls, account: Account) -> list[str]:
        return [w for w in [plain_warning(account)] if w]

    # -- the import loop ------------------------------------------------------------------------
    def folders(self) -> list[Folder]:
        return [Folder(name, f"imap:{self.account.name}:{name}") for name in self.account.folders]

    def open(self, folder: Folder, ledger: Ledger) -> None:
        self.info = self.session.open_folder(folder.label)
        cursor = _cursor(ledger.cursor)
        if cursor is not None and cursor[0] != self.info.uidvalidity:
            # RFC 3501 2.3.1.1: old UIDs mean nothing now, nor do owed actions and failures naming them.
            ledger.restart(t("Account %(name)s: folder '%(folder)s' changed its UIDVALIDITY (%(old)s -> %(new)s); "
                             "rescanned it, duplicates skipped.", name=self.account.name, folder=escaped(folder.label),
                             old=cursor[0], new=self.info.uidvalidity), forget_pending=True)

    def key(self, folder: Folder, ref: object) -> str:
        return f"imap:{self.account.name}:{folder.label}:{self.info.uidvalidity}:{ref}"

    def ref_of(self, folder: Folder, key: str) -> int:
        return int(key.rsplit(":", 1)[1])

    def batches(self, folder: Folder, ledger: Ledger) -> Iterator[Batch]:
        """UIDs above the cursor (``UID SEARCH UID n:*``: what is new costs, not the mailbox size)."""
        info, cursor = self.info, _cursor(ledger.cursor)
        last = cursor[1] if cursor is not None else 0
        if info.uidnext is not None and info.uidnext <= last + 1:
            return
        items = [Item(self.key(folder, uid), uid, size)
                 for uid, size in self.session.list_new(last, self.account.unread_only)]
        ledger.expect(len(items))
        for run in batches_of(items, self.config.fetch_batch_size, self.config.fetch_batch_bytes):
            yield Batch(run, f"{info.uidvalidity}:{max(i.ref for i in run)}")

    def fetch(self, folder: Folder, items: list[Item], spool_dir: Path) -> list[RawMail]:
        """Small mails in one FETCH; mails above SPOOL_FROM each in pieces to a spool file."""
        unknown = [i.ref for i in items if i.size is None]  # retried failures: ask for their size first
        sizes = dict(self.session.sizes(unknown)) if unknown else {}
        sized: list[tuple[Item, int]] = []
        for i in items:
            size = i.size if i.size is not None else sizes.get(i.ref)
            if size is not None:  # no size: the message is gone
                sized.append((i, size))
        small = [i.ref for i, size in sized if size <= base.SPOOL_FROM]
        found = self.session.fetch(small) if small else {}
        raws = []
        for item, size in sized:
            if size > base.SPOOL_FROM:
                spooled = self.session.fetch_to_spool(item.ref, spool_dir)
                if spooled is not None:
                    raws.append(RawMail(b"", self.account.name, folder.label, item.key, item.ref, spool=spooled))
            elif item.ref in found:
                raw, received = found[item.ref]
                raws.append(RawMail(raw, self.account.name, folder.label, item.key, item.ref, received))
        return raws

    def apply(self, folder: Folder, action: AfterAction, refs: list) -> None:
        self.session.apply(action, refs)

    # -- connection tests -------------------------------------------------------------------------
    # -- the watch service ----------------------------------------------------------------------
    def watch_folder(self, label: str) -> None:
        server = self.session.server_name(label)
        with self.session._guard(t("opening folder '%(folder)s'", folder=escaped(label))):
            try:
                self.session.client.select_folder(server, readonly=True)  # EXAMINE: watching changes nothing
            except IMAPClientError as e:
                if isinstance(e, imaplib.IMAP4.abort):
                    raise
                raise self.session._folder_problem(label, server, e) from e
            _keepalive(self.session.client)
        self._watched = label

    def folder_state(self, label: str) -> tuple:
        """STATUS (UIDVALIDITY UIDNEXT MESSAGES) of a folder: what changes when mail comes (RFC 3501 6.3.10)."""
        server = self.session.server_name(label)
        with self.session._guard(t("opening folder '%(folder)s'", folder=escaped(label))):
            try:
                found = self.session.client.folder_status(server, [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"])
            except IMAPClientError as e:
                if isinstance(e, imaplib.IMAP4.abort):
                    raise
                raise self.session._folder_problem(label, server, e) from e
        return tuple(found.get(k) for k in (b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"))

    def notify(self, labels: list[str]) -> list[str]:
        """NOTIFY (RFC 5465) for folders on this connection (which selects none): while it idles, the server announces
        new mail in any of them. Returns the labels, or [] when the server does not offer NOTIFY, refuses it, or a
        folder's name is not in ASCII (Dovecot 2.3 neither matches nor announces those in modified UTF-7)."""
        client = self.session.client
        with self.session._guard(t("asking for notifications")):
            if not client.has_capability("NOTIFY"):
                return []
            servers = {label: self.session.server_name(label) for label in labels}
            if not all(name.isascii() and "&" not in name for name in servers.values()):
                return []
            # imapclient has no NOTIFY: its raw command sender and folder quoting (private; the package pins
            # imapclient in debian/requirements.lock, and tests/test_watch.py runs this against Dovecot)
            imaplib.Commands.setdefault("NOTIFY", ("AUTH", "SELECTED"))
            names = b" ".join(client._normalise_folder(name) for name in servers.values())
            try:  # STATUS: the server first tells where each folder stands
                typ, _ = client._raw_command(b"NOTIFY", [b"SET", b"STATUS", b"(mailboxes (" + names + b") (MessageNew "
                                                         b"MessageExpunge))"], uid=False)
            except IMAPClientError as e:
                if isinstance(e, imaplib.IMAP4.abort):
                    raise
                typ = "BAD"
            if typ != "OK":
                return []  # these folders are polled
            _keepalive(client)
            self._notified = {name: label for label, name in servers.items()}
            self._announced(_stored(client), priming=True)  # where they stand
        return list(labels)

    def _announced(self, responses: list, priming: bool = False) -> set[str]:
        """The labels with new mail: EXISTS in the watched folder, or a notified folder's STATUS with another
        UIDNEXT or UIDVALIDITY than before (an expunge, e.g. after the after-archive move, is not new mail).
        ``priming``: where the folders stand now, nothing new."""
        found = {self._watched} if self._watched and _announces_mail(responses) else set()
        for name, items in _statuses(responses):
            label = self._notified.get(name)
            before = self._stands.get(name, (None, None))  # Dovecot leaves out what did not change
            stands = (items.get(b"UIDVALIDITY", before[0]), items.get(b"UIDNEXT", before[1]))
            if label is not None and (stands != before or None in stands):
                if not priming:
                    found.add(label)
                self._stands[name] = stands
        return found

    def idle(self, stop, renew: float) -> set[str]:
        """IDLE (RFC 2177) until the server announces new mail (EXISTS in the watched folder, or STATUS of a folder
        given to ``notify``), ``renew`` seconds or ``stop``; then DONE, whose answer proves the connection alive (a
        silent one fails within the network timeout, or earlier by TCP keepalive). Returns the labels announced."""
        client = self.session.client
        with self.session._guard(t("waiting for new mail")):
            news = self._announced(_begin_idle(client))
            started = time.monotonic()
            try:
                while not news and not stop.is_set() and time.monotonic() - started < renew:
                    asked = time.monotonic()
                    responses = client.idle_check(timeout=min(1.0, renew))
                    if not responses and time.monotonic() - asked < 0.5 * min(1.0, renew):
                        # imapclient answers [] at once on a closed connection (EOF): not a quiet one
                        raise ConnectionResetError("the server closed the connection")
                    if any(r and r[0] == b"BYE" for r in responses):
                        raise ConnectionResetError("the server said BYE")
                    if _overflowed(responses):
                        raise ConnectionResetError("the server stopped notifying (NOTIFICATIONOVERFLOW)")
                    news |= self._announced(responses)
            finally:
                _, last = client.idle_done()  # what came after the last check counts too
                client._imap.untagged_responses.clear()  # imaplib kept those, too; they are in ``last``
            news |= self._announced(last)
        return news

    def probe(self) -> ProbeReport:
        session, acc = self.session, self.account
        report = ProbeReport(available=session.list_folders())
        for name in acc.folders:
            try:
                entry = FolderReport(name, session.open_folder(name).exists)
            except FolderSkippedError as e:
                entry = FolderReport(name, error=e, skipped=True)
            except FolderError as e:
                entry = FolderReport(name, error=e)
            else:
                try:
                    session.check_rights(acc.action)
                except ActionRefusedError as e:
                    entry.error = e
            report.folders.append(entry)
        if acc.action.kind == "move":
            try:
                report.action = session.check_move_target(acc.action)
            except ActionRefusedError as e:
                report.action_error = e
        return report

    def inbox(self) -> list[InboxReport]:
        info = self.session.open_folder("INBOX")
        return [InboxReport(f"{self.account.user}@{self.account.host}", "INBOX", info.exists,
                            first_subject=subject_of(self.session.first_subject()))]


def _cursor(value: str | None) -> tuple[int, int] | None:
    """A folder's cursor, "UIDVALIDITY:last UID", as numbers; None if there is none."""
    if not value:
        return None
    uidvalidity, _, last = value.partition(":")
    return int(uidvalidity), int(last or 0)
