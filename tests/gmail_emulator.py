"""A Gmail API emulator for tests and benchmarks: an HTTPS CONNECT proxy on 127.0.0.1.

Production code keeps the real URLs (oauth2.googleapis.com, gmail.googleapis.com, www.googleapis.com). Client
processes get HTTPS_PROXY pointing at this proxy and HTTPLIB2_CA_CERTS / REQUESTS_CA_BUNDLE pointing at its
throw-away CA (see ``environ()``; httplib2 reads its CA bundle once, at import, and needs PySocks for the proxy).
The proxy accepts tunnels only to those hosts and answers inside them with TLS from that CA, following the shapes
of Google's Gmail v1 REST reference (users.getProfile, users.labels, users.messages, users.history, the batch
endpoint) and of the OAuth 2.0 JWT-bearer grant used by service accounts with domain-wide delegation.

Set-up: ``add_service_account()`` (a key file as Google issues it), ``authorize(client_id, scopes)`` (the admin
console's domain-wide delegation), ``add_mailbox``, ``deliver``, ``add_label``, ``remove``, ``expire_history``.

Faults: ``api_disabled``, ``latency``, ``throttle``, ``fail_next``, ``drop_connection_after``,
``cut_connections()``, ``set_outage()``, and the per-mailbox quota (a token bucket, ``quota_per_second`` units
per second, ``quota_burst`` deep). Records: ``requests``, ``batch_sizes``, ``over_quota``, ``throttled``,
``max_units_per_second``, ``max_concurrent``, ``token_requests``.
"""

from __future__ import annotations

import base64
import collections
import datetime
import email
import email.parser
import itertools
import json
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
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message as EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from testca import throwaway_ca

OAUTH = "oauth2.googleapis.com"
GMAIL = "gmail.googleapis.com"
WWW = "www.googleapis.com"
PUBSUB = "pubsub.googleapis.com"
HOSTS = (OAUTH, GMAIL, WWW, PUBSUB)
SCOPE_PUBSUB = "https://www.googleapis.com/auth/pubsub"
SCOPE_CLOUD = "https://www.googleapis.com/auth/cloud-platform"
GMAIL_PUBLISHER = "gmail-api-push@system.gserviceaccount.com"
TOKEN_URI = f"https://{OAUTH}/token"
TOKEN_AUDIENCES = {TOKEN_URI, "https://accounts.google.com/o/oauth2/token", f"https://{WWW}/oauth2/v4/token"}

SCOPE_FULL = "https://mail.google.com/"
SCOPE_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
SCOPE_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
SCOPE_METADATA = "https://www.googleapis.com/auth/gmail.metadata"
SCOPE_LABELS = "https://www.googleapis.com/auth/gmail.labels"
_READ = frozenset({SCOPE_FULL, SCOPE_MODIFY, SCOPE_READONLY, SCOPE_METADATA})
_WRITE = frozenset({SCOPE_FULL, SCOPE_MODIFY})

# operation -> (quota units, scopes that allow it, the RPC name Google reports in ErrorInfo)
OPERATIONS = {
    "users.getProfile": (1, _READ, "GetProfile"),
    "users.labels.list": (1, _READ | {SCOPE_LABELS}, "ListLabels"),
    "users.labels.get": (1, _READ | {SCOPE_LABELS}, "GetLabel"),
    "users.labels.create": (1, _WRITE | {SCOPE_LABELS}, "CreateLabel"),
    "users.labels.delete": (1, _WRITE | {SCOPE_LABELS}, "DeleteLabel"),
    "users.messages.list": (5, _READ, "ListMessages"),
    "users.messages.get": (5, _READ, "GetMessage"),
    "users.messages.attachments.get": (5, _READ - {SCOPE_METADATA}, "GetAttachment"),
    "users.history.list": (2, _READ, "ListHistory"),
    "users.messages.modify": (5, _WRITE, "ModifyMessage"),
    "users.messages.batchModify": (50, _WRITE, "BatchModifyMessages"),
    "users.messages.trash": (5, _WRITE, "TrashMessage"),
    "users.messages.untrash": (5, _WRITE, "UntrashMessage"),
    "users.messages.delete": (10, frozenset({SCOPE_FULL}), "DeleteMessage"),
    "users.messages.batchDelete": (50, frozenset({SCOPE_FULL}), "BatchDeleteMessages"),
    "users.watch": (100, _READ, "Watch"),
    "users.stop": (50, _READ, "Stop"),
}

SYSTEM_LABELS = ("CHAT", "SENT", "INBOX", "IMPORTANT", "TRASH", "DRAFT", "SPAM", "CATEGORY_FORUMS",
                 "CATEGORY_UPDATES", "CATEGORY_PERSONAL", "CATEGORY_PROMOTIONS", "CATEGORY_SOCIAL", "STARRED",
                 "UNREAD")
_HIDDEN_SYSTEM_LABELS = {"CHAT", "IMPORTANT", "TRASH", "DRAFT", "SPAM"}  # labels.list shows visibilities for these
HISTORY_TYPES = {"messageAdded": "messagesAdded", "messageDeleted": "messagesDeleted",
                 "labelAdded": "labelsAdded", "labelRemoved": "labelsRemoved"}


def make_ca(directory: Path, hosts: tuple[str, ...] = HOSTS) -> tuple[Path, ssl.SSLContext]:
    """A throw-away CA (its PEM file, for clients) and a server context whose leaf names all ``hosts``."""
    ca_file, ctx, _ = throwaway_ca(directory, hosts, name="archivista-mail test CA (Gmail)")
    return ca_file, ctx


# -- state ----------------------------------------------------------------------------------------


@dataclass
class ServiceAccount:
    client_email: str
    client_id: str
    project_id: str
    project_number: str
    keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)  # private_key_id -> public key


@dataclass
class Message:
    id: str
    thread_id: str
    raw: bytes
    label_ids: list[str]
    internal_date: int  # ms since the epoch
    history_id: int = 0

    def ref(self, labels: bool = True) -> dict:
        out = {"id": self.id, "threadId": self.thread_id}
        if labels and self.label_ids:
            out["labelIds"] = list(self.label_ids)
        return out


@dataclass
class Label:
    id: str
    name: str
    type: str = "user"
    message_list_visibility: str | None = "show"
    label_list_visibility: str | None = "labelShow"
    color: dict | None = None

    def resource(self) -> dict:
        out = {"id": self.id, "name": self.name}
        if self.message_list_visibility:
            out["messageListVisibility"] = self.message_list_visibility
        if self.label_list_visibility:
            out["labelListVisibility"] = self.label_list_visibility
        out["type"] = self.type
        if self.color:
            out["color"] = self.color
        return out


@dataclass
class Mailbox:
    address: str
    history_id: int = 1000
    history_floor: int = 1000  # history.list with an older startHistoryId answers 404
    messages: dict[str, Message] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    threads_by_message_id: dict[str, str] = field(default_factory=dict)  # Message-ID header -> threadId
    bucket: float = 0.0
    bucket_time: float = 0.0
    accepted: collections.deque = field(default_factory=collections.deque)  # (monotonic time, units)
    accepted_units: int = 0
    last_date: int = 0
    watch: dict | None = None  # users.watch: topicName, labelIds, expiration (ms)

    def label(self, ref: str) -> Label | None:
        """A label by id, or by name (case-insensitive)."""
        if ref in self.labels:
            return self.labels[ref]
        return next((lb for lb in self.labels.values() if lb.name.lower() == ref.lower()), None)


class GmailError(Exception):
    """An answer in the shape of Google's JSON errors."""

    def __init__(self, code: int, message: str, reason: str, status: str, domain: str = "global",
                 details: list | None = None, headers: dict | None = None, item_message: str | None = None,
                 **extra) -> None:
        super().__init__(message)
        self.code, self.message, self.reason, self.status, self.domain = code, message, reason, status, domain
        self.item_message = item_message or message  # errors[0].message, where Google words it differently
        self.details, self.headers, self.extra = details, headers or {}, extra

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message,
                 "errors": [{"message": self.item_message, "domain": self.domain, "reason": self.reason, **self.extra}],
                 "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def _not_found() -> GmailError:
    return GmailError(404, "Requested entity was not found.", "notFound", "NOT_FOUND")


def _invalid(message: str) -> GmailError:
    return GmailError(400, message, "invalidArgument", "INVALID_ARGUMENT")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- the emulator ---------------------------------------------------------------------------------


class GmailEmulator:
    """State and behaviour of the emulated Google Workspace domain. ``start()``, then ``stop()``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="amgm-"))
        self.ca_file, self.server_ctx = make_ca(self.dir)
        self.accounts: dict[str, ServiceAccount] = {}  # client_email -> account
        self.delegations: dict[str, set[str]] = {}  # client id -> scopes (admin console, domain-wide delegation)
        self.mailboxes: dict[str, Mailbox] = {}
        self.tokens: dict[str, dict] = {}  # access token -> account, subject, scopes, expiry
        self.token_lifetime = 3599
        self.token_requests = 0
        self.api_disabled = False
        self.latency = 0.0
        self.throttle = 0.0
        self.fail_next: list[tuple] = []  # (status, body[, headers]) forced answers for the next API calls
        self.drop_connection_after: int | None = None
        self._tunnels: set[socket.socket] = set()
        self.outage = False
        self.quota_per_second: float | None = 250.0  # None: no quota
        self.quota_burst = 250.0
        self.max_batch_parts = 100
        self.requests: list[tuple[str, str]] = []  # (method, path) of API requests, batch envelopes and parts
        self.batch_sizes: list[int] = []
        self.over_quota = 0
        self.throttled = 0
        self.max_units_per_second: dict[str, int] = {}
        self.max_concurrent: dict[str, int] = {}
        self._concurrent: dict[str, int] = {}
        self._attachments: dict[str, tuple[str, str, str]] = {}
        self._throttle_flip = False
        self._lock = threading.RLock()
        self._rng = random.Random(7)
        self._ids = itertools.count(1)
        self._label_ids = itertools.count(1)
        self.server: socketserver.ThreadingTCPServer | None = None
        self.port = 0
        # Cloud Pub/Sub: topic -> its subscriptions and whether Gmail may publish to it; subscription -> queue
        self.topics: dict[str, dict] = {}
        self.pubsub: dict[str, dict] = {}
        self.pull_wait = 2.0  # seconds a pull waits for a message before answering empty
        self.watch_calls: list[str] = []

    def add_topic(self, topic: str, subscription: str, gmail_may_publish: bool = True) -> None:
        """A Pub/Sub topic (projects/P/topics/T) with a pull subscription; Gmail's publisher granted on it."""
        self.topics[topic] = {"subscriptions": [subscription], "publishers": {GMAIL_PUBLISHER} if gmail_may_publish
                              else set()}
        self.pubsub[subscription] = {"topic": topic, "queue": collections.deque(), "outstanding": {}}

    def _publish(self, topic: str, data: dict) -> None:
        message = {"data": base64.b64encode(json.dumps(data).encode()).decode(), "messageId": str(next(self._ids)),
                   "publishTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "attributes": {}}
        for name in self.topics[topic]["subscriptions"]:
            self.pubsub[name]["queue"].append(message)

    # -- set-up -----------------------------------------------------------------------------------
    def add_service_account(self, client_email: str | None = None) -> dict:
        """A new service account with one RSA key; answers its key file's content as Google issues it."""
        n = next(self._ids)
        project_id = f"archivista-test-{n:04d}"
        client_email = client_email or f"archivista-{n:04d}@{project_id}.iam.gserviceaccount.com"
        client_id = str(100000000000000000000 + self._rng.randrange(10 ** 20))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        with self._lock:
            account = self.accounts.get(client_email)
            if account is None:
                account = ServiceAccount(client_email, client_id, project_id,
                                         str(100000000000 + self._rng.randrange(900000000000)))
                self.accounts[client_email] = account
            account.keys[key_id] = key.public_key()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        return {
            "type": "service_account",
            "project_id": account.project_id,
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": client_email,
            "client_id": account.client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": TOKEN_URI,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + quote(client_email),
            "universe_domain": "googleapis.com",
        }

    def authorize(self, client_id: str, scopes) -> None:
        """Domain-wide delegation for ``client_id``: the admin console's scope list replaces the previous one."""
        with self._lock:
            self.delegations[str(client_id)] = {scopes} if isinstance(scopes, str) else set(scopes)

    def project_number(self, client_email: str) -> str:
        return self.accounts[client_email].project_number

    def add_mailbox(self, address: str) -> Mailbox:
        box = Mailbox(address)
        for name in SYSTEM_LABELS:
            hidden = name in _HIDDEN_SYSTEM_LABELS
            box.labels[name] = Label(name, name, "system", "hide" if hidden else None, "labelHide" if hidden else None)
        box.bucket = self.quota_burst
        box.bucket_time = time.monotonic()
        with self._lock:
            self.mailboxes[address.lower()] = box
        return box

    def mailbox(self, address: str) -> Mailbox:
        return self.mailboxes[address.lower()]

    def add_label(self, address: str, name: str, message_list_visibility: str = "show",
                  label_list_visibility: str = "labelShow") -> str:
        with self._lock:
            box = self.mailbox(address)
            if box.label(name) is not None:
                raise ValueError(f"label {name!r} exists in {address}")
            label = Label(f"Label_{next(self._label_ids)}", name, "user", message_list_visibility,
                          label_list_visibility)
            box.labels[label.id] = label
            return label.id

    def deliver(self, address: str, mimes: list[bytes], labels=("INBOX", "UNREAD"),
                internal_date: int | None = None) -> list[str]:
        """Add messages (labels by id or name); ``internal_date`` (ms) for the first one, +1 s for each next."""
        ids = []
        with self._lock:
            box = self.mailbox(address)
            label_ids = []
            for ref in labels:
                label = box.label(ref)
                if label is None:
                    raise KeyError(f"no label {ref!r} in {address}")
                label_ids.append(label.id)
            for i, raw in enumerate(mimes):
                n = next(self._ids)
                mid = f"{0x18f3a00000000000 + (n << 12) + self._rng.randrange(4096):016x}"
                if internal_date is not None:
                    date = internal_date + 1000 * i
                else:
                    date = max(int(time.time() * 1000), box.last_date + 1)
                    box.last_date = date
                message = Message(mid, self._thread_for(box, raw, mid), bytes(raw), list(label_ids), date)
                box.messages[mid] = message
                self._record(box, message, messagesAdded=True)
                ids.append(mid)
            watch = box.watch
            if ids and watch and watch["expiration"] > time.time() * 1000 and (
                    not watch["labelIds"] or set(watch["labelIds"]) & set(label_ids)):
                self._publish(watch["topicName"], {"emailAddress": box.address, "historyId": box.history_id})
        return ids

    def remove(self, address: str, message_id: str) -> None:
        """Delete a message for good, as another client would (a messagesDeleted history record)."""
        with self._lock:
            box = self.mailbox(address)
            message = box.messages.pop(message_id, None)
            if message is not None:
                self._record(box, message, messagesDeleted=True)

    def expire_history(self, address: str) -> None:
        """Forget the history: history.list with a start before the current historyId answers 404."""
        with self._lock:
            box = self.mailbox(address)
            box.history.clear()
            box.history_floor = box.history_id

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working: the next API call answers 401 (clients refresh)."""
        with self._lock:
            self.tokens.clear()

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self.batch_sizes.clear()
            self.over_quota = self.throttled = 0
            self.max_units_per_second.clear()
            self.max_concurrent.clear()

    def _thread_for(self, box: Mailbox, raw: bytes, mid: str) -> str:
        headers = email.parser.BytesHeaderParser().parsebytes(raw)
        refs = " ".join(str(headers.get(h, "")) for h in ("References", "In-Reply-To"))
        thread = next((box.threads_by_message_id[r] for r in re.findall(r"<[^>]+>", refs)[::-1]
                       if r in box.threads_by_message_id), mid)
        own = re.findall(r"<[^>]+>", str(headers.get("Message-ID", "")))
        if own:
            box.threads_by_message_id.setdefault(own[0], thread)
        return thread

    def _record(self, box: Mailbox, message: Message, **changes) -> None:
        """A history record: bumps the mailbox's historyId (with gaps, as Gmail's are not contiguous)."""
        box.history_id += self._rng.randint(1, 5)
        message.history_id = box.history_id
        record: dict = {"id": box.history_id, "messages": [message.ref(labels=False)]}
        if changes.get("messagesAdded"):
            record["messagesAdded"] = [{"message": message.ref()}]
        if changes.get("messagesDeleted"):
            record["messagesDeleted"] = [{"message": message.ref()}]
        for kind in ("labelsAdded", "labelsRemoved"):
            if changes.get(kind):
                record[kind] = [{"message": message.ref(), "labelIds": list(changes[kind])}]
        box.history.append(record)

    def _change_labels(self, box: Mailbox, message: Message, add: list[str], remove: list[str]) -> None:
        added = [lb for lb in dict.fromkeys(add) if lb not in message.label_ids and lb not in remove]
        removed = [lb for lb in dict.fromkeys(remove) if lb in message.label_ids]
        if not added and not removed:
            return
        message.label_ids = [lb for lb in message.label_ids if lb not in removed] + added
        self._record(box, message, labelsAdded=added, labelsRemoved=removed)

    # -- server -----------------------------------------------------------------------------------
    def start(self) -> GmailEmulator:
        emulator = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                emulator._tunnel(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the CA directory."""
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def set_outage(self, down: bool) -> None:
        """Google unreachable (``down``): the open tunnels break and new ones are refused (502); or reachable again."""
        self.outage = down
        if down:
            self.cut_connections()

    def cut_connections(self) -> int:
        """Break every open tunnel (a Pub/Sub pull waiting, kept-alive API connections), as a dropped network
        connection does; returns how many."""
        cut = 0
        for sock in list(self._tunnels):
            try:
                sock.shutdown(socket.SHUT_RDWR)
                cut += 1
            except OSError:
                pass
        return cut

    def environ(self) -> dict[str, str]:
        """What a client process needs to reach the emulator instead of Google. httplib2 reads
        HTTPLIB2_CA_CERTS once, when first imported: set it before, or use a separate process."""
        proxy = f"http://127.0.0.1:{self.port}"
        return {"HTTPS_PROXY": proxy, "https_proxy": proxy, "HTTPLIB2_CA_CERTS": str(self.ca_file),
                "REQUESTS_CA_BUNDLE": str(self.ca_file)}

    def _tunnel(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = sock.makefile("rb")
        request_line = f.readline().decode("latin-1").split()
        while f.readline() not in (b"\r\n", b"\n", b""):
            pass
        if len(request_line) < 2 or request_line[0] != "CONNECT":
            sock.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        host = request_line[1].rsplit(":", 1)[0].lower()
        if request_line[1].lower() not in {f"{h}:443" for h in HOSTS}:
            sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        if self.outage:
            sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        # One write: PySocks reads the status line through a buffered file and drops what follows it.
        sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            tls = self.server_ctx.wrap_socket(sock, server_side=True)  # sock is detached from its descriptor
        except (ssl.SSLError, OSError):
            return
        self._tunnels.add(tls)
        reader = tls.makefile("rb")
        try:
            while True:
                line = reader.readline()
                if not line.strip():
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    h = reader.readline()
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
                status, out_headers, payload, drop = self._dispatch(host, method, target, headers, body)
                head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Length: {len(payload)}"]
                head += [f"{k}: {v}" for k, v in out_headers.items()]
                data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
                if drop:  # the headers and half the body, then the connection breaks
                    tls.sendall(data + payload[:len(payload) // 2])
                    try:
                        tls.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                tls.sendall(data + payload)  # one write
        except (OSError, ValueError, ssl.SSLError):
            return
        finally:
            self._tunnels.discard(tls)
            try:
                tls.close()
            except OSError:
                pass

    # -- dispatch ---------------------------------------------------------------------------------
    def _dispatch(self, host: str, method: str, target: str, headers: dict, body: bytes):
        url = urlsplit(target)
        path = url.path
        if method == "POST" and path in ("/token", "/oauth2/v4/token", "/o/oauth2/token") and host in (OAUTH, WWW):
            status, out_headers, payload = self._token(body)
            return status, out_headers, payload, False
        if method == "GET" and (path == "/discovery/v1/apis/gmail/v1/rest" or path == "/$discovery/rest"):
            return (*self._discovery(), False)
        if host == OAUTH:
            return (*_oauth_answer(OAuthError(404, "invalid_request", f"Unknown endpoint {path}")), False)
        if host == PUBSUB:
            self.requests.append((method, path))
            return (*self._pubsub_call(method, path, headers, body), False)
        self.requests.append((method, path))
        drop = False
        with self._lock:
            if self.drop_connection_after is not None:
                if self.drop_connection_after <= 0:
                    drop, self.drop_connection_after = True, None
                else:
                    self.drop_connection_after -= 1
        if method == "POST" and path in ("/batch", "/batch/gmail/v1"):
            return (*self._batch(headers, body), drop)
        keys = {self._mailbox_key(path, headers)}
        return (*self._in_flight(keys, lambda: self._call(method, target, headers, body)), drop)

    def _in_flight(self, keys: set[str], work):
        with self._lock:
            for key in keys:
                self._concurrent[key] = self._concurrent.get(key, 0) + 1
                self.max_concurrent[key] = max(self.max_concurrent.get(key, 0), self._concurrent[key])
        try:
            if self.latency:
                time.sleep(self.latency)
            return work()
        finally:
            with self._lock:
                for key in keys:
                    self._concurrent[key] -= 1

    def _mailbox_key(self, path: str, headers: dict) -> str:
        parts = path.split("/")
        user = unquote(parts[4]) if len(parts) > 4 and parts[1:4] == ["gmail", "v1", "users"] else "?"
        if user == "me":
            grant = self._grant(headers)
            user = (grant or {}).get("subject") or "?"
        return user.lower()

    def _discovery(self):
        try:
            import googleapiclient.discovery_cache as cache
            doc = (Path(cache.__file__).parent / "documents" / "gmail.v1.json").read_bytes()
        except (ImportError, OSError):
            return _json_answer(GmailError(404, "Discovery document not bundled here.", "notFound", "NOT_FOUND"))
        return 200, {"Content-Type": "application/json; charset=UTF-8"}, doc

    # -- OAuth 2.0 token endpoint -----------------------------------------------------------------
    def _token(self, body: bytes):
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(body.decode("latin-1")).items()}
        try:
            return self._jwt_grant(form)
        except OAuthError as e:
            return _oauth_answer(e)

    def _jwt_grant(self, form: dict):
        grant_type = form.get("grant_type", "")
        if grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            raise OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        try:
            head_b64, claims_b64, sig_b64 = form.get("assertion", "").split(".")
            header = json.loads(_b64url_decode(head_b64))
            claims = json.loads(_b64url_decode(claims_b64))
            signature = _b64url_decode(sig_b64)
        except (ValueError, TypeError):
            raise OAuthError(400, "invalid_grant", "Invalid JWT: Malformed token.") from None
        account = self.accounts.get(str(claims.get("iss", "")))
        if account is None:
            raise OAuthError(400, "invalid_grant", "Invalid grant: account not found")
        key = account.keys.get(str(header.get("kid", "")))
        if header.get("alg") != "RS256" or key is None:
            raise OAuthError(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            key.verify(signature, f"{head_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise OAuthError(400, "invalid_grant", "Invalid JWT Signature.") from None
        if claims.get("aud") not in TOKEN_AUDIENCES:
            raise OAuthError(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not (isinstance(iat, (int, float)) and isinstance(exp, (int, float)) and iat - 300 <= now < exp
                and 0 < exp - iat <= 3600):
            raise OAuthError(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and "
                             "in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
        scopes = set(str(claims.get("scope", "")).split())
        if not scopes:
            raise OAuthError(400, "invalid_scope", "Empty or missing scope not allowed.")
        subject = claims.get("sub")
        if subject is not None:
            if str(subject).lower() not in self.mailboxes:
                raise OAuthError(400, "invalid_grant", "Invalid email or User ID")
            if not scopes <= self.delegations.get(account.client_id, set()):
                raise OAuthError(401, "unauthorized_client", "Client is unauthorized to retrieve access tokens "
                                 "using this method, or client not authorized for any of the scopes requested.")
            subject = self.mailboxes[str(subject).lower()].address
        token = "ya29." + secrets.token_urlsafe(48)
        with self._lock:
            self.tokens[token] = {"account": account, "subject": subject, "scopes": scopes,
                                  "expiry": now + self.token_lifetime}
        return 200, {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-cache, no-store"}, \
            json.dumps({"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}).encode()

    def _grant(self, headers: dict) -> dict | None:
        auth = headers.get("authorization", "")
        grant = self.tokens.get(auth[7:].strip()) if auth[:7].lower() == "bearer " else None
        return grant if grant and grant["expiry"] > time.time() else None

    # -- Gmail API calls --------------------------------------------------------------------------
    def _call(self, method: str, target: str, headers: dict, body: bytes, batch_part: bool = False):
        url = urlsplit(target)
        if batch_part:
            self.requests.append((method, url.path))
        query = parse_qs(url.query)
        try:
            with self._lock:
                forced = self.fail_next.pop(0) if self.fail_next else None
            if forced is not None:
                status, payload = forced[0], forced[1]
                extra = forced[2] if len(forced) > 2 else {}
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    payload = payload.encode()
                return status, {"Content-Type": "application/json; charset=UTF-8", **extra}, payload
            op, user, args = self._route(method, url.path)
            grant = self._grant(headers)
            if grant is None:
                raise GmailError(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                 "token, login cookie or other valid authentication credential. See https://"
                                 "developers.google.com/identity/sign-in/web/devconsole-project.", "authError",
                                 "UNAUTHENTICATED", item_message="Invalid Credentials", location="Authorization",
                                 locationType="header",
                                 headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                                                              'error="invalid_token"'})
            if self.api_disabled:
                raise _service_disabled(grant["account"].project_number)
            if grant["subject"] is None:
                raise GmailError(400, "Precondition check failed.", "failedPrecondition", "FAILED_PRECONDITION")
            if user != "me" and user.lower() != grant["subject"].lower():
                raise GmailError(403, f"Delegation denied for {grant['subject']}", "forbidden", "PERMISSION_DENIED")
            units, allowed, rpc = OPERATIONS[op]
            granted = grant["scopes"] & allowed
            if not granted:
                raise GmailError(403, "Request had insufficient authentication scopes.", "insufficientPermissions",
                                 "PERMISSION_DENIED", item_message="Insufficient Permission", details=[{
                                     "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                     "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "domain": "googleapis.com",
                                     "metadata": {"service": "gmail.googleapis.com",
                                                  "method": f"caribou.api.proto.MailboxService.{rpc}"}}],
                                 headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                                          f'error="insufficient_scope", scope="{" ".join(sorted(allowed))}"'})
            metadata_only = granted == {SCOPE_METADATA}
            box = self.mailboxes[grant["subject"].lower()]
            if self.throttle and self._rng.random() < self.throttle:
                self.throttled += 1
                self._throttle_flip = not self._throttle_flip
                raise _rate_limited(forbidden=not self._throttle_flip)
            self._take_quota(box, units)
            with self._lock:
                return self._operate(op, box, args, query, body, metadata_only)
        except GmailError as e:
            return _json_answer(e)

    # -- Cloud Pub/Sub (pull subscriptions: pull, acknowledge) ---------------------------------------------
    def _pubsub_call(self, method: str, path: str, headers: dict, body: bytes):
        def error(code: int, status: str, message: str):
            return code, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(
                {"error": {"code": code, "message": message, "status": status}}).encode()

        grant = self._grant(headers)
        if grant is None:
            return error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if grant["subject"] is not None or not grant["scopes"] & {SCOPE_PUBSUB, SCOPE_CLOUD}:
            return error(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes.")
        name, _, verb = path.removeprefix("/v1/").partition(":")
        sub = self.pubsub.get(name)
        if method != "POST" or verb not in ("pull", "acknowledge"):
            return error(404, "NOT_FOUND", f"Unknown method {method} {path}")
        if sub is None:
            return error(404, "NOT_FOUND", f"Resource not found (resource={name.rsplit('/', 1)[-1]}).")
        data = json.loads(body or b"{}")
        if verb == "acknowledge":
            with self._lock:
                for ack in data.get("ackIds", []):
                    sub["outstanding"].pop(ack, None)
            return 200, {"Content-Type": "application/json"}, b"{}"
        deadline = time.monotonic() + (0 if data.get("returnImmediately") else self.pull_wait)
        while True:
            with self._lock:
                now = time.monotonic()
                for ack, (due, message) in list(sub["outstanding"].items()):  # not acknowledged in time: again
                    if due < now:
                        del sub["outstanding"][ack]
                        sub["queue"].append(message)
                received = []
                while sub["queue"] and len(received) < int(data.get("maxMessages", 1)):
                    message = sub["queue"].popleft()
                    ack = secrets.token_urlsafe(16)
                    sub["outstanding"][ack] = (now + 10, message)
                    received.append({"ackId": ack, "message": message})
            if received or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"receivedMessages": received} if received else {}).encode()

    def _take_quota(self, box: Mailbox, units: int) -> None:
        with self._lock:
            now = time.monotonic()
            if self.quota_per_second is not None:
                box.bucket = min(self.quota_burst, box.bucket + (now - box.bucket_time) * self.quota_per_second)
                box.bucket_time = now
                if box.bucket < units:
                    self.over_quota += 1
                    raise _rate_limited()
                box.bucket -= units
            box.accepted.append((now, units))
            box.accepted_units += units
            while box.accepted and box.accepted[0][0] <= now - 1.0:
                box.accepted_units -= box.accepted.popleft()[1]
            key = box.address.lower()
            self.max_units_per_second[key] = max(self.max_units_per_second.get(key, 0), box.accepted_units)

    def _route(self, method: str, path: str) -> tuple[str, str, list[str]]:
        parts = [unquote(p) for p in path.split("/")]
        if parts[1:4] != ["gmail", "v1", "users"] or len(parts) < 6:
            raise _not_found()
        user, rest = parts[4], parts[5:]
        routes = {
            ("GET", "profile"): "users.getProfile",
            ("GET", "labels"): "users.labels.list",
            ("POST", "labels"): "users.labels.create",
            ("GET", "labels/*"): "users.labels.get",
            ("DELETE", "labels/*"): "users.labels.delete",
            ("GET", "messages"): "users.messages.list",
            ("POST", "messages/batchModify"): "users.messages.batchModify",
            ("POST", "messages/batchDelete"): "users.messages.batchDelete",
            ("GET", "messages/*"): "users.messages.get",
            ("DELETE", "messages/*"): "users.messages.delete",
            ("POST", "messages/*/modify"): "users.messages.modify",
            ("POST", "messages/*/trash"): "users.messages.trash",
            ("POST", "messages/*/untrash"): "users.messages.untrash",
            ("GET", "messages/*/attachments/*"): "users.messages.attachments.get",
            ("GET", "history"): "users.history.list",
            ("POST", "watch"): "users.watch",
            ("POST", "stop"): "users.stop",
        }
        exact = routes.get((method, "/".join(rest)))
        if exact:
            return exact, user, []
        pattern = "/".join("*" if i % 2 else p for i, p in enumerate(rest))
        op = routes.get((method, pattern))
        if op is None:
            raise _not_found()
        return op, user, rest[1::2]

    def _operate(self, op: str, box: Mailbox, args: list[str], query: dict, body: bytes, metadata_only: bool):
        one = {k: v[0] for k, v in query.items()}
        data = json.loads(body or b"{}") if op.endswith(("create", "modify", "batchModify", "batchDelete", "watch")) \
            else {}
        if op == "users.watch":
            topic = str(data.get("topicName", ""))
            if not re.fullmatch(r"projects/[^/]+/topics/[^/]+", topic):
                raise _invalid("Invalid topicName does not match projects/{project}/topics/*")
            if topic not in self.topics:
                raise GmailError(404, f"Resource not found (resource={topic.rsplit('/', 1)[-1]}).", "notFound",
                                 "NOT_FOUND")
            if GMAIL_PUBLISHER not in self.topics[topic]["publishers"]:
                raise GmailError(403, f"Error sending test message to Cloud PubSub {topic} : User not authorized to "
                                 "perform this action.", "forbidden", "PERMISSION_DENIED")
            label_ids = [self._label_refs(box, [ref])[0] for ref in data.get("labelIds", [])]
            box.watch = {"topicName": topic, "labelIds": label_ids, "expiration": (time.time() + 7 * 86400) * 1000}
            self.watch_calls.append(box.address)
            out = {"historyId": str(box.history_id), "expiration": str(int(box.watch["expiration"]))}
            return 200, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(out).encode()
        if op == "users.stop":
            box.watch = None
            return 204, {}, b""
        if op == "users.getProfile":
            out = {"emailAddress": box.address, "messagesTotal": len(box.messages),
                   "threadsTotal": len({m.thread_id for m in box.messages.values()}),
                   "historyId": str(box.history_id)}
        elif op == "users.labels.list":
            out = {"labels": [lb.resource() for lb in box.labels.values()]}
        elif op == "users.labels.get":
            out = self._label_resource(box, args[0])
        elif op == "users.labels.create":
            name = str(data.get("name", "")).strip()
            if not name:
                raise _invalid("Invalid label name")
            if box.label(name) is not None:
                raise GmailError(409, "Label name exists or conflicts", "duplicate", "ALREADY_EXISTS")
            label = Label(f"Label_{next(self._label_ids)}", name, "user", data.get("messageListVisibility", "show"),
                          data.get("labelListVisibility", "labelShow"), data.get("color"))
            box.labels[label.id] = label
            out = label.resource()
        elif op == "users.labels.delete":
            label = box.labels.get(args[0])
            if label is None:
                raise _not_found()
            if label.type == "system":
                raise _invalid("Invalid delete request")
            for message in list(box.messages.values()):
                self._change_labels(box, message, [], [label.id])
            del box.labels[label.id]
            return 204, {}, b""
        elif op == "users.messages.list":
            if metadata_only and one.get("q"):
                raise GmailError(403, "Metadata scope does not support 'q' parameter", "forbidden",
                                 "PERMISSION_DENIED")
            out = self._list(box, query, one)
        elif op == "users.messages.get":
            fmt = one.get("format", "full").lower()
            if fmt not in ("minimal", "full", "raw", "metadata"):
                raise _invalid(f"Invalid value at 'format' ({fmt})")
            if metadata_only and fmt in ("full", "raw"):
                raise GmailError(403, f"Metadata scope doesn't allow format {fmt.upper()}", "forbidden",
                                 "PERMISSION_DENIED")
            out = self._message_resource(box, self._message(box, args[0]), fmt, query.get("metadataHeaders", []))
        elif op == "users.messages.attachments.get":
            message = self._message(box, args[0])
            found = self._attachments.get(args[1])
            if found is None or found[:2] != (box.address.lower(), message.id):
                raise _invalid("Invalid attachment token")
            part = _find_part(email.message_from_bytes(message.raw), found[2])
            content = (part.get_payload(decode=True) if part is not None else b"") or b""
            out = {"attachmentId": args[1], "size": len(content), "data": _b64(content)}
        elif op == "users.history.list":
            out = self._history(box, query, one)
        elif op == "users.messages.modify":
            message = self._message(box, args[0])
            add, remove = self._label_refs(box, data.get("addLabelIds")), self._label_refs(box, data.get("removeLabelIds"))
            self._change_labels(box, message, add, remove)
            out = message.ref()
        elif op == "users.messages.batchModify":
            ids = list(data.get("ids") or [])
            if len(ids) > 1000:
                raise _invalid("Too many ids specified (max 1000)")
            add, remove = self._label_refs(box, data.get("addLabelIds")), self._label_refs(box, data.get("removeLabelIds"))
            for mid in ids:
                if mid in box.messages:
                    self._change_labels(box, box.messages[mid], add, remove)
            return 204, {}, b""
        elif op in ("users.messages.trash", "users.messages.untrash"):
            message = self._message(box, args[0])
            if op.endswith(".trash"):
                self._change_labels(box, message, ["TRASH"], ["INBOX"])
            else:
                self._change_labels(box, message, [], ["TRASH"])
            out = message.ref()
        elif op == "users.messages.delete":
            message = self._message(box, args[0])
            del box.messages[message.id]
            self._record(box, message, messagesDeleted=True)
            return 204, {}, b""
        elif op == "users.messages.batchDelete":
            ids = list(data.get("ids") or [])
            if len(ids) > 1000:
                raise _invalid("Too many ids specified (max 1000)")
            for mid in ids:
                message = box.messages.pop(mid, None)
                if message is not None:
                    self._record(box, message, messagesDeleted=True)
            return 204, {}, b""
        else:  # pragma: no cover - _route knows no other operation
            raise _not_found()
        if one.get("fields"):
            out = _select_fields(out, one["fields"])
        return 200, {"Content-Type": "application/json; charset=UTF-8", "Vary": "Origin, X-Origin, Referer"}, \
            json.dumps(out, indent=2).encode()

    def _message(self, box: Mailbox, mid: str) -> Message:
        if not re.fullmatch(r"[0-9a-fA-F]{1,16}", mid or ""):
            raise _invalid("Invalid id value")
        message = box.messages.get(mid.lower())
        if message is None:
            raise _not_found()
        return message

    def _label_refs(self, box: Mailbox, refs) -> list[str]:
        out = []
        for ref in refs or []:
            if ref not in box.labels:
                raise _invalid(f"Invalid label: {ref}")
            out.append(ref)
        return out

    def _label_resource(self, box: Mailbox, label_id: str) -> dict:
        label = box.labels.get(label_id)
        if label is None:
            raise _not_found()
        members = [m for m in box.messages.values() if label.id in m.label_ids]
        unread = [m for m in members if "UNREAD" in m.label_ids]
        return {**label.resource(), "messagesTotal": len(members), "messagesUnread": len(unread),
                "threadsTotal": len({m.thread_id for m in members}),
                "threadsUnread": len({m.thread_id for m in unread})}

    def _message_resource(self, box: Mailbox, message: Message, fmt: str, metadata_headers: list[str]) -> dict:
        parsed = email.message_from_bytes(message.raw)
        out = message.ref()
        out.update({"snippet": _snippet(parsed), "sizeEstimate": len(message.raw),
                    "historyId": str(message.history_id), "internalDate": str(message.internal_date)})
        if fmt == "raw":
            out["raw"] = _b64(message.raw)
        elif fmt == "metadata":
            wanted = {h.lower() for h in metadata_headers}
            out["payload"] = {"partId": "", "mimeType": parsed.get_content_type(), "filename": "",
                              "headers": [h for h in _headers(parsed) if not wanted or h["name"].lower() in wanted],
                              "body": {"size": 0}}
        elif fmt == "full":
            out["payload"] = self._part_resource(box, message, parsed, "")
        return out

    def _part_resource(self, box: Mailbox, message: Message, part: EmailMessage, part_id: str) -> dict:
        filename = _decode(part.get_filename() or "")
        out = {"partId": part_id, "mimeType": part.get_content_type(), "filename": filename,
               "headers": _headers(part)}
        if part.is_multipart():
            out["body"] = {"size": 0}
            children = part.get_payload()
            out["parts"] = [self._part_resource(box, message, child, f"{part_id}.{i}" if part_id else str(i))
                            for i, child in enumerate(children)]
        else:
            content = part.get_payload(decode=True) or b""
            out["body"] = {"size": len(content)}
            if filename:
                attachment_id = "ANGjdJ" + _b64(f"{message.id}:{part_id}:{secrets.token_hex(8)}".encode()).rstrip("=")
                self._attachments[attachment_id] = (box.address.lower(), message.id, part_id)
                out["body"]["attachmentId"] = attachment_id
            elif content:
                out["body"]["data"] = _b64(content)
        return out

    def _list(self, box: Mailbox, query: dict, one: dict) -> dict:
        max_results = self._max_results(one)
        label_ids = query.get("labelIds", [])
        for ref in label_ids:
            if ref not in box.labels:
                raise _invalid(f"Invalid label: {ref}")
        q = one.get("q", "")
        mentioned = {lb.upper() for lb in label_ids} | {t.split(":", 1)[1].upper() for t in q.lower().split()
                                                        if t.startswith(("in:", "label:"))}
        spam_trash = one.get("includeSpamTrash", "false").lower() == "true" or mentioned & {"SPAM", "TRASH",
                                                                                          "ANYWHERE"}
        matches = [m for m in box.messages.values()
                   if all(lb in m.label_ids for lb in label_ids)
                   and (spam_trash or not {"SPAM", "TRASH"} & set(m.label_ids))
                   and _matches(box, m, q)]
        matches.sort(key=lambda m: (m.internal_date, m.id), reverse=True)
        total = len(matches)
        if one.get("pageToken"):
            token = one["pageToken"]
            if not re.fullmatch(r"\d{33}", token):
                raise _invalid("Invalid pageToken")
            cursor = (int(token[:13]), f"{int(token[13:]):016x}")
            matches = [m for m in matches if (m.internal_date, m.id) < cursor]
        page = matches[:max_results]
        out: dict = {}
        if page:
            out["messages"] = [m.ref(labels=False) for m in page]
        if len(matches) > len(page):
            last = page[-1]
            out["nextPageToken"] = f"{last.internal_date:013d}{int(last.id, 16):020d}"
        out["resultSizeEstimate"] = total
        return out

    def _max_results(self, one: dict) -> int:
        try:
            n = int(one.get("maxResults", 100))
        except ValueError:
            raise _invalid(f"Invalid value at 'max_results' ({one.get('maxResults')})") from None
        if n < 0:
            raise _invalid(f"Invalid value at 'max_results' ({n})")
        return min(n or 100, 500)

    def _history(self, box: Mailbox, query: dict, one: dict) -> dict:
        try:
            start = int(one.get("startHistoryId", ""))
        except ValueError:
            raise _invalid("Invalid startHistoryId") from None
        if start < box.history_floor:
            raise _not_found()
        max_results = self._max_results(one)
        after = start
        if one.get("pageToken"):
            if not one["pageToken"].isdigit():
                raise _invalid("Invalid pageToken")
            after = max(start, int(one["pageToken"]))
        kinds = [HISTORY_TYPES[t] for t in query.get("historyTypes", []) if t in HISTORY_TYPES]
        label_id = one.get("labelId")
        records = []
        for record in box.history:
            if record["id"] <= after:
                continue
            if label_id and not any(label_id in e["message"].get("labelIds", []) or label_id in e.get("labelIds", [])
                                    for k in HISTORY_TYPES.values() for e in record.get(k, [])):
                continue
            if kinds:
                record = {k: v for k, v in record.items() if k in ("id", "messages") or k in kinds}
                if len(record) == 2:
                    continue
            records.append(record)
        page = records[:max_results]
        out: dict = {}
        if page:
            out["history"] = [{**r, "id": str(r["id"])} for r in page]
        if len(records) > len(page):
            out["nextPageToken"] = f"{page[-1]['id']:020d}"
        out["historyId"] = str(box.history_id)
        return out

    # -- the batch endpoint -----------------------------------------------------------------------
    def _batch(self, headers: dict, body: bytes):
        ctype = EmailMessage()
        ctype["Content-Type"] = headers.get("content-type", "")
        boundary = ctype.get_param("boundary")
        if ctype.get_content_type() != "multipart/mixed" or not boundary:
            return _json_answer(_invalid("Batch requests must be multipart/mixed with a boundary."))
        parts = []
        for chunk in body.split(b"--" + boundary.encode())[1:]:
            if chunk.startswith(b"--"):
                break
            parts.append(_split_head(chunk.lstrip(b"\r\n")))
        self.batch_sizes.append(len(parts))
        if len(parts) > self.max_batch_parts:
            return _json_answer(_invalid(f"Too many requests in batch: {len(parts)}, at most "
                                         f"{self.max_batch_parts} allowed."))
        outer = {k: v for k, v in headers.items() if not k.startswith("content-") and k not in ("host",)}
        calls = []
        for part_headers, inner in parts:
            request_line, _, rest = inner.partition(b"\n")
            fields = request_line.decode("latin-1").strip().split(" ")
            call_headers, call_body = _split_head(rest)
            merged = {**outer, **call_headers}
            if "content-length" in call_headers:
                call_body = call_body[:int(call_headers["content-length"])]
            else:
                call_body = call_body.rstrip(b"\r\n")
            calls.append((part_headers.get("content-id", ""), fields, merged, call_body))
        keys = {self._mailbox_key(urlsplit(f[1]).path, h) for _, f, h, _ in calls if len(f) >= 2}

        def run():
            answers = []
            for content_id, fields, merged, call_body in calls:
                if len(fields) < 2:
                    answers.append((content_id, _json_answer(_invalid("Malformed request line in batch part."))))
                    continue
                answers.append((content_id, self._call(fields[0], fields[1], merged, call_body, batch_part=True)))
            return answers

        answers = self._in_flight(keys, run)
        boundary_out = "batch_" + secrets.token_urlsafe(12)
        out = b""
        for content_id, (status, part_headers, payload) in answers:
            head = ["Content-Type: application/http"]
            if content_id:
                cid = content_id.strip()
                head.append(f"Content-ID: <response-{cid[1:-1] if cid.startswith('<') else cid}>")
            inner_head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
            inner_head += [f"{k}: {v}" for k, v in part_headers.items()] or ["Content-Length: 0"]
            if part_headers:
                inner_head.append(f"Content-Length: {len(payload)}")
            out += (f"--{boundary_out}\r\n" + "\r\n".join(head) + "\r\n\r\n" + "\r\n".join(inner_head)
                    + "\r\n\r\n").encode("latin-1") + payload + b"\r\n"
        out += f"--{boundary_out}--\r\n".encode()
        return 200, {"Content-Type": f"multipart/mixed; boundary={boundary_out}", "Vary": "Origin"}, out


# -- helpers --------------------------------------------------------------------------------------

_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _json_answer(e: GmailError):
    return e.code, {"Content-Type": "application/json; charset=UTF-8", "Vary": "Origin, X-Origin, Referer",
                    **e.headers}, json.dumps(e.body(), indent=2).encode()


def _oauth_answer(e: OAuthError):
    return e.status, {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-cache, no-store"}, \
        json.dumps({"error": e.error, "error_description": e.description}, indent=2).encode()


def _service_disabled(project: str) -> GmailError:
    url = f"https://console.developers.google.com/apis/api/gmail.googleapis.com/overview?project={project}"
    message = (f"Gmail API has not been used in project {project} before or it is disabled. Enable it by visiting "
               f"{url} then retry. If you enabled this API recently, wait a few minutes for the action to "
               "propagate to our systems and retry.")
    return GmailError(403, message, "accessNotConfigured", "PERMISSION_DENIED", domain="usageLimits",
                      extendedHelp="https://console.developers.google.com", details=[
                          {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
                           "domain": "googleapis.com",
                           "metadata": {"service": "gmail.googleapis.com", "consumer": f"projects/{project}",
                                        "activationUrl": url, "containerInfo": project,
                                        "serviceTitle": "Gmail API"}},
                          {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                           "message": message},
                          {"@type": "type.googleapis.com/google.rpc.Help", "links": [
                              {"description": "Google developers console API activation", "url": url}]}])


def _rate_limited(forbidden: bool = False) -> GmailError:
    if forbidden:
        return GmailError(403, "User Rate Limit Exceeded", "userRateLimitExceeded", "PERMISSION_DENIED",
                          domain="usageLimits")
    retry = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1))
    return GmailError(429, f"User-rate limit exceeded. Retry after {retry.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z",
                      "rateLimitExceeded", "RESOURCE_EXHAUSTED", domain="usageLimits")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _split_head(data: bytes) -> tuple[dict, bytes]:
    """Headers (lower-case names) of an HTTP/MIME head ending in an empty line, and what follows it."""
    headers: dict = {}
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        line = line.rstrip(b"\r")
        if not line:
            return headers, b"\n".join(lines[i + 1:])
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, b""


def _decode(value) -> str:
    try:
        return str(make_header(decode_header(str(value))))
    except (ValueError, LookupError, UnicodeDecodeError):
        return str(value)


def _headers(part: EmailMessage) -> list[dict]:
    return [{"name": k, "value": _decode(re.sub(r"\r?\n[ \t]", " ", str(v)))} for k, v in part.items()]


def _snippet(parsed: EmailMessage) -> str:
    text = ""
    for part in parsed.walk():
        if part.get_content_type() in ("text/plain", "text/html") and not part.get_filename():
            content = part.get_payload(decode=True) or b""
            try:
                text = content.decode(part.get_content_charset() or "utf-8")
            except (LookupError, UnicodeDecodeError):
                text = content.decode("latin-1")
            if part.get_content_type() == "text/html":
                text = re.sub(r"<[^>]*>", " ", text)
            break
    text = " ".join(text.split())[:200]
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#39;")):
        text = text.replace(char, entity)
    return text


def _find_part(parsed: EmailMessage, part_id: str) -> EmailMessage | None:
    part = parsed
    for index in filter(None, part_id.split(".")):
        children = part.get_payload() if part.is_multipart() else []
        if int(index) >= len(children):
            return None
        part = children[int(index)]
    return part


def _select_fields(data, selector: str):
    """Partial responses: ``fields=messages(id,threadId),nextPageToken``."""
    def parse(text: str, i: int) -> tuple[dict, int]:
        tree: dict = {}
        name = ""
        while i < len(text):
            c = text[i]
            if c == "(":
                sub, i = parse(text, i + 1)
                _put(tree, name.strip(), sub)
                name = ""
            elif c == ")":
                break
            elif c == ",":
                if name.strip():
                    _put(tree, name.strip(), None)
                name = ""
            else:
                name += c
            i += 1
        if name.strip():
            _put(tree, name.strip(), None)
        return tree, i

    def _put(tree: dict, path: str, sub) -> None:
        *heads, last = path.split("/")
        for head in heads:
            tree = tree.setdefault(head, {}) or {}
        tree[last] = sub

    def apply(value, tree):
        if tree is None:
            return value
        if isinstance(value, list):
            return [apply(v, tree) for v in value]
        if isinstance(value, dict):
            return {k: apply(value[k], sub) for k, sub in tree.items() if k in value}
        return value

    return apply(data, parse(selector, 0)[0])


def _matches(box: Mailbox, message: Message, q: str) -> bool:
    """A subset of Gmail's search operators: is:, in:, label:, from:, to:, subject:, after:, before:,
    newer_than:, older_than:, larger:, smaller:, has:attachment, rfc822msgid:, words; "-" negates."""
    if not q.strip():
        return True
    labels = set(message.label_ids)
    parsed = None

    def headers() -> EmailMessage:
        nonlocal parsed
        if parsed is None:
            parsed = email.message_from_bytes(message.raw)
        return parsed

    def label_named(name: str) -> str | None:
        name = name.lower()
        for lb in box.labels.values():
            if name in (lb.id.lower(), lb.name.lower(), lb.name.lower().replace("/", "-").replace(" ", "-")):
                return lb.id
        return None

    def date_ms(value: str) -> int | None:
        if value.isdigit():
            return int(value) * 1000
        try:
            day = datetime.datetime.strptime(value.replace("-", "/"), "%Y/%m/%d")
        except ValueError:
            return None
        return int(day.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)

    def size(value: str) -> int:
        factor = {"k": 1024, "m": 1024 * 1024}.get(value[-1:].lower(), 1)
        return int(value.rstrip("kKmM") or 0) * factor

    def term_ok(term: str) -> bool:
        key, sep, value = term.partition(":")
        key, value = key.lower(), value.strip('"')
        if sep and key == "is":
            flag = {"unread": "UNREAD", "starred": "STARRED", "important": "IMPORTANT"}.get(value.lower())
            if value.lower() == "read":
                return "UNREAD" not in labels
            return flag in labels if flag else False
        if sep and key in ("in", "label"):
            if value.lower() == "anywhere":
                return True
            if value.lower() == "drafts":
                value = "DRAFT"
            found = label_named(value)
            return found in labels if found else False
        if sep and key in ("from", "to", "cc", "subject"):
            return value.lower() in _decode(headers().get(key, "")).lower()
        if sep and key == "rfc822msgid":
            return value.strip("<>").lower() in str(headers().get("Message-ID", "")).lower()
        if sep and key == "has":
            return value.lower() == "attachment" and any(p.get_filename() for p in headers().walk())
        if sep and key in ("after", "before"):
            limit = date_ms(value)
            if limit is None:
                return False
            return message.internal_date >= limit if key == "after" else message.internal_date < limit
        if sep and key in ("newer_than", "older_than"):
            m = re.fullmatch(r"(\d+)([dmy])", value.lower())
            if not m:
                return False
            days = int(m.group(1)) * {"d": 1, "m": 30, "y": 365}[m.group(2)]
            limit = int((time.time() - days * 86400) * 1000)
            return message.internal_date >= limit if key == "newer_than" else message.internal_date < limit
        if sep and key in ("larger", "smaller"):
            return len(message.raw) > size(value) if key == "larger" else len(message.raw) < size(value)
        return term.strip('"').lower().encode("utf-8") in message.raw.lower()

    for term in re.findall(r'-?(?:[^\s"]+:)?"[^"]*"|\S+', q):
        negate = term.startswith("-") and len(term) > 1
        if term_ok(term[1:] if negate else term) == negate:
            return False
    return True

