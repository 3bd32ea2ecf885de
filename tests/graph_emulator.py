"""A Microsoft Graph emulator for tests and benchmarks: an HTTPS CONNECT proxy on 127.0.0.1.

Production code keeps the real URLs (login.microsoftonline.com, graph.microsoft.com). Tests set
HTTPS_PROXY to this proxy and REQUESTS_CA_BUNDLE to its throw-away CA; the proxy accepts tunnels
only to those two hosts and answers inside them with TLS from that CA, following the request and
response shapes of Microsoft's Graph v1.0 reference (user-list-messages, message-get,
message-delta, message-update, message-move, message-delete, throttling, paging) and of the
identity platform's client-credentials token endpoint.

Faults to inject: ``throttle`` (share of Graph requests answered 429 with ``retry_after``),
``latency`` (seconds added to every Graph request), ``token_lifetime``, ``expire_delta_tokens``,
``set_outage(True)`` (open tunnels are cut and new ones refused with 502, as a proxy does when Microsoft
cannot be reached, until ``set_outage(False)``).
It records the highest number of concurrent requests per mailbox.
"""

from __future__ import annotations

import base64
import datetime
import email
import itertools
import json
import random
import re
import secrets
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from email import policy
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from testca import throwaway_ca

LOGIN = "login.microsoftonline.com"
GRAPH = "graph.microsoft.com"
WELL_KNOWN = {"inbox": "Inbox", "archive": "Archive", "deleteditems": "Deleted Items", "sentitems": "Sent Items"}


def make_ca(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A throw-away CA (its PEM file for clients) and a server context for both Microsoft hosts."""
    ca_file, ctx, _ = throwaway_ca(directory, (GRAPH, LOGIN))
    return ca_file, ctx


@dataclass
class Message:
    id: str
    mime: bytes
    received: str
    is_read: bool = False
    version: int = 1

    def resource(self, folder_id: str, select: list[str] | None = None) -> dict:
        try:
            subject = str(email.message_from_bytes(self.mime, policy=policy.default)["subject"] or "")
        except Exception:
            subject = ""
        full = {"@odata.etag": f'W/"{self.version}"', "id": self.id, "receivedDateTime": self.received,
                "subject": subject, "isRead": self.is_read, "parentFolderId": folder_id,
                "hasAttachments": b"Content-Disposition: attachment" in self.mime}
        return {k: v for k, v in full.items() if not select or k in select or k in ("id", "@odata.etag")}


@dataclass
class Folder:
    id: str
    name: str
    messages: OrderedDict[str, Message] = field(default_factory=OrderedDict)


@dataclass
class Mailbox:
    address: str
    rest_enabled: bool = True
    folders: dict[str, Folder] = field(default_factory=dict)

    def folder(self, ref: str) -> Folder | None:
        ref = ref.lower()
        if ref in WELL_KNOWN and ref not in self.folders:
            self.folders[ref] = Folder(f"folder-{ref}", WELL_KNOWN[ref])
        return self.folders.get(ref) or next((f for f in self.folders.values() if f.id.lower() == ref), None)


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class GraphEmulator:
    """State and behaviour of the emulated tenant(s). Start with ``start()``, stop with ``stop()``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="amg-"))
        self.ca_file, self.server_ctx = make_ca(self.dir)
        self.apps: dict[tuple[str, str], dict] = {}  # (tenant, client id) -> secret, expired, permissions
        self.mailboxes: dict[str, Mailbox] = {}
        self.tokens: dict[str, tuple[str, str, float]] = {}
        self.token_lifetime = 3600
        self.token_requests = 0
        self.throttle = 0.0
        self.retry_after = "1"
        self.latency = 0.0
        self.expire_delta_tokens = False
        self.fail_next: list[tuple[int, str, dict]] = []  # forced answers for the next Graph requests
        self.outage = False
        self._tunnels: set[socket.socket] = set()
        self.after_delta_page = None  # called with the page's message ids after each delta page is served
        self.requests: list[tuple[str, str]] = []
        self.page_sizes: list[int] = []  # odata.maxpagesize of each delta request
        self.max_concurrent: dict[str, int] = {}
        self._concurrent: dict[str, int] = {}
        self._rounds: dict[str, dict] = {}
        self._snapshots: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(7)
        self._ids = itertools.count(1)
        self.server: socketserver.ThreadingTCPServer | None = None
        self.port = 0
        # Change notifications (subscriptions): id -> dict; the CA our outgoing HTTPS calls trust (the
        # subscriber's endpoint); the longest lifetime granted (Outlook messages: under 7 days); what was sent.
        self.subscriptions: dict[str, dict] = {}
        self.notify_ca: Path | None = None
        self.subscription_max_seconds = 10080 * 60 - 60
        self.validations: list[str] = []
        self.notifications: list[tuple[str, int]] = []  # (url, HTTP status of the answer)

    # -- set-up ---------------------------------------------------------------------------
    def add_app(self, tenant: str, client_id: str, secret: str, permissions=("Mail.ReadWrite",),
                expired: bool = False) -> None:
        self.apps[(tenant, client_id)] = {"secret": secret, "expired": expired, "permissions": set(permissions)}

    def add_mailbox(self, address: str, rest_enabled: bool = True) -> Mailbox:
        box = Mailbox(address, rest_enabled)
        box.folder("inbox")
        self.mailboxes[address.lower()] = box
        return box

    def deliver(self, address: str, mimes: list[bytes], folder: str = "inbox", is_read: bool = False) -> list[str]:
        box = self.mailboxes[address.lower()]
        ids = []
        with self._lock:
            target = box.folder(folder)
            for mime in mimes:
                n = next(self._ids)
                mid = "AAMkAD" + base64.urlsafe_b64encode(f"msg-{n:08d}".encode()).decode().rstrip("=")
                received = (datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
                            + datetime.timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
                target.messages[mid] = Message(mid, mime, received, is_read)
                ids.append(mid)
            subscribed = [s for s in self.subscriptions.values() if s["mailbox"] == box.address.lower()
                          and box.folder(s["folder"]) is target and s["expires"] > time.time()]
        for sub in subscribed:  # Graph notifies after the change, from its own side, a little later
            value = [{"subscriptionId": sub["id"], "subscriptionExpirationDateTime": _iso(sub["expires"]),
                      "changeType": "created", "resource": f"Users/{box.address}/Messages/{mid}",
                      "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id":
                                       f"Users/{box.address}/Messages/{mid}", "id": mid},
                      "clientState": sub["clientState"], "tenantId": sub["tenant"]} for mid in ids]
            threading.Thread(target=self._post, args=(sub["notificationUrl"], {"value": value}), daemon=True).start()
        return ids

    # -- change notifications (Microsoft's documented shapes) --------------------------------------------------
    def lifecycle(self, subscription_id: str, event: str) -> int:
        """Send a lifecycle notification (reauthorizationRequired, subscriptionRemoved, missed); returns the answer's
        status. subscriptionRemoved also removes the subscription, as Graph does."""
        sub = self.subscriptions[subscription_id]
        if event == "subscriptionRemoved":
            self.subscriptions.pop(subscription_id)
        return self._post(sub["lifecycleNotificationUrl"] or sub["notificationUrl"], {"value": [
            {"lifecycleEvent": event, "subscriptionId": subscription_id, "resource": sub["resource"],
             "subscriptionExpirationDateTime": _iso(sub["expires"]), "clientState": sub["clientState"],
             "tenantId": sub["tenant"]}]})

    def _opener(self):
        context = ssl.create_default_context(cafile=str(self.notify_ca) if self.notify_ca else None)
        return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(
            context=context))

    def _post(self, url: str, payload: dict) -> int:
        request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        try:
            with self._opener().open(request, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as e:
            status = e.code
        except OSError:
            status = 0
        self.notifications.append((url, status))
        return status

    def _validate(self, url: str) -> bool:
        """Graph's validation request: POST url?validationToken=...; the endpoint must echo it, 200, text/plain."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        request = urllib.request.Request(f"{url}?validationToken={quote(token)}", b"", {"Content-Type": "text/plain"},
                                         method="POST")
        try:
            with self._opener().open(request, timeout=10) as response:
                ok = response.status == 200 and response.read().decode() == token and \
                    response.headers.get("Content-Type", "").startswith("text/plain")
        except OSError:
            ok = False
        self.validations.append(url)
        return ok

    def _subscriptions(self, app: tuple[str, str], method: str, parts: list[str], body: bytes):
        data = json.loads(body or b"{}")
        if method == "POST" and len(parts) == 2:
            for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
                if not data.get(name):
                    raise GraphError(400, "InvalidRequest", f"The property '{name}' is required.")
            match = re.fullmatch(r"/?users/([^/]+)/mailFolders\('?([^/')]+)'?\)/messages", data["resource"], re.I)
            if match is None or match.group(1).lower() not in self.mailboxes:
                raise GraphError(400, "InvalidRequest", f"Resource '{data['resource']}' is not supported.")
            for url in (data["notificationUrl"], data.get("lifecycleNotificationUrl") or ""):
                if url and not url.startswith("https://"):
                    raise GraphError(400, "InvalidRequest", "The notification URL must use https.")
            expires = _parse_iso(data["expirationDateTime"])
            if expires is None or expires <= time.time():
                raise GraphError(400, "InvalidRequest", "Subscription expiration must be in the future.")
            for url in {data["notificationUrl"], data.get("lifecycleNotificationUrl") or data["notificationUrl"]}:
                if not self._validate(url):
                    raise GraphError(400, "InvalidRequest", "Subscription validation request failed. Notification "
                                     "endpoint must respond with 200 OK to validation request.")
            sid = str(uuid.uuid4())
            self.subscriptions[sid] = sub = {
                "id": sid, "tenant": app[0], "resource": data["resource"], "mailbox": match.group(1).lower(),
                "folder": match.group(2), "notificationUrl": data["notificationUrl"],
                "lifecycleNotificationUrl": data.get("lifecycleNotificationUrl"),
                "clientState": data.get("clientState"), "changeType": data["changeType"],
                "expires": min(expires, time.time() + self.subscription_max_seconds)}
            return _json(201, self._subscription_json(sub))
        sub = self.subscriptions.get(parts[2]) if len(parts) == 3 else None
        if sub is None or sub["tenant"] != app[0]:
            raise GraphError(404, "ResourceNotFound", "The object was not found.")
        if method == "PATCH":
            expires = _parse_iso(data.get("expirationDateTime", ""))
            if expires is None or expires <= time.time():
                raise GraphError(400, "InvalidRequest", "Subscription expiration must be in the future.")
            sub["expires"] = min(expires, time.time() + self.subscription_max_seconds)
            return _json(200, self._subscription_json(sub))
        if method == "DELETE":
            self.subscriptions.pop(sub["id"])
            return 204, {}, b""
        if method == "GET":
            return _json(200, self._subscription_json(sub))
        raise GraphError(405, "MethodNotAllowed", "Method not allowed.")

    @staticmethod
    def _subscription_json(sub: dict) -> dict:
        return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity", "id": sub["id"],
                "resource": sub["resource"], "changeType": sub["changeType"], "clientState": sub["clientState"],
                "notificationUrl": sub["notificationUrl"], "lifecycleNotificationUrl":
                sub["lifecycleNotificationUrl"], "expirationDateTime": _iso(sub["expires"]),
                "applicationId": "app", "creatorId": "creator", "latestSupportedTlsVersion": "v1_2"}

    def remove(self, address: str, message_id: str) -> None:
        with self._lock:
            for folder in self.mailboxes[address.lower()].folders.values():
                folder.messages.pop(message_id, None)

    # -- server ---------------------------------------------------------------------------
    def start(self) -> GraphEmulator:
        emulator = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                emulator._tunnel(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 64

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def set_outage(self, down: bool) -> None:
        """Microsoft unreachable (``down``): the open tunnels break and new ones are refused; or reachable again."""
        self.outage = down
        if down:
            for sock in list(self._tunnels):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def environ(self) -> dict[str, str]:
        """What a client process needs to reach the emulator instead of Microsoft."""
        return {"HTTPS_PROXY": f"http://127.0.0.1:{self.port}", "https_proxy": f"http://127.0.0.1:{self.port}",
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
        host = request_line[1].rsplit(":", 1)[0]
        if request_line[1] not in (f"{LOGIN}:443", f"{GRAPH}:443"):
            sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        if self.outage:
            sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
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
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    h = reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = reader.read(int(headers.get("content-length", 0) or 0))
                status, out_headers, payload = self._dispatch(host, method, target, headers, body)
                head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Length: {len(payload)}"]
                head += [f"{k}: {v}" for k, v in out_headers.items()]
                tls.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)  # one write
        except (OSError, ValueError, ssl.SSLError):
            return
        finally:
            self._tunnels.discard(tls)
            try:
                tls.close()
            except OSError:
                pass

    # -- dispatch -------------------------------------------------------------------------
    def _dispatch(self, host: str, method: str, target: str, headers: dict, body: bytes):
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if host == LOGIN:
                return self._login(method, url.path, body)
            return self._graph(method, url.path, query, headers, body)
        except GraphError as e:
            error = {"error": {"code": e.code, "message": e.message,
                               "innerError": {"date": "2024-01-01T00:00:00", "request-id": secrets.token_hex(8)}}}
            return e.status, {"Content-Type": "application/json", **e.headers}, json.dumps(error).encode()

    def _login(self, method: str, path: str, body: bytes):
        parts = path.strip("/").split("/")
        tenant = parts[0]
        known_tenant = any(t == tenant for t, _ in self.apps)
        if path == "/common/discovery/instance":  # msal asks for authority aliases after a failed login
            return 200, {"Content-Type": "application/json"}, json.dumps({
                "tenant_discovery_endpoint": f"https://{LOGIN}/common/v2.0/.well-known/openid-configuration",
                "api-version": "1.1", "metadata": [{"preferred_network": LOGIN, "preferred_cache": "login.windows.net",
                                                    "aliases": [LOGIN, "login.windows.net", "login.microsoft.com",
                                                                "sts.windows.net"]}]}).encode()
        if path.endswith("/.well-known/openid-configuration"):
            if not known_tenant:
                return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure "
                                  "you have the correct tenant ID and are signing into the correct cloud.")
            base = f"https://{LOGIN}/{tenant}"
            return 200, {"Content-Type": "application/json"}, json.dumps({
                "token_endpoint": f"{base}/oauth2/v2.0/token", "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0", "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout", "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"]}).encode()
        if path.endswith("/oauth2/v2.0/token") and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            self.token_requests += 1
            app = self.apps.get((tenant, form.get("client_id", "")))
            if form.get("grant_type") != "client_credentials":
                return _aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
            if app is None:
                return _aad_error(400, "unauthorized_client", 700016, f"Application with identifier "
                                  f"'{form.get('client_id')}' was not found in the directory '{tenant}'.")
            if app["secret"] != form.get("client_secret"):
                return _aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the "
                                  "secret being sent in the request is the client secret value, not the client "
                                  "secret ID, for a secret added to app.")
            if app["expired"]:
                return _aad_error(401, "invalid_client", 7000222, f"The provided client secret keys for app "
                                  f"'{form.get('client_id')}' are expired.")
            token = secrets.token_urlsafe(24)
            self.tokens[token] = (tenant, form["client_id"], time.time() + self.token_lifetime)
            return 200, {"Content-Type": "application/json"}, json.dumps({
                "token_type": "Bearer", "expires_in": self.token_lifetime, "ext_expires_in": self.token_lifetime,
                "access_token": token}).encode()
        return _aad_error(404, "invalid_request", 90000, f"No such endpoint {path}")

    def _graph(self, method: str, path: str, query: dict, headers: dict, body: bytes):
        self.requests.append((method, path))
        auth = headers.get("authorization", "")
        grant = self.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if grant is None or grant[2] < time.time():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
        app = self.apps[(grant[0], grant[1])]
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["v1.0", "subscriptions"]:
            if not app["permissions"] & {"Mail.Read", "Mail.ReadWrite"}:
                raise GraphError(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden]")
            return self._subscriptions((grant[0], grant[1]), method, parts, body)
        if parts[:2] != ["v1.0", "users"] or len(parts) < 4:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{path}'.")
        box = self.mailboxes.get(parts[2].lower())
        key = parts[2].lower()
        with self._lock:
            self._concurrent[key] = self._concurrent.get(key, 0) + 1
            self.max_concurrent[key] = max(self.max_concurrent.get(key, 0), self._concurrent[key])
        try:
            if self.latency:
                time.sleep(self.latency)
            if self.fail_next:
                status, code, extra = self.fail_next.pop(0)
                raise GraphError(status, code, f"Injected {status}.", extra)
            if self.throttle and self._rng.random() < self.throttle:
                raise GraphError(429, "TooManyRequests", "Application is over its MailboxConcurrency limit.",
                                 {"Retry-After": self.retry_after})
            if box is None:
                raise GraphError(404, "ErrorInvalidUser", f"The requested user '{parts[2]}' is invalid.")
            if not box.rest_enabled:
                raise GraphError(404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, "
                                 "or is hosted on-premise.")
            writes = method in ("PATCH", "POST", "DELETE")
            if not app["permissions"] & ({"Mail.ReadWrite"} if writes else {"Mail.Read", "Mail.ReadWrite"}):
                raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            return self._mail(box, method, parts[3:], query, headers, body)
        finally:
            with self._lock:
                self._concurrent[key] -= 1

    def _mail(self, box: Mailbox, method: str, parts: list[str], query: dict, headers: dict, body: bytes):
        base = f"https://{GRAPH}/v1.0/users/{quote(box.address)}"
        if parts[0] == "mailFolders":
            folder = box.folder(parts[1]) if len(parts) > 1 else None
            if folder is None:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            rest = parts[2:]
            if not rest and method == "GET":
                unread = sum(not m.is_read for m in folder.messages.values())
                return _json(200, {"id": folder.id, "displayName": folder.name, "parentFolderId": "root",
                                   "childFolderCount": 0, "totalItemCount": len(folder.messages),
                                   "unreadItemCount": unread})
            if rest == ["messages"] and method == "GET":
                return self._list(box, folder, query, f"{base}/mailFolders/{parts[1]}/messages")
            if rest == ["messages", "delta"] and method == "GET":
                return self._delta(box, folder, query, headers, f"{base}/mailFolders/{parts[1]}/messages/delta")
        if parts[0] == "messages" and len(parts) >= 2:
            found = [(f, f.messages[parts[1]]) for f in box.folders.values() if parts[1] in f.messages]
            if not found:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            folder, message = found[0]
            if parts[2:] == ["$value"] and method == "GET":
                return 200, {"Content-Type": "text/plain"}, message.mime
            if len(parts) == 2 and method == "GET":
                return _json(200, message.resource(folder.id))
            if len(parts) == 2 and method == "PATCH":
                changes = json.loads(body or b"{}")
                with self._lock:
                    if "isRead" in changes:
                        message.is_read = bool(changes["isRead"])
                        message.version += 1
                return _json(200, message.resource(folder.id))
            if len(parts) == 2 and method == "DELETE":
                with self._lock:
                    folder.messages.pop(message.id, None)
                    box.folder("deleteditems").messages[message.id] = message
                return 204, {}, b""
            if parts[2:] == ["move"] and method == "POST":
                target = box.folder(json.loads(body or b"{}").get("destinationId", ""))
                if target is None:
                    raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
                with self._lock:
                    folder.messages.pop(message.id, None)
                    immutable = 'idtype="immutableid"' in headers.get("prefer", "").lower()
                    if not immutable:  # without the header, Graph gives the moved message a new id
                        message = Message("AAMkAD" + secrets.token_urlsafe(12), message.mime, message.received,
                                          message.is_read, message.version + 1)
                    target.messages[message.id] = message
                return _json(201, message.resource(target.id))
        raise GraphError(400, "BadRequest", f"Unsupported request {method} {'/'.join(parts)}")

    def _list(self, box: Mailbox, folder: Folder, query: dict, url: str):
        top = int(query.get("$top", 10))
        if not 1 <= top <= 1000:
            raise GraphError(400, "ErrorInvalidParameter", "The value of '$top' must be between 1 and 1000.")
        skip = int(query.get("$skip", 0))
        select = query["$select"].split(",") if "$select" in query else None
        items = list(folder.messages.values())
        flt = query.get("$filter", "").replace(" ", "").lower()
        if flt == "isreadeqfalse":
            items = [m for m in items if not m.is_read]
        elif flt == "isreadeqtrue":
            items = [m for m in items if m.is_read]
        elif flt.startswith("receiveddatetimege"):
            since = query["$filter"].split()[-1]
            items = [m for m in items if m.received >= since]
        items.sort(key=lambda m: m.received, reverse=True)
        page = items[skip:skip + top]
        out = {"@odata.context": f"{url}", "value": [m.resource(folder.id, select) for m in page]}
        if skip + top < len(items):
            rest = {k: v for k, v in query.items() if k != "$skip"}
            out["@odata.nextLink"] = f"{url}?" + "&".join(f"{k}={quote(v)}" for k, v in rest.items()) + \
                f"&$skip={skip + top}"
        return _json(200, out)

    def _delta(self, box: Mailbox, folder: Folder, query: dict, headers: dict, url: str):
        size = 10
        for pref in headers.get("prefer", "").split(","):
            if pref.strip().lower().startswith("odata.maxpagesize="):
                size = max(1, min(1000, int(pref.split("=", 1)[1])))
        select = query["$select"].split(",") if "$select" in query else None
        self.page_sizes.append(size)
        with self._lock:
            if "$skiptoken" in query:
                round_ = self._rounds.get(query["$skiptoken"])
                if round_ is None:
                    raise GraphError(410, "SyncStateNotFound", "The sync state generation is not found.")
            else:
                if "$deltatoken" in query:
                    before = self._snapshots.get(query["$deltatoken"])
                    if before is None or self.expire_delta_tokens:
                        raise GraphError(410, "SyncStateNotFound", "The sync state generation is not found. "
                                         "Restart the sync without a token.")
                else:
                    before = {}
                now = {m.id: m.version for m in folder.messages.values()}
                changed = [folder.messages[i] for i in now if before.get(i) != now[i]]
                removed = [i for i in before if i not in now]
                round_ = {"changed": changed, "removed": removed, "offset": 0, "snapshot": now}
            start = round_["offset"]
            items = [m.resource(folder.id, select) for m in round_["changed"][start:start + size]]
            taken = len(items)
            if start + taken >= len(round_["changed"]):
                items += [{"id": i, "@removed": {"reason": "deleted"}} for i in round_["removed"]]
            out = {"@odata.context": f"https://{GRAPH}/v1.0/$metadata#Collection(message)", "value": items}
            if start + taken < len(round_["changed"]):
                token = secrets.token_urlsafe(12)
                self._rounds[token] = dict(round_, offset=start + taken)
                out["@odata.nextLink"] = f"{url}?$skiptoken={token}"
            else:
                token = secrets.token_urlsafe(12)
                self._snapshots[token] = round_["snapshot"]
                out["@odata.deltaLink"] = f"{url}?$deltatoken={token}"
        if self.after_delta_page:
            self.after_delta_page([m["id"] for m in items])
        return _json(200, out)


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 410: "Gone", 429: "Too Many Requests", 503: "Service Unavailable",
            504: "Gateway Timeout"}


def _iso(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _parse_iso(text: str) -> float | None:
    """An ISO 8601 time as Graph takes it (Z or an offset, up to 7 fraction digits), as a timestamp."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,7}))?(Z|[+-]\d\d:\d\d)", text or "")
    if match is None:
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    stamp = datetime.datetime.fromisoformat(match.group(1) + zone).timestamp()
    return stamp + float("0." + (match.group(2) or "0"))


def _json(status: int, data: dict):
    return status, {"Content-Type": "application/json; odata.metadata=minimal"}, json.dumps(data).encode()


def _aad_error(status: int, error: str, code: int, description: str):
    return status, {"Content-Type": "application/json"}, json.dumps({
        "error": error, "error_description": f"AADSTS{code}: {description}", "error_codes": [code],
        "timestamp": "2024-01-01 00:00:00Z", "trace_id": secrets.token_hex(8),
        "correlation_id": secrets.token_hex(8)}).encode()
