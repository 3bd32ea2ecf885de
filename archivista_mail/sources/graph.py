"""Microsoft 365 through Graph, on the O365 library (client-credentials flow).

The O365 library authenticates (through msal) and carries the requests; this adapter adds what
an archive needs and the library lacks or gets wrong (see ../shared/TESTING.md, O365 2.1.10):
- a token backend in memory that survives token expiry in the credentials flow;
- no 200 ms delay between requests, a timeout on every request;
- our own handling of 429/503/504 on every method, honouring integer and fractional
  Retry-After, with backoff (O365 retries GETs only and fails on a fractional header);
- at most ``MAX_CONCURRENCY`` requests in flight per mailbox (the Graph service limit is 4);
- immutable ids (``Prefer: IdType="ImmutableId"``), so a moved message keeps its id;
- delta queries with their nextLink/deltaLink, and ``/$value`` for the original MIME.
O365 and msal log request headers (the bearer token) at debug level: their loggers are kept quiet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..accounts import Account, AfterAction
from ..errors import (
    ActionRefusedError,
    AuthError,
    ConfigError,
    ConnectError,
    FetchError,
    FolderError,
    SourceError,
    Text,
    escaped,
    t,
)
from ..model import RawMail
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
)

GRAPH = "https://graph.microsoft.com/v1.0"
SCOPES = ["https://graph.microsoft.com/.default"]
MAX_CONCURRENCY = 4
MAX_ATTEMPTS = 8
RETRYABLE = (429, 503, 504)

for _name in ("O365", "msal"):  # they log bearer tokens and request headers at debug level
    logging.getLogger(_name).setLevel(logging.CRITICAL + 1)
    logging.getLogger(_name).propagate = False


class DeltaExpiredError(FetchError):
    """Raised when Graph answers 410: the delta token expired and the folder must be synced anew."""


class GoneError(FetchError):
    """Raised when a message no longer exists (404 ErrorItemNotFound)."""


@dataclass(frozen=True)
class DeltaPage:
    """One page of a delta round: changed messages, and either the next page's link or the round's end."""

    messages: list[dict]
    next_link: str | None
    delta_link: str | None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: integer or fractional seconds (HTTP dates are not used by Graph)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _token_backend():
    from O365.utils.token import MemoryTokenBackend

    class TokenBackend(MemoryTokenBackend):
        """Tokens in memory only: never a bearer token in ./o365_token.txt (O365's default, mode 0644).

        In the credentials flow O365 2.1.10 asks the backend for the expired token's scopes to
        refresh it, finds none, and msal fails with 'Invalid parameter type'; Graph's default scope
        is the answer.
        """

        def get_token_scopes(self, *, username=None, remove_reserved=False):
            return super().get_token_scopes(username=username, remove_reserved=remove_reserved) or list(SCOPES)

    return TokenBackend()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class GraphSession:
    """One authenticated Graph connection for an o365 account. Use as a context manager."""

    def __init__(self, account: Account, secret: str, timeout: int = 60,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.account = account
        self._secret = secret
        self.timeout = timeout
        self.sleep = sleep
        self.o365: Any = None  # the O365 library's Account (untyped)
        self.throttled = 0
        self._slots: dict[str, threading.Semaphore] = {}
        self._slots_lock = threading.Lock()

    def __enter__(self) -> GraphSession:
        from O365 import Account as O365Account

        acc = self.account
        self.o365 = O365Account((acc.client_id, self._secret), auth_flow_type="credentials", tenant_id=acc.tenant,
                                token_backend=_token_backend(), requests_delay=0, timeout=self.timeout,
                                request_retries=0, raise_http_errors=False,
                                default_headers={"Prefer": 'IdType="ImmutableId"'})
        capture = _Capture()
        log = logging.getLogger("O365")
        log.setLevel(logging.ERROR)
        log.addHandler(capture)
        try:
            ok = self.o365.authenticate(requested_scopes=SCOPES)
        except ValueError as e:  # msal: the tenant's configuration could not be fetched
            raise AuthError(t("Account %(name)s: the tenant '%(tenant)s' is not known to Microsoft 365 (%(reason)s). "
                              "Check the tenant ID (Directory ID) in the Azure portal.", name=acc.name,
                              tenant=escaped(acc.tenant), reason=str(e))) from e
        except Exception as e:  # requests' connection errors, proxies, TLS
            raise ConnectError(t("Account %(name)s: Microsoft's login service cannot be reached (%(reason)s). Check "
                                 "the network, proxy and firewall of this machine.", name=acc.name,
                                 reason=str(e))) from e
        finally:
            log.removeHandler(capture)
            log.setLevel(logging.CRITICAL + 1)
        if not ok:
            raise AuthError(_login_failure(acc, " ".join(capture.messages)))
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session."""
        if self.o365 is not None and self.o365.con.session is not None:
            self.o365.con.session.close()
        self.o365 = None

    # -- requests -------------------------------------------------------------------------
    def _slot(self, mailbox: str) -> threading.Semaphore:
        with self._slots_lock:
            return self._slots.setdefault(mailbox.lower(), threading.Semaphore(MAX_CONCURRENCY))

    def request(self, method: str, url: str, mailbox: str, *, expect_json: bool = True,
                acting: AfterAction | None = None, **kwargs):
        """One Graph request with throttling handled; returns the response. Raises SourceError subclasses.

        ``acting``: the request carries out this after-archive action, so Graph refusing it
        (400, 403) raises ActionRefusedError: a failure of the folder, not of the account.
        """
        delay = 1.0
        for attempt in range(MAX_ATTEMPTS):
            with self._slot(mailbox):
                try:
                    response = self.o365.con.oauth_request(url, method, **kwargs)
                except Exception as e:  # requests' ConnectionError, Timeout, SSLError; msal refresh failures
                    raise FetchError(t("Account %(name)s: the request to Microsoft Graph failed (%(reason)s). The "
                                       "next run continues where this one stopped.", name=self.account.name,
                                       reason=f"{type(e).__name__}: {e}")) from e
            if response.status_code in RETRYABLE and attempt < MAX_ATTEMPTS - 1:
                self.throttled += 1
                wait = parse_retry_after(response.headers.get("Retry-After"))
                self.sleep(min(60.0, wait if wait is not None else delay))  # outside the slot: others go on
                delay = min(30.0, delay * 2)
                continue
            if response.status_code >= 400:  # also a 429 that outlasted MAX_ATTEMPTS: the next run tries again
                if acting is not None and response.status_code in (400, 403):
                    raise self._refused(response, mailbox, acting)
                raise self._error(response, mailbox)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _refused(self, response, mailbox: str, action: AfterAction) -> ActionRefusedError:
        code, message = _error_body(response)
        return ActionRefusedError(t(
            "Account %(name)s: Microsoft Graph refused the after-archive action '%(action)s' in mailbox %(mailbox)s "
            "(%(status)s %(code)s: %(message)s). The mails are archived; the action is tried again on the next run. "
            "Check the target folder (a well-known name such as archive, or a folder id) and that the app has the "
            "application permission Mail.ReadWrite.", name=self.account.name, action=escaped(action),
            mailbox=mailbox, status=response.status_code, code=code, message=message))

    def _error(self, response, mailbox: str) -> SourceError:
        acc = self.account.name
        code, message = _error_body(response)
        status = response.status_code
        if status == 410:
            return DeltaExpiredError(t("Account %(name)s: the delta token for %(mailbox)s expired (%(code)s).",
                                       name=acc, mailbox=mailbox, code=code))
        if code == "ErrorItemNotFound":
            return GoneError(t("Account %(name)s: %(problem)s", name=acc, problem=message))
        if code == "MailboxNotEnabledForRESTAPI":
            return FolderError(t("Account %(name)s: the mailbox %(mailbox)s is not enabled for the Graph API (it is "
                                 "inactive, soft-deleted or hosted on-premises). Archive it over IMAP instead, or "
                                 "move it to Exchange Online.", name=acc, mailbox=mailbox))
        if code in ("ErrorInvalidUser", "ResourceNotFound") or (status == 404 and "user" in message.lower()):
            return FolderError(t("Account %(name)s: the mailbox %(mailbox)s does not exist in this tenant. Check the "
                                 "address (the user's primary SMTP address or user principal name).", name=acc,
                                 mailbox=mailbox))
        if status == 401:
            return AuthError(t("Account %(name)s: Microsoft Graph rejected the access token (%(message)s). Check that "
                               "the app registration still exists and its secret is valid.", name=acc,
                               message=message))
        if status == 403:
            return AuthError(t("Account %(name)s: access to the mailbox %(mailbox)s was denied (%(code)s). Grant the "
                               "app the application permission Mail.Read (Mail.ReadWrite to mark, move or delete) "
                               "with admin consent, and check any application access policy that limits it to "
                               "chosen mailboxes.", name=acc, mailbox=mailbox, code=code))
        return FetchError(t("Account %(name)s: Microsoft Graph answered %(status)s %(code)s: %(message)s. The next "
                            "run tries again.", name=acc, status=status, code=code, message=message))

    # -- mail ---------------------------------------------------------------------------
    @staticmethod
    def folder_url(mailbox: str, folder: str) -> str:
        return f"{GRAPH}/users/{quote(mailbox)}/mailFolders/{quote(folder)}"

    def folder_info(self, mailbox: str, folder: str) -> dict:
        """The folder's resource (displayName, totalItemCount, unreadItemCount)."""
        try:
            return self.request("GET", self.folder_url(mailbox, folder), mailbox).json()
        except GoneError as e:
            raise FolderError(t("Account %(name)s: the folder '%(folder)s' does not exist in mailbox %(mailbox)s. Use "
                                "a well-known name such as inbox or archive, or the folder's id.",
                                name=self.account.name, folder=escaped(folder), mailbox=mailbox)) from e

    def delta_page(self, mailbox: str, folder: str, link: str | None, page_size: int) -> DeltaPage:
        """One page of the folder's message delta: from ``link`` (a nextLink or deltaLink), or a new round."""
        url = link or f"{self.folder_url(mailbox, folder)}/messages/delta"
        params = None if link else {"$select": "id,isRead,receivedDateTime"}
        headers = {"Prefer": f"odata.maxpagesize={page_size}"}
        data = self.request("GET", url, mailbox, params=params, headers=headers).json()
        return DeltaPage(data.get("value", []), data.get("@odata.nextLink"), data.get("@odata.deltaLink"))

    def fetch_mime(self, mailbox: str, ids: list[str]) -> dict[str, bytes]:
        """The original MIME of each message (``/$value``), up to MAX_CONCURRENCY at a time; gone ones left out."""
        def one(message_id: str) -> tuple[str, bytes | None]:
            url = f"{GRAPH}/users/{quote(mailbox)}/messages/{quote(message_id)}/$value"
            try:
                return message_id, self.request("GET", url, mailbox).content
            except GoneError:  # deleted between listing and fetching: nothing to archive
                return message_id, None

        with ThreadPoolExecutor(MAX_CONCURRENCY) as pool:
            return {mid: mime for mid, mime in pool.map(one, ids) if mime is not None}

    def apply(self, mailbox: str, action: AfterAction, ids: list[str]) -> None:
        """After-archive action on messages (read, move:FOLDER, delete); a message already gone is done.

        Raises ActionRefusedError when Graph refuses the action (e.g. no Mail.ReadWrite, an unknown target).
        """
        if action.kind == "none" or not ids:
            return

        def one(message_id: str) -> None:
            url = f"{GRAPH}/users/{quote(mailbox)}/messages/{quote(message_id)}"
            try:
                if action.kind == "read":
                    self.request("PATCH", url, mailbox, data={"isRead": True}, acting=action)
                elif action.kind == "delete":
                    self.request("DELETE", url, mailbox, acting=action)
                elif action.kind == "move":
                    self.request("POST", f"{url}/move", mailbox, data={"destinationId": action.target}, acting=action)
                else:
                    raise ConfigError(t("Account %(name)s: unknown after-archive action '%(action)s'.",
                                        name=self.account.name, action=escaped(action)))
            except GoneError:
                pass

        with ThreadPoolExecutor(MAX_CONCURRENCY) as pool:
            list(pool.map(one, ids))

    def first_message(self, mailbox: str, folder: str) -> dict | None:
        """The newest message of a folder (subject, receivedDateTime), or None if it is empty."""
        data = self.request("GET", f"{self.folder_url(mailbox, folder)}/messages", mailbox,
                            params={"$top": 1, "$select": "subject,receivedDateTime"}).json()
        return (data.get("value") or [None])[0]


def _iso_in(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


def _parse_time(value: str | None, fallback_seconds: int) -> float:
    """Graph's expirationDateTime as a timestamp (what we asked for, if it cannot be read)."""
    import datetime
    import re

    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", value or "")
    if match is None:
        return time.time() + fallback_seconds
    return datetime.datetime.fromisoformat(match.group(1) + "+00:00").timestamp()


def _error_body(response) -> tuple[str, str]:
    """Graph's error code and message from a failed response (its documented ``{"error": {...}}`` body)."""
    try:
        error = response.json().get("error", {})
        return error.get("code", ""), error.get("message", "")
    except ValueError:
        return "", response.text[:200]


def _login_failure(acc: Account, detail: str) -> Text:
    """What Microsoft's login service said (``detail``, with its AADSTS code), in a sentence saying what to do."""
    if "AADSTS7000215" in detail:
        what = t("the client secret is wrong. Enter the secret's Value (not its Secret ID) from the app registration")
    elif "AADSTS7000222" in detail:
        what = t("the client secret has expired. Create a new secret in the app registration and enter it here")
    elif "AADSTS700016" in detail:
        what = t("the client (application) ID is not known in this tenant. Check the Application ID and the tenant "
                 "ID")
    elif "AADSTS90002" in detail or "tenant" in detail.lower():
        what = t("the tenant is not known. Check the tenant ID (Directory ID)")
    else:
        what = t("the login failed. Check tenant ID, client ID and client secret")
    code = next((w.strip(":|.,") for w in detail.split() if w.startswith("AADSTS")), "")
    if code:
        return t("Account %(name)s: Microsoft 365 refused the app's login (%(code)s): %(problem)s.", name=acc.name,
                 code=code, problem=what)
    return t("Account %(name)s: Microsoft 365 refused the app's login: %(problem)s.", name=acc.name, problem=what)



class GraphSource(Source):
    """Microsoft 365 through Graph: each mailbox's folders by delta query, the cursor a delta or next link.

    The page size ("Anzahl Mails (Office 365)") halves while Graph throttles and grows back when it
    stops; a 410 (expired delta token) reads the folder again, content hashes skipping what is archived.
    """

    kind = "o365"
    title = Lang("Office 365", "Office 365")
    watch_mode = "notifications"  # Graph change notifications where WebAdmin is reachable over HTTPS
    page = "o365"
    page_title = Lang("Office 365", "Office 365")
    actions = ("none", "read", "move", "delete")
    settings = (
        Setting("tenant", "text", Lang("Tenant ID", "Tenant-ID"),
                Lang("The tenant (Directory) ID of the Azure AD / Entra ID.",
                     "Die Tenant-ID (Verzeichnis-ID) im Azure AD / Entra ID."), required=True, bound=True),
        Setting("client_id", "text", Lang("Client ID", "Client-ID"),
                Lang("The Application (client) ID of the app registration.",
                     "Die Anwendungs-ID (Client-ID) der App-Registrierung."), required=True, bound=True),
        Setting("client_secret", "secret", Lang("Client secret", "Client-Secret"),
                Lang("Read the client secret (its Value, not its ID) from the first line of standard input.",
                     "Das Client-Secret (seinen Wert, nicht die ID) aus der ersten Zeile der Standardeingabe lesen."),
                option="--client-secret-stdin"),
        Setting("mailboxes", "list", Lang("Mailboxes", "Postfächer"),
                Lang("Mailbox address to archive (repeatable).", "Zu archivierende Postfachadresse (mehrfach)."),
                required=True, option="--mailbox"),
        Setting("folders", "list", Lang("Folders", "Ordner"),
                Lang("Folder to archive (repeatable): a well-known name (inbox, archive, ...) or a folder id. "
                     "Default: inbox.", "Zu archivierender Ordner (mehrfach): ein bekannter Name (inbox, archive, "
                     "...) oder eine Ordner-ID. Standard: inbox."), default=("inbox",), option="--folder"),
        Setting("batch_size", "int", Lang("Mails per request (Office 365)", "Anzahl Mails (Office 365)"),
                Lang("Messages per Graph page; halves while Graph throttles.",
                     "Nachrichten pro Graph-Seite; halbiert sich, solange Graph drosselt."), default=25,
                minimum=1, maximum=1000),
        UNREAD_ONLY,
        after_setting(actions),
    )

    def __enter__(self) -> GraphSource:
        self.session = GraphSession(self.account, self.secret, self.timeout).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    @classmethod
    def describe(cls, account: Account) -> str:
        return (f"{account.name}: o365 tenant {account.tenant}, client {account.client_id}, mailboxes "
                f"{', '.join(account.mailboxes)}, folders {', '.join(account.folders)}, batch size "
                f"{account.batch_size}, {'unread only' if account.unread_only else 'all mails'}, after archive: "
                f"{account.after}{'' if account.enabled else ', disabled'}")

    def folders(self) -> list[Folder]:
        acc = self.account
        return [Folder(f"{mailbox}/{name}", f"graph:{acc.name}:{mailbox}/{name}", (mailbox, name))
                for mailbox in acc.mailboxes for name in acc.folders]

    def open(self, folder: Folder, ledger: Ledger) -> None:
        self.session.folder_info(*folder.data)  # a missing mailbox or folder is named here, before anything else

    def key(self, folder: Folder, ref: object) -> str:
        return f"graph:{self.account.name}:{folder.label}:{ref}"

    def batches(self, folder: Folder, ledger: Ledger) -> Iterator[Batch]:
        mailbox, name = folder.data
        link, page_size, calm_pages = ledger.cursor, self.account.batch_size, 0
        while True:
            throttled_before = self.session.throttled
            try:
                page = self.session.delta_page(mailbox, name, link, page_size)
            except DeltaExpiredError:
                # 410: the sync state is gone. A new round; content hashes skip what is archived.
                ledger.restart(t("Account %(name)s: the delta token of %(folder)s expired; the folder was read "
                                 "again, duplicates skipped.", name=self.account.name, folder=folder.label),
                               forget_pending=False)  # message ids stay valid: owed actions still apply
                link = None
                continue
            ids = [m["id"] for m in page.messages
                   if "@removed" not in m and not (self.account.unread_only and m.get("isRead"))]
            yield Batch([Item(self.key(folder, i), i) for i in ids], page.next_link or page.delta_link)
            # The page size halves while Graph throttles and grows back when it stops.
            if self.session.throttled > throttled_before:
                page_size, calm_pages = max(5, page_size // 2), 0
            else:
                calm_pages += 1
                if calm_pages >= 3 and page_size < self.account.batch_size:
                    page_size, calm_pages = min(self.account.batch_size, page_size * 2), 0
            if not page.next_link:
                return
            link = page.next_link

    def fetch(self, folder: Folder, items: list[Item], spool_dir: Path) -> list[RawMail]:
        mimes = self.session.fetch_mime(folder.data[0], [i.ref for i in items])
        return [RawMail(mimes[i.ref], self.account.name, folder.label, i.key) for i in items if i.ref in mimes]

    def apply(self, folder: Folder, action: AfterAction, refs: list) -> None:
        self.session.apply(folder.data[0], action, refs)

    # -- change notifications (the watch service) -----------------------------------------------------------------
    def subscribe(self, folder: Folder, url: str, client_state: str, seconds: int) -> tuple[str, float]:
        """A subscription to new mail in the folder, notifications to ``url`` (Graph validates it first);
        returns its id and when it expires (Graph may grant less than asked). Raises SourceError."""
        mailbox, name = folder.data
        body = {"changeType": "created", "notificationUrl": url, "lifecycleNotificationUrl": url,
                "resource": f"users/{mailbox}/mailFolders('{name}')/messages", "clientState": client_state,
                "expirationDateTime": _iso_in(seconds)}
        answer = self.session.request("POST", f"{GRAPH}/subscriptions", mailbox, json=body).json()
        return answer["id"], _parse_time(answer.get("expirationDateTime"), seconds)

    def renew(self, folder: Folder, sid: str, seconds: int) -> float:
        """Extend a subscription; returns its new expiry. Raises SourceError (GoneError: it no longer exists)."""
        answer = self.session.request("PATCH", f"{GRAPH}/subscriptions/{quote(sid)}", folder.data[0],
                                      json={"expirationDateTime": _iso_in(seconds)}).json()
        return _parse_time(answer.get("expirationDateTime"), seconds)

    def unsubscribe(self, folder: Folder, sid: str) -> None:
        """Delete a subscription (one already gone is no error)."""
        try:
            self.session.request("DELETE", f"{GRAPH}/subscriptions/{quote(sid)}", folder.data[0], expect_json=False)
        except (GoneError, FolderError):
            pass

    def probe(self) -> ProbeReport:
        report = ProbeReport()
        for folder in self.folders():
            try:
                count = int(self.session.folder_info(*folder.data).get("totalItemCount", 0))
                report.folders.append(FolderReport(folder.label, count))
            except FolderError as e:
                report.folders.append(FolderReport(folder.label, error=e))
        return report

    def inbox(self) -> list[InboxReport]:
        out = []
        for mailbox in self.account.mailboxes:
            info = self.session.folder_info(mailbox, "inbox")
            first = self.session.first_message(mailbox, "inbox")
            out.append(InboxReport(mailbox, info.get("displayName", "Inbox"), int(info.get("totalItemCount", 0)),
                                   int(info.get("unreadItemCount", 0)),
                                   (first.get("subject") or "") if first else None))
        return out
