"""An Exchange Web Services (EWS) emulator for tests and benchmarks: Exchange 2019 on IIS, on 127.0.0.1.

``EwsEmulator().start()`` serves ``https://127.0.0.1:<port>/EWS/Exchange.asmx`` (every other path is an IIS 404)
with TLS from a throw-away CA (``ca_file``; leaf SAN IP 127.0.0.1 and DNS localhost). Request and response shapes
follow Microsoft's EWS reference for the operations exchangelib 5.6 sends for archiving: ConvertId (its version
probe), GetFolder, FindFolder, CreateFolder, SyncFolderItems, FindItem, GetItem, UpdateItem, MoveItem, DeleteItem,
and for streaming notifications Subscribe (StreamingSubscriptionRequest), GetStreamingEvents and Unsubscribe.
Every answer carries ``ServerVersionInfo`` of Exchange 2019 CU12 (15.2.1118.7, Version="V2017_07_11").

Authentication as IIS does it: ``auth`` is the set of offered schemes ("ntlm", "basic"); a request without
credentials gets 401 with one ``WWW-Authenticate`` header per scheme. NTLM is connection-oriented: pyspnego's
acceptor checks the handshake (channel binding included, as with Extended Protection) and the connection stays
authenticated until it closes. Basic is checked on every request.

Mailbox access: a user's own mailbox (``add_user(..., mailbox=)``), mailboxes granted with ``grant_full_access``
(delegate) or, with the ``ExchangeImpersonation`` SOAP header, with ``grant_impersonation``.

Items are messages delivered as MIME (``deliver``); ``MimeContent`` returns exactly the delivered bytes. Sync states
are self-contained like Exchange's (gzip+base64 of the client's known item set, signed), so any number of them stays
valid until ``invalidate_sync_states()``.

Streaming notifications as Exchange 2010 SP1 and later send them: GetStreamingEvents answers with a chunked HTTP
response that stays open ConnectionTimeout minutes (a "minute" lasts ``stream_minute`` seconds), one SOAP envelope
per chunk: the events of the subscriptions (CreatedEvent and NewMailEvent for a delivery, MovedEvent for a move, as
asked in EventTypes), ConnectionStatus OK every ``heartbeat_seconds``, and ConnectionStatus Closed at the end.
Subscriptions live in the server's memory: ``stop()`` (a restart) forgets them, and GetStreamingEvents then answers
ErrorSubscriptionNotFound. ``cut_streams()`` breaks every open stream mid-response (a dropped connection).

Faults to inject: ``latency`` (seconds per SOAP request), ``server_busy`` (share of SOAP requests answered with an
``ErrorServerBusy`` fault carrying ``busy_backoff_ms`` as BackOffMilliseconds), ``fail_next`` (forced answers, see
``_forced``), ``drop_connection_after`` (the socket is closed mid-response after that many more SOAP requests),
``invalidate_sync_states()``. Records: ``requests`` ((operation, mailbox) in order), ``max_concurrent`` per mailbox,
``auth_used`` (scheme of each authenticated SOAP request), ``ntlm_handshakes``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import email.header
import email.parser
import email.utils
import gzip
import hashlib
import hmac
import itertools
import json
import os
import random
import re
import secrets
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import traceback
import uuid
import weakref
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass, field
from email import policy
from pathlib import Path
from xml.sax.saxutils import escape

import spnego
from spnego.channel_bindings import GssChannelBindings
from testca import throwaway_ca

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TNS = "http://schemas.microsoft.com/exchange/services/2006/types"
ENS = "http://schemas.microsoft.com/exchange/services/2006/errors"
EWS_PATH = "/ews/exchange.asmx"

# Exchange 2019 CU12. Exchange 2016/2019 report a "V2017_07_11"-style Version; clients fall back to what they asked.
SERVER_VERSION = {"MajorVersion": "15", "MinorVersion": "2", "MajorBuildNumber": "1118", "MinorBuildNumber": "7",
                  "Version": "V2017_07_11"}
# RequestServerVersion values the on-premises schema accepts.
REQUEST_VERSIONS = {"Exchange2007", "Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1", "Exchange2010_SP2",
                    "Exchange2013", "Exchange2013_SP1", "Exchange2016", "V2015_10_05", "V2016_01_06",
                    "V2016_04_13", "V2016_07_13", "V2016_10_10", "V2017_01_07", "V2017_04_14", "V2017_07_11"}

MESSAGES = {
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "ErrorFolderExists": "A folder with the specified name already exists.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorImpersonateUserDenied": "The account does not have permission to impersonate the requested user.",
    "ErrorInternalServerError": "An internal server error occurred. The operation failed.",
    "ErrorInvalidIdMalformed": "Id is malformed.",
    "ErrorInvalidServerVersion": "The specified server version is invalid.",
    "ErrorInvalidSyncStateData": "Synchronization state data is corrupt or otherwise invalid.",
    "ErrorIrresolvableConflict": "The send or update operation could not be performed because the change key passed "
                                 "in the request does not match the current change key for the item.",
    "ErrorItemNotFound": "The specified object was not found in the store.",
    "ErrorMissingEmailAddress": "When making a request as an account that does not have a mailbox, you must specify "
                                "the mailbox primary SMTP address for any distinguished folder Ids.",
    "ErrorNonExistentMailbox": "The SMTP address has no mailbox associated with it.",
    "ErrorSchemaValidation": "The request failed schema validation.",
    "ErrorSubscriptionNotFound": "The specified subscription was not found.",
    "ErrorServerBusy": "The server cannot service this request right now. Try again later.",
}
# Codes Exchange sends as a SOAP fault (HTTP 500) for the whole request rather than per ResponseMessage.
FAULT_CODES = {"ErrorServerBusy", "ErrorImpersonateUserDenied", "ErrorImpersonationFailed", "ErrorNonExistentMailbox",
               "ErrorInternalServerError", "ErrorInternalServerTransientError", "ErrorSchemaValidation",
               "ErrorInvalidServerVersion", "ErrorTooManyObjectsOpened", "ErrorExceededConnectionCount",
               "ErrorInvalidRequest", "ErrorAccessDenied"}

# (distinguished id, parent, element, FolderClass, English name, German name): the folders every mailbox has.
STANDARD_FOLDERS = [
    ("root", None, "Folder", None, "", ""),
    ("msgfolderroot", "root", "Folder", None, "Top of Information Store", "Oberste Ebene des Informationsspeichers"),
    ("inbox", "msgfolderroot", "Folder", "IPF.Note", "Inbox", "Posteingang"),
    ("outbox", "msgfolderroot", "Folder", "IPF.Note", "Outbox", "Postausgang"),
    ("sentitems", "msgfolderroot", "Folder", "IPF.Note", "Sent Items", "Gesendete Elemente"),
    ("deleteditems", "msgfolderroot", "Folder", "IPF.Note", "Deleted Items", "Gelöschte Elemente"),
    ("drafts", "msgfolderroot", "Folder", "IPF.Note", "Drafts", "Entwürfe"),
    ("junkemail", "msgfolderroot", "Folder", "IPF.Note", "Junk Email", "Junk-E-Mail"),
    ("archive", "msgfolderroot", "Folder", "IPF.Note", "Archive", "Archiv"),
    ("calendar", "msgfolderroot", "CalendarFolder", "IPF.Appointment", "Calendar", "Kalender"),
    ("contacts", "msgfolderroot", "ContactsFolder", "IPF.Contact", "Contacts", "Kontakte"),
    ("tasks", "msgfolderroot", "TasksFolder", "IPF.Task", "Tasks", "Aufgaben"),
    ("notes", "msgfolderroot", "Folder", "IPF.StickyNote", "Notes", "Notizen"),
    ("journal", "msgfolderroot", "Folder", "IPF.Journal", "Journal", "Journal"),
    ("syncissues", "msgfolderroot", "Folder", "IPF.Note", "Sync Issues", "Synchronisierungsprobleme"),
    ("conflicts", "syncissues", "Folder", "IPF.Note", "Conflicts", "Konflikte"),
    ("localfailures", "syncissues", "Folder", "IPF.Note", "Local Failures", "Lokale Fehler"),
    ("serverfailures", "syncissues", "Folder", "IPF.Note", "Server Failures", "Serverfehler"),
    ("searchfolders", "root", "Folder", None, "Finder", "Finder"),
    ("recoverableitemsroot", "root", "Folder", None, "Recoverable Items", "Recoverable Items"),
    ("recoverableitemsdeletions", "recoverableitemsroot", "Folder", None, "Deletions", "Deletions"),
    ("recoverableitemspurges", "recoverableitemsroot", "Folder", None, "Purges", "Purges"),
    ("recoverableitemsversions", "recoverableitemsroot", "Folder", None, "Versions", "Versions"),
]
FOLDER_FIELDS = ["FolderId", "ParentFolderId", "FolderClass", "DisplayName", "TotalCount", "ChildFolderCount",
                 "EffectiveRights", "DistinguishedFolderId", "UnreadCount"]  # schema order
FOLDER_DEFAULT = {"FolderId", "DisplayName", "TotalCount", "ChildFolderCount", "UnreadCount"}
ITEM_FIELDS = ["MimeContent", "ItemId", "ParentFolderId", "ItemClass", "Subject", "Sensitivity", "DateTimeReceived",
               "Size", "Categories", "Importance", "InReplyTo", "IsSubmitted", "IsDraft", "IsFromMe", "IsResend",
               "IsUnmodified", "DateTimeSent", "DateTimeCreated", "DisplayCc", "DisplayTo", "HasAttachments",
               "LastModifiedTime", "IsAssociated", "Sender", "ToRecipients", "CcRecipients",
               "IsReadReceiptRequested", "IsDeliveryReceiptRequested", "ConversationTopic", "From",
               "InternetMessageId", "IsRead", "IsResponseRequested", "References"]  # schema order (ItemType, then
# MessageType); the subset a delivered message has
ITEM_DEFAULT = {"ItemId", "ParentFolderId", "ItemClass", "Subject", "Sensitivity", "DateTimeReceived", "Size",
                "Importance", "IsSubmitted", "IsDraft", "IsFromMe", "IsResend", "IsUnmodified", "DateTimeSent",
                "DateTimeCreated", "DisplayCc", "DisplayTo", "HasAttachments", "Sender", "IsReadReceiptRequested",
                "ConversationTopic", "From", "InternetMessageId", "IsRead"}
MAX_SYNC_CHANGES = 512  # SyncFolderItems returns at most 512 changes per call
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_NTLM_ENV_LOCK = threading.Lock()  # pyspnego's NTLM acceptor reads its user file from NTLM_USER_FILE


def make_ca(directory: Path, hosts: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",)):
    """A throw-away CA (PEM file for clients), a server context with a leaf for the hosts, and the leaf's DER."""
    return throwaway_ca(directory, hosts, ips, name="archivista-mail EWS test CA")


# -- state ---------------------------------------------------------------------------------------------------------
@dataclass
class User:
    login: str  # 'DOMAIN\\name' or 'name@domain', as given
    password: str
    mailbox: str | None = None  # the user's own mailbox (used without impersonation)
    impersonate: set[str] | bool = False  # True: every mailbox
    full_access: set[str] = field(default_factory=set)


@dataclass
class Item:
    """A message in a folder. ``id`` changes when the item moves (as EWS ids do); ``n`` numbers this version."""
    n: int
    id: str
    mime: bytes
    folder: Folder
    received: datetime.datetime
    is_read: bool = False
    changekey: int = 1  # bumped on every change
    props: int = 1  # bumped on changes other than the read flag (SyncFolderItems: Update vs ReadFlagChange)
    categories: list[str] = field(default_factory=list)
    modified: datetime.datetime | None = None
    _meta: dict | None = field(default=None, repr=False)

    @property
    def meta(self) -> dict:
        """Subject, addresses, dates... parsed from the MIME on first use."""
        if self._meta is None:
            self._meta = _mime_meta(self.mime)
        return self._meta


@dataclass
class Folder:
    n: int
    id: str
    box: Mailbox
    name: str
    parent: Folder | None
    folder_class: str | None = "IPF.Note"
    element: str = "Folder"
    distinguished: str | None = None
    items: OrderedDict[str, Item] = field(default_factory=OrderedDict)
    children: list[Folder] = field(default_factory=list)

    @property
    def path(self) -> str:
        parts, f = [], self
        while f is not None and f.distinguished not in ("msgfolderroot", "root"):
            parts.insert(0, f.name)
            f = f.parent
        return "/".join(parts)


@dataclass
class Mailbox:
    address: str
    language: str = "en"
    key: bytes = b""
    folders: dict[str, Folder] = field(default_factory=dict)  # by id
    distinguished: dict[str, Folder] = field(default_factory=dict)


class EwsFault(Exception):
    """An answer for the whole request: a SOAP fault (HTTP 500) as Exchange sends it."""

    def __init__(self, code: str, message: str | None = None, values: dict | None = None) -> None:
        super().__init__(code)
        self.code, self.message, self.values = code, message or MESSAGES.get(code, code), values or {}


class EwsError(Exception):
    """An error in one ResponseMessage (ResponseClass Error)."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code)
        self.code, self.message = code, message or MESSAGES.get(code, code)


@dataclass
class Subscription:
    """A streaming subscription: its folders (None: all of the mailbox's), event types and undelivered events."""
    id: str
    box: Mailbox
    user: User
    folders: set[str] | None
    event_types: set[str]
    events: list[str] = field(default_factory=list)  # t:...Event elements, oldest first


@dataclass
class _Conn:
    ntlm: object | None = None  # pyspnego acceptor during the handshake
    user: User | None = None  # NTLM: the connection is authenticated
    scheme: str | None = None


@dataclass
class _Ctx:
    user: User
    impersonated: str | None
    operation: str


class EwsEmulator:
    """State and behaviour of the emulated Exchange organisation. Start with ``start()``, stop with ``stop()``."""

    def __init__(self, auth=("ntlm", "basic"), realm: str = "127.0.0.1") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aews-"))
        weakref.finalize(self, shutil.rmtree, str(self.dir), True)
        self.ca_file, self.server_ctx, self._leaf_der = make_ca(self.dir)
        self._cbt = b"tls-server-end-point:" + hashlib.sha256(self._leaf_der).digest()
        self.auth: set[str] = {a.lower() for a in auth}
        self.realm = realm
        self.basic_charset = "cp1252"  # IIS decodes Basic credentials in the server's ANSI code page
        self.channel_binding = True  # check NTLM channel binding tokens when the client sends them
        self.users: dict[str, User] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self.latency = 0.0  # seconds added to every SOAP request
        self.server_busy = 0.0  # share of SOAP requests answered with an ErrorServerBusy fault
        self.busy_backoff_ms = 100  # its BackOffMilliseconds
        # Forced answers for the next requests: an answer, or (operation, answer) for the next request of that
        # operation. Answers: a ResponseCode (FAULT_CODES as a SOAP fault, others as an error in every
        # ResponseMessage, e.g. "ErrorItemNotFound"), an HTTP status (int, empty body) or "drop" (no answer).
        self.fail_next: list = []
        self.drop_connection_after: int | None = None  # answer that many more SOAP requests, then cut the next one
        self.requests: list[tuple[str, str | None]] = []  # (operation, impersonated or X-AnchorMailbox mailbox)
        self.max_concurrent: dict[str | None, int] = {}  # per mailbox, as in ``requests``
        self.auth_used: list[str] = []  # "ntlm" or "basic" for each authenticated SOAP request
        self.ntlm_handshakes = 0  # completed NTLM logins (one per connection while keep-alive works)
        self.errors: list[str] = []  # tracebacks of emulator bugs (answered as ErrorInternalServerError faults)
        self._concurrent: dict[str | None, int] = {}
        self._folders: dict[str, Folder] = {}
        self._items: dict[str, Item] = {}
        self._lock = threading.RLock()
        self._rng = random.Random(7)
        self._ids = itertools.count(1)
        self._secret = secrets.token_bytes(16)
        self._generation = 1
        self._user_file = self.dir / "ntlm-users"
        self._user_file.write_text("")
        self._sockets: set[socket.socket] = set()
        self.stream_minute = 60.0  # seconds a ConnectionTimeout minute lasts (tests shorten it)
        self.heartbeat_seconds = 5.0  # ConnectionStatus OK on an open stream this often
        self.subscriptions: dict[str, Subscription] = {}
        self.streams_served = 0  # GetStreamingEvents responses begun
        self._changed = threading.Condition(self._lock)  # new events, a cut or a stop
        self._cuts = 0
        self.server: socketserver.ThreadingTCPServer | None = None
        self.port = 0

    # -- set-up -----------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/EWS/Exchange.asmx"

    def add_user(self, user: str, password: str, mailbox: str | None = None) -> User:
        """A service or personal account; ``user`` as 'DOMAIN\\name' or 'name@domain'."""
        record = User(user, password, mailbox.lower() if mailbox else None)
        with self._lock:
            self.users[user.lower()] = record
            self._write_user_file()
        return record

    def grant_impersonation(self, user: str, mailboxes="all") -> None:
        """ApplicationImpersonation for ``user``: on every mailbox ("all") or on the listed ones."""
        record = self.users[user.lower()]
        if mailboxes == "all":
            record.impersonate = True
        else:
            current = record.impersonate if isinstance(record.impersonate, set) else set()
            record.impersonate = current | {m.lower() for m in mailboxes}

    def grant_full_access(self, user: str, mailboxes) -> None:
        """FullAccess (delegate) permission: requests without impersonation may open these mailboxes."""
        self.users[user.lower()].full_access |= {m.lower() for m in mailboxes}

    def add_mailbox(self, address: str, language: str = "en") -> Mailbox:
        """A mailbox with the distinguished folders, named in ``language`` ("en" or "de")."""
        box = Mailbox(address.lower(), language, hashlib.sha1(address.lower().encode()).digest()[:12])
        with self._lock:
            for dist, parent, element, cls, en, de in STANDARD_FOLDERS:
                self._new_folder(box, de if language == "de" else en, box.distinguished.get(parent), cls, element,
                                 dist)
            self.mailboxes[box.address] = box
        return box

    def add_folder(self, address: str, path: str, folder_class: str = "IPF.Note") -> str:
        """A user folder: "Kunden" (under the top of the information store) or "Posteingang/Kunden" (under a
        folder given by display name path or distinguished id, e.g. "inbox/Kunden"). Returns its folder id."""
        box = self.mailboxes[address.lower()]
        with self._lock:
            parent_path, _, name = path.strip("/").rpartition("/")
            parent = self._folder_ref(box, parent_path) if parent_path else box.distinguished["msgfolderroot"]
            if parent is None:
                raise KeyError(f"no folder {parent_path!r} in {address}")
            return self._new_folder(box, name, parent, folder_class, "Folder", None).id

    def deliver(self, address: str, mimes: list[bytes], folder: str = "inbox", is_read: bool = False) -> list[str]:
        """Put messages into a folder (distinguished id, display name path or folder id); returns their item ids."""
        box = self.mailboxes[address.lower()]
        with self._lock:
            target = self._folder_ref(box, folder)
            if target is None:
                raise KeyError(f"no folder {folder!r} in {address}")
            ids = []
            for mime in mimes:
                n = next(self._ids)
                received = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=n)
                item = self._put(Item(n, "", bytes(mime), target, received, is_read))
                self._announce(item, ("CreatedEvent", "NewMailEvent"))
                ids.append(item.id)
        return ids

    def remove(self, address: str, item_id: str) -> None:
        """Delete an item behind the client's back (another client, a retention policy)."""
        with self._lock:
            item = self._items.get(item_id)
            if item is not None and item.folder.box.address == address.lower():
                self._drop(item)

    def move(self, address: str, item_id: str, folder: str) -> str:
        """Move an item behind the client's back (Outlook, a server rule); returns its new id."""
        with self._lock:
            item = self._items[item_id]
            target = self._folder_ref(self.mailboxes[address.lower()], folder)
            if target is None:
                raise KeyError(folder)
            return self._move(item, target).id

    def set_read(self, item_id: str, is_read: bool = True) -> None:
        """Change the read flag behind the client's back (Outlook on another machine)."""
        with self._lock:
            item = self._items[item_id]
            item.is_read = is_read
            item.changekey += 1

    def items(self, address: str, folder: str = "inbox") -> list[Item]:
        """The items of a folder, oldest first (for assertions)."""
        with self._lock:
            target = self._folder_ref(self.mailboxes[address.lower()], folder)
            return list(target.items.values()) if target else []

    def item(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def folder_id(self, address: str, folder: str) -> str:
        target = self._folder_ref(self.mailboxes[address.lower()], folder)
        if target is None:
            raise KeyError(folder)
        return target.id

    def invalidate_sync_states(self) -> None:
        """Every sync state handed out so far becomes invalid (ErrorInvalidSyncStateData)."""
        with self._lock:
            self._generation += 1

    # -- server -----------------------------------------------------------------------------------------------------
    def start(self) -> EwsEmulator:
        emulator = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                emulator._connection(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 64

        self.server = Server(("127.0.0.1", self.port), Handler)  # a restart keeps the port (and the url)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name=f"ews-{self.port}").start()
        return self

    def cut_streams(self) -> None:
        """Break every open GetStreamingEvents response mid-stream, as a dropped connection does."""
        with self._lock:
            self._cuts += 1
            self._changed.notify_all()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self._lock:  # streaming subscriptions live in the server's memory
            self.subscriptions.clear()
            self._cuts += 1
            self._changed.notify_all()
        for sock in list(self._sockets):  # like a server going down: open keep-alive connections break
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> EwsEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _connection(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.server_ctx.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            return
        self._sockets.add(tls)
        conn = _Conn()
        reader = tls.makefile("rb")
        try:
            while True:
                line = reader.readline(65537)
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    continue
                method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = reader.readline(65537)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(reader.readline().split(b";")[0].strip() or b"0", 16)
                        if not size:
                            while reader.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        body += reader.read(size)
                        reader.readline()
                else:
                    body = reader.read(int(headers.get("content-length", 0) or 0))
                status, out, payload, drop = self._http(conn, method, target, headers, body)
                if callable(payload):  # GetStreamingEvents: chunked, one envelope per chunk, open for minutes
                    head = [f"HTTP/1.1 {status} OK", "Transfer-Encoding: chunked", *(f"{k}: {v}" for k, v in out),
                            "Date: " + email.utils.formatdate(usegmt=True)]
                    tls.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
                    if not payload(lambda chunk: tls.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))):
                        with contextlib.suppress(OSError):  # cut: no last chunk
                            tls.shutdown(socket.SHUT_RDWR)
                        return
                    tls.sendall(b"0\r\n\r\n")
                    continue
                head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Length: {len(payload)}"]
                head += [f"{k}: {v}" for k, v in out]
                head.append("Date: " + email.utils.formatdate(usegmt=True))
                data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload
                if drop:
                    tls.sendall(data[:len(data) - max(1, len(payload) // 2)])
                    with contextlib.suppress(OSError):
                        tls.shutdown(socket.SHUT_RDWR)
                    return
                tls.sendall(data)  # one write
                if version.upper() == "HTTP/1.0" or headers.get("connection", "").lower() == "close":
                    return
        except (OSError, ValueError, ssl.SSLError):
            return
        finally:
            self._sockets.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    # -- HTTP and authentication ------------------------------------------------------------------------------------
    def _http(self, conn: _Conn, method: str, target: str, headers: dict, body: bytes):
        base = [("Server", "Microsoft-IIS/10.0"), ("request-id", str(uuid.uuid4())), ("X-Powered-By", "ASP.NET"),
                ("X-FEServer", "EX01")]
        if target.split("?", 1)[0].lower() != EWS_PATH:
            return 404, base + [("Content-Type", "text/html")], _IIS_404, False
        user, challenge = self._authenticate(conn, headers)
        if user is None:
            offered = []
            if challenge:
                offered.append(("WWW-Authenticate", challenge))
            else:
                if "ntlm" in self.auth:
                    offered.append(("WWW-Authenticate", "NTLM"))
                if "basic" in self.auth:
                    offered.append(("WWW-Authenticate", f'Basic realm="{self.realm}"'))
            return 401, base + offered + [("Content-Type", "text/html")], _IIS_401, False
        if conn.scheme == "ntlm":
            base.append(("Persistent-Auth", "true"))
        if method != "POST":
            return 200, base + [("Content-Type", "text/html")], _SERVICE_PAGE, False
        self.auth_used.append(conn.scheme or "")
        try:
            status, payload, drop = self._soap(user, headers, body)
        except Exception:
            self.errors.append(traceback.format_exc())
            status, drop = 500, False
            payload = _fault("ErrorInternalServerError", "EWS emulator error: " + self.errors[-1].splitlines()[-1])
        return status, base + [("Cache-Control", "private"), ("Content-Type", "text/xml; charset=utf-8"),
                               ("X-AspNet-Version", "4.0.30319")], payload, drop

    def _authenticate(self, conn: _Conn, headers: dict) -> tuple[User | None, str | None]:
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and "basic" in self.auth:
            try:
                login, _, password = base64.b64decode(token.strip()).decode(self.basic_charset).partition(":")
            except (ValueError, UnicodeDecodeError):
                return None, None
            user = self.users.get(login.lower())
            if user is not None and hmac.compare_digest(user.password.encode(), password.encode()):
                conn.scheme = "basic"
                return user, None
            return None, None
        if scheme == "ntlm" and "ntlm" in self.auth:
            try:
                raw = base64.b64decode(token.strip())
            except (ValueError, binascii.Error):
                return None, None
            kind = int.from_bytes(raw[8:12], "little") if raw[:8] == b"NTLMSSP\x00" else 0
            conn.user = None
            if kind == 1:
                try:
                    with self._ntlm_env():
                        conn.ntlm = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm,
                                                  channel_bindings=GssChannelBindings(application_data=self._cbt)
                                                  if self.channel_binding else None)
                        out = conn.ntlm.step(raw)
                except Exception:  # a malformed NEGOTIATE message
                    conn.ntlm = None
                    return None, None
                return None, "NTLM " + base64.b64encode(out).decode()
            if kind == 3 and conn.ntlm is not None:
                ctx, conn.ntlm = conn.ntlm, None
                try:
                    with self._ntlm_env():
                        ctx.step(raw)
                except Exception:  # spnego.exceptions.SpnegoError and friends: wrong user, password or binding
                    return None, None
                user = self.users.get((ctx.client_principal or "").lower())
                if user is None:
                    return None, None
                conn.user, conn.scheme = user, "ntlm"
                with self._lock:
                    self.ntlm_handshakes += 1
                return user, None
            return None, None
        if not value and conn.user is not None:  # NTLM authenticates the connection, not the request
            return conn.user, None
        return None, None

    @contextlib.contextmanager
    def _ntlm_env(self):
        with _NTLM_ENV_LOCK:
            old = os.environ.get("NTLM_USER_FILE")
            os.environ["NTLM_USER_FILE"] = str(self._user_file)
            try:
                yield
            finally:
                if old is None:
                    os.environ.pop("NTLM_USER_FILE", None)
                else:
                    os.environ["NTLM_USER_FILE"] = old

    def _write_user_file(self) -> None:
        lines = []
        for user in self.users.values():
            domain, sep, name = user.login.partition("\\")
            if not sep:
                domain, name = "", user.login
            if ":" in user.password or "\n" in user.password or ":" in name:
                continue  # the Heimdal "DOMAIN:USER:PASSWORD" format cannot carry these; Basic still works
            lines.append(f"{domain}:{name}:{user.password}")
        self._user_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # -- SOAP -------------------------------------------------------------------------------------------------------
    def _soap(self, user: User, headers: dict, body: bytes) -> tuple[int, bytes, bool]:
        try:
            root = ET.fromstring(body)
            soap_body = root.find(f"{{{SOAP}}}Body")
            request = soap_body[0]
        except (ET.ParseError, TypeError, IndexError):
            return 500, _fault("ErrorSchemaValidation", "The request failed schema validation: the request is not "
                                                        "a valid SOAP envelope."), False
        operation = request.tag.rpartition("}")[2]
        header = root.find(f"{{{SOAP}}}Header")
        impersonated = None
        version = "Exchange2007"
        if header is not None:
            for sid in header.iterfind(f"{{{TNS}}}ExchangeImpersonation/{{{TNS}}}ConnectingSID"):
                for child in sid:
                    impersonated = (child.text or "").strip().lower()
            rsv = header.find(f"{{{TNS}}}RequestServerVersion")
            if rsv is not None:
                version = rsv.get("Version", "")
        mailbox = impersonated or (headers.get("x-anchormailbox", "").lower() or None)
        with self._lock:
            self.requests.append((operation, mailbox))
            self._concurrent[mailbox] = self._concurrent.get(mailbox, 0) + 1
            self.max_concurrent[mailbox] = max(self.max_concurrent.get(mailbox, 0), self._concurrent[mailbox])
            drop = False
            if self.drop_connection_after is not None:
                if self.drop_connection_after <= 0:
                    drop, self.drop_connection_after = True, None
                else:
                    self.drop_connection_after -= 1
        try:
            if self.latency:
                time.sleep(self.latency)
            forced = self._forced(operation)
            if forced is not None:
                if isinstance(forced, int):
                    return forced, b"", drop
                if forced == "drop":
                    return 500, b"", True
                if forced in FAULT_CODES:
                    raise EwsFault(forced, values={"BackOffMilliseconds": str(self.busy_backoff_ms)}
                                   if forced == "ErrorServerBusy" else None)
            if self.server_busy and self._rng.random() < self.server_busy:
                raise EwsFault("ErrorServerBusy", values={"BackOffMilliseconds": str(self.busy_backoff_ms)})
            if version not in REQUEST_VERSIONS:
                raise EwsFault("ErrorInvalidServerVersion")
            handler = getattr(self, f"_op_{operation}", None)
            if handler is None:
                raise EwsFault("ErrorInternalServerError", f"The EWS emulator does not implement {operation}.")
            with self._lock:
                ctx = _Ctx(user, self._impersonation(user, impersonated) if impersonated else None, operation)
                if operation == "GetStreamingEvents" and forced is None:
                    stream = self._streaming(ctx, request)
                    if callable(stream):
                        return 200, stream, drop  # type: ignore[return-value]
                    messages = stream
                else:
                    messages = handler(ctx, request) if forced is None else self._forced_messages(operation,
                                                                                                  request, forced)
            payload = _envelope(f'<m:{operation}Response xmlns:m="{MNS}" xmlns:t="{TNS}"><m:ResponseMessages>'
                                + "".join(messages) + f"</m:ResponseMessages></m:{operation}Response>")
            return 200, payload, drop
        except EwsFault as e:
            return 500, _fault(e.code, e.message, e.values), drop
        finally:
            with self._lock:
                self._concurrent[mailbox] -= 1

    def _forced(self, operation: str):
        """Pop the first ``fail_next`` entry meant for this request (see ``__init__``)."""
        with self._lock:
            for i, entry in enumerate(self.fail_next):
                if isinstance(entry, tuple):
                    if entry[0] == operation:
                        return self.fail_next.pop(i)[1]
                    continue
                return self.fail_next.pop(i)
        return None

    def _forced_messages(self, operation: str, request: ET.Element, code: str) -> list[str]:
        count = max(1, len(_ids_of(request)))
        return [_message(operation, error=EwsError(code)) for _ in range(count)]

    def _impersonation(self, user: User, address: str) -> str:
        if not user.impersonate:
            raise EwsFault("ErrorImpersonateUserDenied")
        if address not in self.mailboxes:
            raise EwsFault("ErrorNonExistentMailbox", f"The SMTP address has no mailbox associated with it. "
                                                      f"({address})")
        if user.impersonate is not True and address not in user.impersonate:
            raise EwsFault("ErrorImpersonateUserDenied")
        return address

    # -- access -----------------------------------------------------------------------------------------------------
    def _may_open(self, ctx: _Ctx, box: Mailbox) -> None:
        if ctx.impersonated:
            if box.address != ctx.impersonated:
                raise EwsError("ErrorAccessDenied")
        elif box.address != ctx.user.mailbox and box.address not in ctx.user.full_access:
            raise EwsError("ErrorAccessDenied")

    def _folder_from(self, ctx: _Ctx, elem: ET.Element) -> Folder:
        """A folder from a t:FolderId or t:DistinguishedFolderId element."""
        tag = elem.tag.rpartition("}")[2]
        if tag == "DistinguishedFolderId":
            address = elem.findtext(f"{{{TNS}}}Mailbox/{{{TNS}}}EmailAddress")
            address = (address or ctx.impersonated or ctx.user.mailbox or "").strip().lower()
            if not address:
                raise EwsError("ErrorMissingEmailAddress")
            box = self.mailboxes.get(address)
            if box is None:
                raise EwsError("ErrorNonExistentMailbox")
            self._may_open(ctx, box)
            folder = box.distinguished.get(elem.get("Id", ""))
            if folder is None:
                raise EwsError("ErrorFolderNotFound")
            return folder
        if tag == "FolderId":
            fid = elem.get("Id", "")
            if not _valid_id(fid):
                raise EwsError("ErrorInvalidIdMalformed")
            folder = self._folders.get(fid)
            if folder is None:
                raise EwsError("ErrorFolderNotFound")
            self._may_open(ctx, folder.box)
            return folder
        raise EwsError("ErrorInvalidIdMalformed")

    def _item_from(self, ctx: _Ctx, elem: ET.Element) -> Item:
        iid = elem.get("Id", "")
        if not _valid_id(iid):
            raise EwsError("ErrorInvalidIdMalformed")
        item = self._items.get(iid)
        if item is None:
            raise EwsError("ErrorItemNotFound")
        self._may_open(ctx, item.folder.box)
        return item

    # -- folders ----------------------------------------------------------------------------------------------------
    def _new_folder(self, box: Mailbox, name: str, parent: Folder | None, folder_class: str | None, element: str,
                    distinguished: str | None) -> Folder:
        n = next(self._ids)
        fid = _make_id(b"\x00\x00\x00\x00" + box.key + b"\x00\x01\x00\x00" + n.to_bytes(8, "big"))
        folder = Folder(n, fid, box, name, parent, folder_class, element, distinguished)
        box.folders[fid] = folder
        self._folders[fid] = folder
        if distinguished:
            box.distinguished[distinguished] = folder
        if parent is not None:
            parent.children.append(folder)
        return folder

    def _folder_ref(self, box: Mailbox, ref: str) -> Folder | None:
        if ref in box.folders:
            return box.folders[ref]
        parts = [p for p in ref.strip("/").split("/") if p]
        if not parts:
            return box.distinguished["msgfolderroot"]
        folder = box.distinguished.get(parts[0].lower())
        if folder is None:
            folder = next((c for c in box.distinguished["msgfolderroot"].children
                           if c.name.casefold() == parts[0].casefold()), None)
        for part in parts[1:]:
            if folder is None:
                return None
            folder = next((c for c in folder.children if c.name.casefold() == part.casefold()), None)
        return folder

    def _folder_xml(self, folder: Folder, fields: set[str]) -> str:
        out = [f"<t:{folder.element}>"]
        for name in FOLDER_FIELDS:
            if name not in fields:
                continue
            if name == "FolderId":
                out.append(f'<t:FolderId Id="{folder.id}" ChangeKey="{_changekey(1)}"/>')
            elif name == "ParentFolderId" and folder.parent is not None:
                out.append(f'<t:ParentFolderId Id="{folder.parent.id}" ChangeKey="{_changekey(1)}"/>')
            elif name == "FolderClass" and folder.folder_class:
                out.append(f"<t:FolderClass>{_x(folder.folder_class)}</t:FolderClass>")
            elif name == "DisplayName":
                out.append(f"<t:DisplayName>{_x(folder.name)}</t:DisplayName>")
            elif name == "TotalCount":
                out.append(f"<t:TotalCount>{len(folder.items)}</t:TotalCount>")
            elif name == "ChildFolderCount":
                out.append(f"<t:ChildFolderCount>{len(folder.children)}</t:ChildFolderCount>")
            elif name == "EffectiveRights":
                out.append("<t:EffectiveRights><t:CreateAssociated>true</t:CreateAssociated><t:CreateContents>true"
                           "</t:CreateContents><t:CreateHierarchy>true</t:CreateHierarchy><t:Delete>true</t:Delete>"
                           "<t:Modify>true</t:Modify><t:Read>true</t:Read><t:ViewPrivateItems>true"
                           "</t:ViewPrivateItems></t:EffectiveRights>")
            elif name == "DistinguishedFolderId" and folder.distinguished:
                out.append(f"<t:DistinguishedFolderId>{folder.distinguished}</t:DistinguishedFolderId>")
            elif name == "UnreadCount" and folder.element not in ("CalendarFolder", "ContactsFolder"):
                out.append(f"<t:UnreadCount>{sum(not i.is_read for i in folder.items.values())}</t:UnreadCount>")
        out.append(f"</t:{folder.element}>")
        return "".join(out)

    @staticmethod
    def _shape(shape: ET.Element | None, default: set[str], everything: list[str]) -> set[str]:
        fields: set[str] = set()
        if shape is not None:
            base = shape.findtext(f"{{{TNS}}}BaseShape", "IdOnly")
            if base == "Default":
                fields |= default
            elif base == "AllProperties":
                fields |= set(everything) - {"MimeContent"}
            for uri in shape.iterfind(f"{{{TNS}}}AdditionalProperties/{{{TNS}}}FieldURI"):
                fields.add(uri.get("FieldURI", "").rpartition(":")[2])
            if (shape.findtext(f"{{{TNS}}}IncludeMimeContent") or "").strip().lower() in ("true", "1"):
                fields.add("MimeContent")
        return fields | {"FolderId", "ItemId"}

    def _op_ConvertId(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        # exchangelib's version probe converts "DUMMY"; no emulated id is convertible
        sources = request.find(f"{{{MNS}}}SourceIds")
        count = max(1, len(sources) if sources is not None else 0)
        return [_message("ConvertId", error=EwsError("ErrorInvalidIdMalformed")) for _ in range(count)]

    def _op_GetFolder(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        fields = self._shape(request.find(f"{{{MNS}}}FolderShape"), FOLDER_DEFAULT, FOLDER_FIELDS)
        out = []
        for elem in request.find(f"{{{MNS}}}FolderIds"):
            try:
                folder = self._folder_from(ctx, elem)
                out.append(_message("GetFolder", f"<m:Folders>{self._folder_xml(folder, fields)}</m:Folders>"))
            except EwsError as e:
                out.append(_message("GetFolder", error=e))
        return out

    def _op_FindFolder(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        fields = self._shape(request.find(f"{{{MNS}}}FolderShape"), FOLDER_DEFAULT, FOLDER_FIELDS)
        deep = request.get("Traversal", "Shallow") == "Deep"
        restriction = request.find(f"{{{MNS}}}Restriction")
        view = request.find(f"{{{MNS}}}IndexedPageFolderView")
        out = []
        for elem in request.find(f"{{{MNS}}}ParentFolderIds"):
            try:
                parent = self._folder_from(ctx, elem)
            except EwsError as e:
                out.append(_message("FindFolder", error=e))
                continue
            found = list(_descendants(parent)) if deep else list(parent.children)
            if restriction is not None and len(restriction):
                found = [f for f in found if _matches(restriction[0], lambda uri, f=f: _folder_value(f, uri))]
            page, offset, last = _page(found, view)
            out.append(_message("FindFolder", f'<m:RootFolder IndexedPagingOffset="{offset}" TotalItemsInView='
                                f'"{len(found)}" IncludesLastItemInRange="{_b(last)}"><t:Folders>'
                                + "".join(self._folder_xml(f, fields) for f in page) + "</t:Folders></m:RootFolder>"))
        return out

    def _op_CreateFolder(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        try:
            parent = self._folder_from(ctx, request.find(f"{{{MNS}}}ParentFolderId")[0])
        except EwsError as e:
            return [_message("CreateFolder", error=e)]
        out = []
        for elem in request.find(f"{{{MNS}}}Folders"):
            name = (elem.findtext(f"{{{TNS}}}DisplayName") or "").strip()
            if any(c.name.casefold() == name.casefold() for c in parent.children):
                out.append(_message("CreateFolder", error=EwsError("ErrorFolderExists")))
                continue
            element = elem.tag.rpartition("}")[2]
            folder = self._new_folder(parent.box, name, parent, elem.findtext(f"{{{TNS}}}FolderClass") or "IPF.Note",
                                      element, None)
            out.append(_message("CreateFolder", f"<m:Folders>{self._folder_xml(folder, {'FolderId'})}</m:Folders>"))
        return out

    # -- streaming notifications ----------------------------------------------------------------------------------
    def _op_Subscribe(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        wanted = request.find(f"{{{MNS}}}StreamingSubscriptionRequest")
        if wanted is None:
            raise EwsFault("ErrorInvalidRequest", "The EWS emulator implements streaming subscriptions only.")
        folders = [self._folder_from(ctx, e) for e in wanted.findall(f"{{{TNS}}}FolderIds/*")]
        if wanted.get("SubscribeToAllFolders", "").lower() == "true":
            address = (ctx.impersonated or ctx.user.mailbox or "").lower()
            if address not in self.mailboxes:
                raise EwsError("ErrorMissingEmailAddress")
            box, ids = self.mailboxes[address], None
        elif folders and len({f.box.address for f in folders}) == 1:
            box, ids = folders[0].box, {f.id for f in folders}
        else:
            raise EwsError("ErrorInvalidSubscriptionRequest", "Subscribe to folders of one mailbox.")
        types = {(e.text or "").strip() for e in wanted.findall(f"{{{TNS}}}EventTypes/{{{TNS}}}EventType")}
        sid = base64.b64encode(b"\x10\x00" + secrets.token_bytes(32)).decode()
        self.subscriptions[sid] = Subscription(sid, box, ctx.user, ids, types)
        return [_message("Subscribe", f"<m:SubscriptionId>{sid}</m:SubscriptionId>")]

    def _op_Unsubscribe(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        sub = self.subscriptions.get((request.findtext(f"{{{MNS}}}SubscriptionId") or "").strip())
        if sub is None or sub.user is not ctx.user:
            return [_message("Unsubscribe", error=EwsError("ErrorSubscriptionNotFound"))]
        del self.subscriptions[sub.id]
        return [_message("Unsubscribe")]

    def _op_GetStreamingEvents(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        raise AssertionError("answered by _streaming")

    def _streaming(self, ctx: _Ctx, request: ET.Element):
        """The response writer of GetStreamingEvents (called with a chunk sender; False when cut), or the error
        message when a subscription is unknown."""
        sids = [(e.text or "").strip() for e in request.iterfind(f"{{{MNS}}}SubscriptionIds/{{{TNS}}}SubscriptionId")]
        minutes = int(request.findtext(f"{{{MNS}}}ConnectionTimeout") or "0")
        if not 1 <= minutes <= 30:
            raise EwsError("ErrorInvalidArgument", "ConnectionTimeout must be between 1 and 30 minutes.")
        unknown = [sid for sid in sids if sid not in self.subscriptions or self.subscriptions[sid].user is not ctx.user]
        if unknown or not sids:
            ids = "".join(f"<m:SubscriptionId>{_x(sid)}</m:SubscriptionId>" for sid in unknown)
            return ['<m:GetStreamingEventsResponseMessage ResponseClass="Error"><m:MessageText>'
                    f'{_x(MESSAGES["ErrorSubscriptionNotFound"])}</m:MessageText><m:ResponseCode>'
                    "ErrorSubscriptionNotFound</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>"
                    f"<m:ErrorSubscriptionIds>{ids}</m:ErrorSubscriptionIds></m:GetStreamingEventsResponseMessage>"]
        subs = [self.subscriptions[sid] for sid in sids]
        self.streams_served += 1
        cuts = self._cuts
        deadline = time.monotonic() + minutes * self.stream_minute

        def chunk(content: str, status: str) -> bytes:
            return _envelope('<m:GetStreamingEventsResponse xmlns:m="%s" xmlns:t="%s"><m:ResponseMessages>%s'
                             "</m:ResponseMessages></m:GetStreamingEventsResponse>"
                             % (MNS, TNS, _message("GetStreamingEvents", content
                                                   + f"<m:ConnectionStatus>{status}</m:ConnectionStatus>")))

        def write(send) -> bool:
            beat = time.monotonic() + self.heartbeat_seconds
            while True:
                with self._lock:
                    while True:
                        if self._cuts != cuts:
                            return False
                        pending = [(sub.id, sub.events[:]) for sub in subs if sub.events]
                        now = time.monotonic()
                        if pending or now >= min(deadline, beat):
                            break
                        self._changed.wait(min(deadline, beat) - now)
                    for sub in subs:
                        sub.events.clear()
                if pending:
                    send(chunk("<m:Notifications>" + "".join(
                        f"<m:Notification><t:SubscriptionId>{sid}</t:SubscriptionId>{''.join(events)}"
                        "</m:Notification>" for sid, events in pending) + "</m:Notifications>", "OK"))
                elif now >= deadline:
                    send(chunk("", "Closed"))
                    return True
                else:
                    send(chunk("", "OK"))
                    beat = now + self.heartbeat_seconds

        return write

    def _announce(self, item: Item, kinds: tuple[str, ...], old: Item | None = None) -> None:
        """Queue events about an item for the subscriptions that watch its folder (or, for a move, the folder it
        left)."""
        stamp = _dt(datetime.datetime.now(datetime.timezone.utc))
        folders = {item.folder.id} | ({old.folder.id} if old is not None else set())
        for sub in self.subscriptions.values():
            if sub.box is not item.folder.box or (sub.folders is not None and not folders & sub.folders):
                continue
            for kind in kinds:
                if kind in sub.event_types:
                    extra = (f'<t:OldItemId Id="{old.id}" ChangeKey="{_changekey(old.changekey)}"/>'
                             f'<t:OldParentFolderId Id="{old.folder.id}"/>') if old is not None else ""
                    sub.events.append(f'<t:{kind}><t:TimeStamp>{stamp}</t:TimeStamp>'
                                      f'<t:ItemId Id="{item.id}" ChangeKey="{_changekey(item.changekey)}"/>'
                                      f'<t:ParentFolderId Id="{item.folder.id}"/>{extra}</t:{kind}>')
        self._changed.notify_all()

    # -- items ------------------------------------------------------------------------------------------------------
    def _put(self, item: Item) -> Item:
        item.id = _item_id(item.folder.box, item.n)
        item.folder.items[item.id] = item
        self._items[item.id] = item
        return item

    def _drop(self, item: Item) -> None:
        item.folder.items.pop(item.id, None)
        self._items.pop(item.id, None)

    def _move(self, item: Item, target: Folder) -> Item:
        """Moving gives the item a new id, as EWS does."""
        self._drop(item)
        moved = Item(next(self._ids), "", item.mime, target, item.received, item.is_read, item.changekey + 1,
                     item.props, list(item.categories), item.modified, item._meta)
        self._put(moved)
        self._announce(moved, ("MovedEvent",), old=item)
        return moved

    def _item_xml(self, item: Item, fields: set[str], mime: bool = True) -> str:
        out = ["<t:Message>"]
        for name in ITEM_FIELDS:
            if name not in fields:
                continue
            if name == "MimeContent":
                if mime:
                    out.append(f'<t:MimeContent CharacterSet="UTF-8">{base64.b64encode(item.mime).decode()}'
                               "</t:MimeContent>")
            elif name == "ItemId":
                out.append(f'<t:ItemId Id="{item.id}" ChangeKey="{_changekey(item.changekey)}"/>')
            elif name == "ParentFolderId":
                out.append(f'<t:ParentFolderId Id="{item.folder.id}" ChangeKey="{_changekey(1)}"/>')
            elif name in ("Sender", "From"):
                if item.meta.get("from"):
                    out.append(f"<t:{name}>{_mailbox_xml(item.meta['from'])}</t:{name}>")
            elif name in ("ToRecipients", "CcRecipients"):
                found = item.meta.get("to" if name == "ToRecipients" else "cc")
                if found:
                    out.append(f"<t:{name}>" + "".join(_mailbox_xml(a) for a in found) + f"</t:{name}>")
            elif name == "Categories":
                if item.categories:
                    out.append("<t:Categories>" + "".join(f"<t:String>{_x(c)}</t:String>" for c in item.categories)
                               + "</t:Categories>")
            else:
                value = _ITEM_VALUES[name](item)
                if value is not None:
                    out.append(f"<t:{name}>{_x(value)}</t:{name}>")
        out.append("</t:Message>")
        return "".join(out)

    def _op_GetItem(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        fields = self._shape(request.find(f"{{{MNS}}}ItemShape"), ITEM_DEFAULT, ITEM_FIELDS)
        out = []
        for elem in request.find(f"{{{MNS}}}ItemIds"):
            try:
                item = self._item_from(ctx, elem)
                out.append(_message("GetItem", f"<m:Items>{self._item_xml(item, fields)}</m:Items>"))
            except EwsError as e:
                out.append(_message("GetItem", error=e))
        return out

    def _op_FindItem(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        fields = self._shape(request.find(f"{{{MNS}}}ItemShape"), ITEM_DEFAULT, ITEM_FIELDS)
        restriction = request.find(f"{{{MNS}}}Restriction")
        view = request.find(f"{{{MNS}}}IndexedPageItemView")
        order = request.find(f"{{{MNS}}}SortOrder")
        out = []
        for elem in request.find(f"{{{MNS}}}ParentFolderIds"):
            try:
                folder = self._folder_from(ctx, elem)
            except EwsError as e:
                out.append(_message("FindItem", error=e))
                continue
            found = list(folder.items.values())
            if restriction is not None and len(restriction):
                found = [i for i in found if _matches(restriction[0], lambda uri, i=i: _item_value(i, uri))]
            orders = list(order) if order is not None else []
            if not orders:
                found.sort(key=lambda i: i.received, reverse=True)
            for fo in reversed(orders):
                uri = fo.find(f"{{{TNS}}}FieldURI")
                key = uri.get("FieldURI", "") if uri is not None else ""
                found.sort(key=lambda i: _sort_key(_item_value(i, key)), reverse=fo.get("Order") == "Descending")
            page, offset, last = _page(found, view)
            out.append(_message("FindItem", f'<m:RootFolder IndexedPagingOffset="{offset}" TotalItemsInView='
                                f'"{len(found)}" IncludesLastItemInRange="{_b(last)}"><t:Items>'
                                + "".join(self._item_xml(i, fields, mime=False) for i in page)
                                + "</t:Items></m:RootFolder>"))
        return out

    def _op_SyncFolderItems(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        fields = self._shape(request.find(f"{{{MNS}}}ItemShape"), ITEM_DEFAULT, ITEM_FIELDS)
        try:
            folder = self._folder_from(ctx, request.find(f"{{{MNS}}}SyncFolderId")[0])
        except EwsError as e:
            return [_message("SyncFolderItems", error=e)]
        try:
            limit = int(request.findtext(f"{{{MNS}}}MaxChangesReturned") or "")
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_SYNC_CHANGES:
            raise EwsFault("ErrorSchemaValidation", "The request failed schema validation: The 'MaxChangesReturned' "
                                                    "element is invalid - The value is invalid according to its "
                                                    "datatype 'MaxSyncChangesReturnedType'.")
        state = (request.findtext(f"{{{MNS}}}SyncState") or "").strip()
        known = self._read_sync_state(folder, state) if state else {}
        if known is None:
            return [_message("SyncFolderItems", error=EwsError("ErrorInvalidSyncStateData"))]
        ignore = {e.get("Id") for e in request.iterfind(f"{{{MNS}}}Ignore/{{{TNS}}}ItemId")}
        changes = []
        for item in folder.items.values():
            seen = known.get(item.n)
            if seen is None:
                changes.append(("Create", item))
            elif seen[0] != item.props:
                changes.append(("Update", item))
            elif seen[1] != item.is_read:
                changes.append(("ReadFlagChange", item))
        present = {item.n for item in folder.items.values()}
        changes += [("Delete", n) for n in known if n not in present]
        reported, i, xml = 0, 0, []
        while i < len(changes) and reported < limit:
            kind, obj = changes[i]
            i += 1
            if kind == "Delete":
                known.pop(obj, None)
                xml.append(f'<t:Delete><t:ItemId Id="{_item_id(folder.box, obj)}"/></t:Delete>')
                reported += 1
                continue
            known[obj.n] = (obj.props, obj.is_read)
            if obj.id in ignore:
                continue
            reported += 1
            if kind == "ReadFlagChange":
                xml.append(f'<t:ReadFlagChange><t:ItemId Id="{obj.id}" ChangeKey="{_changekey(obj.changekey)}"/>'
                           f"<t:IsRead>{_b(obj.is_read)}</t:IsRead></t:ReadFlagChange>")
            else:
                xml.append(f"<t:{kind}>{self._item_xml(obj, fields, mime=False)}</t:{kind}>")
        return [_message("SyncFolderItems", f"<m:SyncState>{self._write_sync_state(folder, known)}</m:SyncState>"
                         f"<m:IncludesLastItemInRange>{_b(i >= len(changes))}</m:IncludesLastItemInRange>"
                         f"<m:Changes>{''.join(xml)}</m:Changes>")]

    def _write_sync_state(self, folder: Folder, known: dict[int, tuple[int, bool]]) -> str:
        ns = sorted(known)
        data = {"g": self._generation, "f": folder.n, "i": [b - a for a, b in zip([0] + ns, ns)],
                "p": [known[n][0] for n in ns], "r": "".join("1" if known[n][1] else "0" for n in ns)}
        blob = gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0)
        blob = blob[:8] + b"\x04\x00" + blob[10:]  # XFL and OS bytes as .NET's GZipStream writes them ("H4sIAAAAAAAEA")
        return base64.b64encode(blob + hmac.new(self._secret, blob, hashlib.sha256).digest()[:16]).decode()

    def _read_sync_state(self, folder: Folder, state: str) -> dict[int, tuple[int, bool]] | None:
        try:
            raw = base64.b64decode(state, validate=True)
            blob, mac = raw[:-16], raw[-16:]
            if not hmac.compare_digest(mac, hmac.new(self._secret, blob, hashlib.sha256).digest()[:16]):
                return None
            data = json.loads(gzip.decompress(blob))
            if data["g"] != self._generation or data["f"] != folder.n:
                return None
            ns = list(itertools.accumulate(data["i"]))
            return {n: (p, r == "1") for n, p, r in zip(ns, data["p"], data["r"])}
        except (ValueError, KeyError, TypeError, OSError, EOFError, binascii.Error):
            return None

    def _op_UpdateItem(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        resolution = request.get("ConflictResolution")
        if resolution not in ("NeverOverwrite", "AutoResolve", "AlwaysOverwrite") or not request.get(
                "MessageDisposition"):
            raise EwsFault("ErrorSchemaValidation", "The request failed schema validation: The required attribute "
                                                    "'ConflictResolution' or 'MessageDisposition' is missing.")
        out = []
        for change in request.find(f"{{{MNS}}}ItemChanges"):
            try:
                item = self._item_from(ctx, change.find(f"{{{TNS}}}ItemId"))
                given = change.find(f"{{{TNS}}}ItemId").get("ChangeKey")
                if resolution == "NeverOverwrite" and given and given != _changekey(item.changekey):
                    raise EwsError("ErrorIrresolvableConflict")
                for update in change.find(f"{{{TNS}}}Updates"):
                    kind = update.tag.rpartition("}")[2]
                    uri = update.find(f"{{{TNS}}}FieldURI")
                    prop = uri.get("FieldURI", "").rpartition(":")[2] if uri is not None else ""
                    if prop == "IsRead":
                        value = update.findtext(f".//{{{TNS}}}IsRead")
                        item.is_read = kind == "SetItemField" and (value or "").strip().lower() in ("true", "1")
                    elif prop == "Categories":
                        item.categories = [s.text or "" for s in update.iterfind(f".//{{{TNS}}}String")]
                        if kind == "DeleteItemField":
                            item.categories = []
                        item.props += 1
                item.changekey += 1
                item.modified = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
                out.append(_message("UpdateItem", f"<m:Items>{self._item_xml(item, {'ItemId'})}</m:Items>"
                                    "<m:ConflictResults><t:Count>0</t:Count></m:ConflictResults>"))
            except EwsError as e:
                out.append(_message("UpdateItem", error=e))
        return out

    def _op_MoveItem(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        try:
            target = self._folder_from(ctx, request.find(f"{{{MNS}}}ToFolderId")[0])
        except EwsError as e:
            return [_message("MoveItem", error=e) for _ in request.find(f"{{{MNS}}}ItemIds")]
        out = []
        for elem in request.find(f"{{{MNS}}}ItemIds"):
            try:
                item = self._item_from(ctx, elem)
                if item.folder.box is not target.box:
                    self._move(item, target)  # into another mailbox: EWS answers without an id
                    out.append(_message("MoveItem", "<m:Items/>"))
                    continue
                moved = self._move(item, target)
                out.append(_message("MoveItem", f"<m:Items>{self._item_xml(moved, {'ItemId'})}</m:Items>"))
            except EwsError as e:
                out.append(_message("MoveItem", error=e))
        return out

    def _op_DeleteItem(self, ctx: _Ctx, request: ET.Element) -> list[str]:
        delete_type = request.get("DeleteType")
        if delete_type not in ("HardDelete", "SoftDelete", "MoveToDeletedItems"):
            raise EwsFault("ErrorSchemaValidation", "The request failed schema validation: The 'DeleteType' "
                                                    "attribute is invalid.")
        out = []
        for elem in request.find(f"{{{MNS}}}ItemIds"):
            try:
                item = self._item_from(ctx, elem)
                box = item.folder.box
                if delete_type == "HardDelete":
                    self._drop(item)
                elif delete_type == "MoveToDeletedItems" and item.folder is not box.distinguished["deleteditems"]:
                    self._move(item, box.distinguished["deleteditems"])
                else:  # SoftDelete, or MoveToDeletedItems from Deleted Items: into the dumpster
                    self._move(item, box.distinguished["recoverableitemsdeletions"])
                out.append(_message("DeleteItem"))
            except EwsError as e:
                out.append(_message("DeleteItem", error=e))
        return out


# -- helpers -----------------------------------------------------------------------------------------------------------
_SERVICE_PAGE = b"<html><head><title>Service</title></head><body><p>You have created a service.</p></body></html>"
# What Exchange puts after DescriptiveLinkKey in an error ResponseMessage of these operations.
_EMPTY = {"GetItem": "<m:Items/>", "UpdateItem": "<m:Items/>", "MoveItem": "<m:Items/>", "GetFolder": "<m:Folders/>",
          "CreateFolder": "<m:Folders/>",
          "SyncFolderItems": "<m:SyncState/><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>"}
_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}
_IIS_401 = (b"<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" "
            b"\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd\">\r\n<html><head><title>401 - Unauthorized: "
            b"Access is denied due to invalid credentials.</title></head><body><div id=\"header\"><h1>Server Error"
            b"</h1></div><div id=\"content\"><h2>401 - Unauthorized: Access is denied due to invalid credentials."
            b"</h2><h3>You do not have permission to view this directory or page using the credentials that you "
            b"supplied.</h3></div></body></html>")
_IIS_404 = (b"<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" "
            b"\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd\">\r\n<html><head><title>404 - File or directory "
            b"not found.</title></head><body><div id=\"header\"><h1>Server Error</h1></div><div id=\"content\"><h2>"
            b"404 - File or directory not found.</h2><h3>The resource you are looking for might have been removed, "
            b"had its name changed, or is temporarily unavailable.</h3></div></body></html>")


def _x(value) -> str:
    return escape(_XML_INVALID.sub("", str(value)))


def _b(value) -> str:
    return "true" if value else "false"


def _dt(value: datetime.datetime) -> str:
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _make_id(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _item_id(box: Mailbox, n: int) -> str:
    return _make_id(b"\x00\x00\x00\x00" + box.key + b"\x00\x46\x00\x00" + n.to_bytes(8, "big"))


def _valid_id(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) >= 8
    except (ValueError, binascii.Error):
        return False


def _changekey(n: int) -> str:
    return base64.b64encode(b"\x09\x00\x00\x00\x16\x00\x00\x00" + n.to_bytes(8, "big")).decode()


def _descendants(folder: Folder):
    for child in folder.children:
        yield child
        yield from _descendants(child)


def _page(found: list, view: ET.Element | None) -> tuple[list, int, bool]:
    size = len(found) or 1
    offset = 0
    if view is not None:
        size = int(view.get("MaxEntriesReturned") or size)
        offset = int(view.get("Offset") or 0)
        if view.get("BasePoint") == "End":
            offset = max(0, len(found) - offset - size)
    page = found[offset:offset + size]
    return page, offset + len(page), offset + len(page) >= len(found)


def _ids_of(request: ET.Element) -> list[ET.Element]:
    for container in ("ItemIds", "FolderIds", "ItemChanges", "ParentFolderIds", "SourceIds"):
        found = request.find(f"{{{MNS}}}{container}")
        if found is not None:
            return list(found)
    return []


def _envelope(body: str) -> bytes:
    version = " ".join(f'{k}="{v}"' for k, v in SERVER_VERSION.items())
    return ('<?xml version="1.0" encoding="utf-8"?>'
            f'<s:Envelope xmlns:s="{SOAP}"><s:Header><h:ServerVersionInfo {version} xmlns:h="{TNS}" '
            f'xmlns="{TNS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema"/></s:Header>'
            '<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xmlns:xsd="http://www.w3.org/2001/XMLSchema">{body}</s:Body></s:Envelope>').encode("utf-8")


def _fault(code: str, message: str | None = None, values: dict | None = None) -> bytes:
    message = message or MESSAGES.get(code, code)
    xml = "".join(f'<t:Value Name="{_x(k)}">{_x(v)}</t:Value>' for k, v in (values or {}).items())
    detail = (f'<e:ResponseCode xmlns:e="{ENS}">{code}</e:ResponseCode><e:Message xmlns:e="{ENS}">{_x(message)}'
              "</e:Message>" + (f'<t:MessageXml xmlns:t="{TNS}">{xml}</t:MessageXml>' if xml else ""))
    return ('<?xml version="1.0" encoding="utf-8"?>'
            f'<s:Envelope xmlns:s="{SOAP}"><s:Body><s:Fault><faultcode xmlns:a="{TNS}">a:{code}</faultcode>'
            f'<faultstring xml:lang="en-US">{_x(message)}</faultstring><detail>{detail}</detail></s:Fault>'
            "</s:Body></s:Envelope>").encode("utf-8")


def _message(operation: str, content: str = "", error: EwsError | None = None,
             response_class: str | None = None) -> str:
    tag = f"m:{operation}ResponseMessage"
    if error is None:
        return f'<{tag} ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>{content}</{tag}>'
    return (f'<{tag} ResponseClass="{response_class or "Error"}"><m:MessageText>{_x(error.message)}</m:MessageText>'
            f"<m:ResponseCode>{error.code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>"
            f"{_EMPTY.get(operation, '')}</{tag}>")


def _mailbox_xml(addr: tuple[str, str]) -> str:
    name, address = addr
    return (f"<t:Mailbox><t:Name>{_x(name or address)}</t:Name><t:EmailAddress>{_x(address)}</t:EmailAddress>"
            "<t:RoutingType>SMTP</t:RoutingType><t:MailboxType>OneOff</t:MailboxType></t:Mailbox>")


def _mime_meta(mime: bytes) -> dict:
    """What Exchange derives from the MIME for the item properties (header block only, for speed)."""
    end = min((i for i in (mime.find(b"\r\n\r\n"), mime.find(b"\n\n")) if i >= 0), default=len(mime))
    msg = email.parser.BytesHeaderParser(policy=policy.compat32).parsebytes(mime[:end + 4])

    def header(name: str) -> str | None:
        value = msg.get(name)
        if value is None:
            return None
        try:
            value = str(email.header.make_header(email.header.decode_header(str(value))))
        except (ValueError, LookupError, UnicodeError):
            value = str(value)
        return " ".join(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace").split()) or None

    def addresses(name: str) -> list[tuple[str, str]]:
        values = [header_value for header_value in (header(name),) if header_value]
        return [(n, a) for n, a in email.utils.getaddresses(values) if a]

    meta: dict = {"subject": header("subject"), "message_id": header("message-id"),
                  "in_reply_to": header("in-reply-to"), "references": header("references")}
    meta["topic"] = re.sub(r"^((re|aw|fw|fwd|wg)\s*:\s*)+", "", meta["subject"] or "", flags=re.I) or None
    senders = addresses("from")
    meta["from"] = senders[0] if senders else None
    meta["to"], meta["cc"] = addresses("to"), addresses("cc")
    meta["display_to"] = "; ".join(n or a for n, a in meta["to"]) or None
    meta["display_cc"] = "; ".join(n or a for n, a in meta["cc"]) or None
    try:
        sent = email.utils.parsedate_to_datetime(header("date") or "")
        meta["sent"] = sent if sent.tzinfo else sent.replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError, IndexError):
        meta["sent"] = None
    meta["attachments"] = re.search(rb"(?im)^content-disposition:\s*attachment", mime) is not None
    return meta


_ITEM_VALUES = {  # the simple properties of a message, computed only when asked for
    "ItemClass": lambda i: "IPM.Note", "Subject": lambda i: i.meta["subject"], "Sensitivity": lambda i: "Normal",
    "DateTimeReceived": lambda i: _dt(i.received), "Size": lambda i: str(len(i.mime)),
    "Importance": lambda i: "Normal", "InReplyTo": lambda i: i.meta["in_reply_to"],
    "IsSubmitted": lambda i: "false", "IsDraft": lambda i: _b(i.folder.distinguished == "drafts"),
    "IsFromMe": lambda i: "false", "IsResend": lambda i: "false", "IsUnmodified": lambda i: _b(i.changekey == 1),
    "DateTimeSent": lambda i: _dt(i.meta["sent"] or i.received), "DateTimeCreated": lambda i: _dt(i.received),
    "DisplayCc": lambda i: i.meta["display_cc"], "DisplayTo": lambda i: i.meta["display_to"],
    "HasAttachments": lambda i: _b(i.meta["attachments"]), "LastModifiedTime": lambda i: _dt(i.modified or i.received),
    "IsAssociated": lambda i: "false", "IsReadReceiptRequested": lambda i: "false",
    "IsDeliveryReceiptRequested": lambda i: "false", "ConversationTopic": lambda i: i.meta["topic"],
    "InternetMessageId": lambda i: i.meta["message_id"], "IsRead": lambda i: _b(i.is_read),
    "IsResponseRequested": lambda i: "false", "References": lambda i: i.meta["references"],
}


def _folder_value(folder: Folder, uri: str):
    name = uri.rpartition(":")[2]
    return {"DisplayName": folder.name, "FolderClass": folder.folder_class, "TotalCount": len(folder.items),
            "ChildFolderCount": len(folder.children),
            "UnreadCount": sum(not i.is_read for i in folder.items.values())}.get(name)


def _item_value(item: Item, uri: str):
    name = uri.rpartition(":")[2]
    m = item.meta
    return {"IsRead": item.is_read, "DateTimeReceived": item.received, "DateTimeSent": m.get("sent") or item.received,
            "DateTimeCreated": item.received, "Subject": m.get("subject"), "Size": len(item.mime),
            "ItemClass": "IPM.Note", "InternetMessageId": m.get("message_id"),
            "HasAttachments": bool(m.get("attachments")),
            "LastModifiedTime": item.modified or item.received}.get(name)


def _sort_key(value):
    if value is None:
        return (0, "")
    if isinstance(value, str):
        return (1, value.casefold())
    return (1, value)


def _coerce(constant: str, like):
    if isinstance(like, bool):
        return constant.strip().lower() in ("true", "1")
    if isinstance(like, int):
        return int(constant)
    if isinstance(like, datetime.datetime):
        parsed = datetime.datetime.fromisoformat(constant.strip().replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)
    return constant


def _matches(expr: ET.Element, value_of) -> bool:
    """Evaluate an EWS restriction (SearchExpression) against one folder or item."""
    op = expr.tag.rpartition("}")[2]
    if op == "And":
        return all(_matches(e, value_of) for e in expr)
    if op == "Or":
        return any(_matches(e, value_of) for e in expr)
    if op == "Not":
        return not _matches(expr[0], value_of)
    uri = expr.find(f"{{{TNS}}}FieldURI")
    value = value_of(uri.get("FieldURI", "")) if uri is not None else None
    if op == "Exists":
        return value is not None
    if op == "Contains":
        constant = expr.find(f"{{{TNS}}}Constant")
        needle = (constant.get("Value", "") if constant is not None else "")
        hay = str(value or "")
        if expr.get("ContainmentComparison", "Exact") != "Exact":
            needle, hay = needle.casefold(), hay.casefold()
        mode = expr.get("ContainmentMode", "Substring")
        return {"FullString": hay == needle, "Prefixed": hay.startswith(needle)}.get(mode, needle in hay)
    constant = expr.find(f"{{{TNS}}}FieldURIOrConstant/{{{TNS}}}Constant")
    if constant is None or value is None:
        return op == "IsNotEqualTo" and value is None and constant is not None
    other = _coerce(constant.get("Value", ""), value)
    if isinstance(value, str):
        value, other = value.casefold(), str(other).casefold()
    return {"IsEqualTo": value == other, "IsNotEqualTo": value != other, "IsGreaterThan": value > other,
            "IsGreaterThanOrEqualTo": value >= other, "IsLessThan": value < other,
            "IsLessThanOrEqualTo": value <= other}.get(op, False)
