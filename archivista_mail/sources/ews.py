"""Exchange on-premises through Exchange Web Services, on the exchangelib library.

exchangelib speaks SOAP, NTLM or Basic, and carries the requests. This adapter adds what an
archive needs and the library leaves to its user (see ../shared/TESTING.md):
- no autodiscover: the EWS URL is configured; a service account reads many mailboxes by
  impersonation (the ApplicationImpersonation role), or its own mailbox;
- the server's CA per account, although exchangelib's HTTP adapter class is process-wide;
- its fail-fast retry policy, with ``ErrorServerBusy`` handled here: we wait the server's
  ``BackOffMilliseconds`` (exchangelib's FaultTolerance would also turn a wrong password into
  back-offs of up to an hour);
- ``SyncFolderItems`` page by page, the sync state of each page committed with its batch; an
  invalid sync state reads the folder again (the ledger and content hashes skip what is archived);
- the original bytes as ``MimeContent``, many items per ``GetItem``;
- folder names as Outlook shows them, German well-known names included (Posteingang, ...).
exchangelib logs request and response headers at debug level (Basic credentials): its loggers are kept quiet.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..accounts import Account, AfterAction
from ..errors import (
    ActionRefusedError,
    AuthError,
    ConfigError,
    ConnectError,
    FetchError,
    FolderError,
    SourceError,
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
    check_folder_names,
)

for _name in ("exchangelib", "requests_ntlm", "spnego"):  # exchangelib logs request headers (Basic credentials)
    logging.getLogger(_name).setLevel(logging.CRITICAL + 1)
    logging.getLogger(_name).propagate = False

SYNC_PAGE = 100  # changes per SyncFolderItems request
FETCH_CHUNK = 50  # items per GetItem with their MIME content
MAX_ATTEMPTS = 8
# What a streaming subscription asks for: a delivery (CreatedEvent, NewMailEvent), a mail moved or copied in
STREAM_EVENTS = ["CreatedEvent", "NewMailEvent", "MovedEvent", "CopiedEvent"]
MAX_BACKOFF = 300.0  # seconds: the longest server-requested pause we sit out within a run

# Outlook's names of the well-known folders, English and German, as exchangelib's Account attributes.
WELL_KNOWN = {
    "inbox": "inbox", "posteingang": "inbox",
    "sent items": "sent", "sentitems": "sent", "sent": "sent", "gesendete elemente": "sent",
    "deleted items": "trash", "deleteditems": "trash", "gelöschte elemente": "trash",
    "drafts": "drafts", "entwürfe": "drafts",
    "junk e-mail": "junk", "junk email": "junk", "junkemail": "junk", "junk-e-mail": "junk",
}


class _CaFiles:
    """Which CA file verifies which EWS server (host:port); exchangelib's adapter class is process-wide."""

    lock = threading.Lock()
    by_host: dict[str, str] = {}
    installed = False


def _install_adapter() -> None:
    import requests
    from exchangelib.protocol import BaseProtocol

    with _CaFiles.lock:
        if _CaFiles.installed:
            return

        class VerifyingAdapter(requests.adapters.HTTPAdapter):
            """Verifies each server with the CA file configured for it (the system's CAs otherwise)."""

            def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
                ca_file = _CaFiles.by_host.get(urlsplit(request.url).netloc.lower())
                if ca_file:
                    kwargs["verify"] = ca_file
                return super().send(request, **kwargs)

        BaseProtocol.HTTP_ADAPTER_CLS = VerifyingAdapter
        _CaFiles.installed = True


class EwsSession:
    """The service account's connection to the EWS URL, and one exchangelib Account per mailbox."""

    def __init__(self, account: Account, password: str, timeout: int,
                 sleep: Callable[[float], None] = time.sleep, own_pool: str = "") -> None:
        from exchangelib import BASIC, NTLM, Configuration, Credentials, FailFast

        _install_adapter()
        self.account, self.sleep, self.timeout, self.own_pool = account, sleep, timeout, own_pool
        credentials = Credentials(account.user, password)
        if own_pool:
            # exchangelib shares one connection pool per URL and credentials (their attributes are the key): a
            # watch's stream holds a connection for minutes, so it gets a pool of its own
            credentials.pool = own_pool
        host = urlsplit(account.url).netloc.lower()
        if account.ca_file:
            _CaFiles.by_host[host] = account.ca_file
        else:
            _CaFiles.by_host.pop(host, None)
        self.config = Configuration(service_endpoint=account.url, credentials=credentials,
                                    auth_type=NTLM if account.auth == "ntlm" else BASIC, retry_policy=FailFast(),
                                    max_connections=4)
        self.mailboxes: dict[str, Any] = {}
        self.busy = 0

    def close(self) -> None:
        """Close the connections of this URL and login (exchangelib caches them per URL and credentials: a watch's
        stream, with a pool of its own, is left alone)."""
        try:
            from exchangelib.protocol import Protocol

            protocols = {id(box.protocol): box.protocol for box in self.mailboxes.values()}
            try:
                cached, _ = Protocol[self.config]
                protocols[id(cached)] = cached
                del Protocol[self.config]  # the next session logs in anew
            except KeyError:
                pass
            for protocol in protocols.values():
                protocol.close()
        except Exception:  # noqa: BLE001 - closing only
            pass

    def mailbox(self, address: str) -> Any:
        """The exchangelib Account of a mailbox (impersonated, or the service account's own)."""
        if address not in self.mailboxes:
            from exchangelib import DELEGATE, IMPERSONATION
            from exchangelib import Account as EwsAccount

            own = address == self.own_address
            self.mailboxes[address] = self.call(
                lambda: EwsAccount(primary_smtp_address=address, config=self.config, autodiscover=False,
                                   access_type=DELEGATE if own else IMPERSONATION, default_timezone=None),
                mailbox=address)
        return self.mailboxes[address]

    @property
    def own_address(self) -> str:
        user = self.account.user.lower()
        return user if "@" in user and not self.account.mailboxes else ""

    # -- calls ---------------------------------------------------------------------------------
    def call(self, fn: Callable[[], Any], mailbox: str = "", acting: AfterAction | None = None) -> Any:
        """Run an exchangelib call, sitting out ErrorServerBusy as the server asks; raises SourceError."""
        from exchangelib.errors import ErrorServerBusy

        reconnects = 0
        for attempt in range(MAX_ATTEMPTS):
            try:
                return fn()
            except ErrorServerBusy as e:
                if attempt == MAX_ATTEMPTS - 1:
                    raise FetchError(t("Account %(name)s: Exchange stayed busy (ErrorServerBusy) for %(mailbox)s. "
                                       "The next run continues where this one stopped; if this repeats, give the "
                                       "service account a throttling policy with higher limits.",
                                       name=self.account.name, mailbox=mailbox or self.account.url)) from e
                self.busy += 1
                wait = e.back_off if e.back_off else min(60.0, 2.0 ** attempt)
                self.sleep(min(MAX_BACKOFF, float(wait)) + random.random() * 0.05)
            except SourceError:
                raise
            except Exception as e:  # noqa: BLE001 - translated here
                if _dropped(e) and reconnects < 2:  # a new connection from exchangelib's pool
                    reconnects += 1
                    continue
                raise self.translate(e, mailbox, acting) from e
        raise AssertionError("unreachable: the last attempt returns or raises")

    def translate(self, e: Exception, mailbox: str, acting: AfterAction | None = None) -> SourceError:
        """An exchangelib or requests exception as our error, in a sentence saying what to check."""
        from exchangelib import errors as x

        acc, name = self.account, self.account.name
        text = f"{type(e).__name__}: {e}"
        if isinstance(e, x.ErrorInvalidSyncStateData):
            return SyncStateError(t("Account %(name)s: Exchange no longer accepts the sync state of a folder in "
                                    "%(mailbox)s.", name=name, mailbox=mailbox))
        if isinstance(e, x.UnauthorizedError):
            other = "basic" if acc.auth == "ntlm" else "ntlm"
            return AuthError(t("Account %(name)s: Exchange refused the login of %(user)s with %(auth)s authentication "
                               "(401). Check the user (DOMAIN\\user or user@domain) and the password; if they are "
                               "right, the server may only accept %(other)s authentication (--auth %(other)s).",
                               name=name, user=escaped(acc.user), auth=acc.auth.upper(), other=other))
        if isinstance(e, (x.ErrorImpersonateUserDenied, x.ErrorImpersonationFailed)):
            return FolderError(t("Account %(name)s: the service account %(user)s may not act for the mailbox "
                                 "%(mailbox)s (%(code)s). Assign it the ApplicationImpersonation role for that "
                                 "mailbox: New-ManagementRoleAssignment -Role ApplicationImpersonation -User "
                                 "%(user)s.", name=name, user=escaped(acc.user), mailbox=mailbox,
                                 code=type(e).__name__))
        if isinstance(e, x.ErrorNonExistentMailbox):
            return FolderError(t("Account %(name)s: Exchange has no mailbox %(mailbox)s. Check the address (the "
                                 "mailbox's primary SMTP address).", name=name, mailbox=mailbox))
        if isinstance(e, x.ErrorAccessDenied) and acting is not None:
            return ActionRefusedError(t("Account %(name)s: Exchange refused the after-archive action '%(action)s' in "
                                        "%(mailbox)s (%(reason)s). The mails are archived; the action is tried again "
                                        "on the next run.", name=name, action=escaped(acting), mailbox=mailbox,
                                        reason=escaped(text)))
        if isinstance(e, x.ErrorAccessDenied):
            return FolderError(t("Account %(name)s: Exchange denied access to %(mailbox)s (%(reason)s). Check the "
                                 "service account's rights on that mailbox.", name=name, mailbox=mailbox,
                                 reason=escaped(text)))
        if isinstance(e, x.ResponseMessageError) and acting is not None:
            return ActionRefusedError(t("Account %(name)s: Exchange refused the after-archive action '%(action)s' in "
                                        "%(mailbox)s (%(reason)s). The mails are archived; the action is tried again "
                                        "on the next run.", name=name, action=escaped(acting), mailbox=mailbox,
                                        reason=escaped(text)))
        if isinstance(e, x.ResponseMessageError) and not isinstance(e, x.ErrorTimeoutExpired):
            # an answer from Exchange (exchangelib derives these from TransportError)
            return FetchError(t("Account %(name)s: Exchange answered with an error for %(mailbox)s (%(reason)s). The "
                                "next run tries again.", name=name, mailbox=mailbox or acc.url,
                                reason=escaped(text[:300])))
        lowered = text.lower()
        if isinstance(e, UnicodeEncodeError) and acc.auth == "basic":
            return AuthError(t("Account %(name)s: the password has characters that basic authentication cannot "
                               "carry. Use NTLM (--auth ntlm).", name=name))
        if "certificate" in lowered or "ssl" in lowered:
            return ConnectError(t("Account %(name)s: the certificate of %(url)s is not trusted (%(reason)s). If the "
                                  "server uses your own CA, give its certificate with --ca-file (PEM).", name=name,
                                  url=escaped(acc.url), reason=escaped(text[:300])))
        if isinstance(e, x.TransportError) and ("404" in text or "not found" in lowered):
            return ConnectError(t("Account %(name)s: %(url)s does not answer as Exchange Web Services (%(reason)s). "
                                  "Check the URL: it ends in /EWS/Exchange.asmx.", name=name, url=escaped(acc.url),
                                  reason=escaped(text[:300])))
        if isinstance(e, (x.TransportError, OSError)) or "connection" in lowered or "timed out" in lowered:
            return ConnectError(t("Account %(name)s: %(url)s cannot be reached (%(reason)s). Check the URL, the "
                                  "network and the firewall.", name=name, url=escaped(acc.url),
                                  reason=escaped(text[:300])))
        return FetchError(t("Account %(name)s: Exchange answered with an error for %(mailbox)s (%(reason)s). The next "
                            "run tries again.", name=name, mailbox=mailbox or acc.url, reason=escaped(text[:300])))

    # -- streaming notifications ---------------------------------------------------------------
    def subscribe_streaming(self, mailbox: str, folders: list[Any]) -> str:
        from exchangelib.folders import FolderCollection

        box = self.mailbox(mailbox)
        return self.call(lambda: FolderCollection(account=box, folders=folders).subscribe_to_streaming(
            event_types=STREAM_EVENTS), mailbox)

    def streaming_events(self, mailbox: str, sid: str, minutes: int,
                         stop: threading.Event) -> Iterator[list[tuple[str | None, str | None]]]:
        """GetStreamingEvents: for each notification as it comes, its events' folder ids (where the item is now,
        where it was before a move or copy); ends when Exchange closes the stream after ``minutes``, or soon after
        ``stop`` is set. Raises SourceError (a broken stream, a subscription Exchange no longer knows)."""
        from exchangelib.services import GetStreamingEvents

        service = GetStreamingEvents(account=self.mailbox(mailbox))
        done = threading.Event()

        def interrupt() -> None:  # the keep-alives reach no one: a stop must break the read itself
            while not done.wait(0.25):
                if stop.is_set():
                    _shut_down(getattr(service, "_streaming_response", None))
                    return

        threading.Thread(target=interrupt, daemon=True, name=f"stream-stop-{mailbox}").start()
        try:
            for notification in service.call(subscription_ids=[sid], connection_timeout=minutes):
                yield [(_folder_id(e, "parent_folder_id"), _folder_id(e, "old_parent_folder_id"))
                       for e in notification.events]
        except SourceError:
            raise
        except Exception as e:  # noqa: BLE001 - translated here
            if stop.is_set():
                return  # the stream was broken on purpose
            raise self.translate(e, mailbox) from e
        finally:
            done.set()

    def unsubscribe(self, mailbox: str, sid: str) -> None:
        from exchangelib.services import Unsubscribe

        box = self.mailbox(mailbox)
        self.call(lambda: Unsubscribe(account=box).get(subscription_id=sid), mailbox)

    # -- folders -------------------------------------------------------------------------------
    def folder(self, mailbox: str, path: str, create: bool = False) -> Any:
        """A folder by its name as Outlook shows it ("Posteingang/Kunden", "inbox"); raises FolderError."""
        box = self.mailbox(mailbox)
        parts = [p for p in path.replace("\\", "/").split("/") if p.strip()]
        if not parts:
            raise FolderError(t("Account %(name)s: a folder name is empty.", name=self.account.name))
        first = WELL_KNOWN.get(parts[0].strip().lower())
        if first is not None:
            current = self.call(lambda: getattr(box, first), mailbox)
        else:
            current = self._child(self.call(lambda: box.msg_folder_root, mailbox), parts[0], mailbox, path, create)
        for part in parts[1:]:
            current = self._child(current, part, mailbox, path, create)
        return current

    def _child(self, parent: Any, name: str, mailbox: str, path: str, create: bool) -> Any:
        wanted = name.strip().lower()
        children = self.call(lambda: list(parent.children), mailbox)
        found = next((c for c in children if (c.name or "").lower() == wanted), None)
        if found is not None:
            return found
        if create:
            from exchangelib import Folder as EwsFolder

            folder = EwsFolder(parent=parent, name=name.strip())
            self.call(folder.save, mailbox)
            return folder
        raise FolderError(t("Account %(name)s: the mailbox %(mailbox)s has no folder '%(folder)s'. Write it as Outlook "
                            "shows it, e.g. Posteingang/Kunden or inbox.", name=self.account.name, mailbox=mailbox,
                            folder=escaped(path)))

    def sync_page(self, mailbox: str, folder: Any, state: str | None, fields: list[str],
                  page: int = SYNC_PAGE) -> tuple[list[tuple[str, Any]], str, bool]:
        """One SyncFolderItems page: (changes, the new sync state, whether it was the last page)."""
        from exchangelib.items import ID_ONLY
        from exchangelib.services import SyncFolderItems

        box = self.mailbox(mailbox)

        def one() -> tuple[list[tuple[str, Any]], str, bool]:
            svc = SyncFolderItems(account=box)
            extra = {f for f in folder.normalize_fields(fields=fields) if not f.field.is_attribute}
            changes = list(svc.call(folder=folder, shape=ID_ONLY, additional_fields=extra, sync_state=state,
                                    ignore=None, max_changes_returned=page, sync_scope=None))
            for change in changes:
                if isinstance(change, Exception):
                    raise change
            return changes, svc.sync_state, bool(svc.includes_last_item_in_range)

        return self.call(one, mailbox)

    def fetch(self, mailbox: str, ids: list[str], fields: list[str]) -> dict[str, Any]:
        """Items by id with ``fields``; gone ones left out."""
        from exchangelib.errors import ErrorItemNotFound

        box = self.mailbox(mailbox)
        out: dict[str, Any] = {}

        def one() -> None:
            for item_id, item in zip(ids, box.fetch(ids=[(i, None) for i in ids], only_fields=fields,
                                                    chunk_size=FETCH_CHUNK), strict=True):
                if isinstance(item, ErrorItemNotFound):
                    continue
                if isinstance(item, Exception):
                    raise item
                out[item_id] = item

        self.call(one, mailbox)
        return out

    def apply(self, mailbox: str, action: AfterAction, ids: list[str]) -> None:
        """An after-archive action; items gone already are done. Raises ActionRefusedError when refused."""
        from exchangelib.errors import ErrorItemNotFound
        from exchangelib.items import ALWAYS_OVERWRITE, HARD_DELETE, MOVE_TO_DELETED_ITEMS

        if action.kind == "none" or not ids:
            return
        box = self.mailbox(mailbox)
        items = list(self.fetch(mailbox, ids, ["is_read"]).values())  # current change keys
        if not items:
            return
        if action.kind == "read":
            for item in items:
                item.is_read = True
            results = self.call(lambda: box.bulk_update([(i, ["is_read"]) for i in items],
                                                        conflict_resolution=ALWAYS_OVERWRITE,
                                                        chunk_size=FETCH_CHUNK), mailbox, action)
        elif action.kind == "move":
            target = self.folder(mailbox, action.target, create=True)
            results = self.call(lambda: box.bulk_move(items, to_folder=target, chunk_size=FETCH_CHUNK), mailbox,
                                action)
        elif action.kind in ("delete", "delete-hard"):
            kind = HARD_DELETE if action.kind == "delete-hard" else MOVE_TO_DELETED_ITEMS
            results = self.call(lambda: box.bulk_delete(items, delete_type=kind, chunk_size=FETCH_CHUNK), mailbox,
                                action)
        else:
            raise ConfigError(t("Account %(name)s: Exchange accounts cannot '%(action)s' after archiving.",
                                name=self.account.name, action=escaped(action)))
        for result in results:
            if isinstance(result, ErrorItemNotFound):
                continue
            if isinstance(result, Exception):
                raise self.translate(result, mailbox, action)


def _folder_id(event: Any, name: str) -> str | None:
    folder = getattr(event, name, None)
    return getattr(folder, "id", None)


def _shut_down(response: Any) -> None:
    """Break a streamed HTTP response another thread is reading: shutdown wakes its blocked read (close would not)."""
    sock = getattr(getattr(getattr(response, "raw", None), "_connection", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class SyncStateError(FetchError):
    """Exchange rejected a folder's sync state (ErrorInvalidSyncStateData): read the folder again."""


def _dropped(e: Exception) -> bool:
    """True for a connection that broke or timed out (retried on another), not for an answer."""
    import requests
    from exchangelib import errors as x

    return isinstance(e, (x.ErrorTimeoutExpired, requests.exceptions.ConnectionError, ConnectionError)) and \
        not isinstance(e, requests.exceptions.SSLError)


class EwsSource(Source):
    """Exchange on-premises through EWS: one unit per mailbox and folder, the cursor its SyncFolderItems state."""

    kind = "ews"
    title = Lang("Exchange (EWS)", "Exchange (EWS)")
    page = "ews"
    watch_mode = "streaming"  # streaming notifications (GetStreamingEvents), one stream per mailbox
    actions = ("none", "read", "move", "delete", "delete-hard")
    parallel_groups = 4  # mailboxes side by side (exchangelib's sessions are thread-safe)
    settings = (
        Setting("url", "text", Lang("EWS URL", "EWS-URL"),
                Lang("The server's EWS address, e.g. https://mail.example.com/EWS/Exchange.asmx.",
                     "Die EWS-Adresse des Servers, z. B. https://mail.example.com/EWS/Exchange.asmx."),
                required=True, bound=True, lower=False),
        Setting("user", "text", Lang("User", "Benutzer"),
                Lang("The (service) account that logs in: DOMAIN\\user or user@domain.",
                     "Das (Dienst-)Konto, das sich anmeldet: DOMAIN\\benutzer oder benutzer@domain."),
                required=True, bound=True),
        Setting("password", "secret", Lang("Password", "Passwort"),
                Lang("Read the password from the first line of standard input.",
                     "Das Passwort aus der ersten Zeile der Standardeingabe lesen."), option="--password-stdin"),
        Setting("auth", "choice", Lang("Authentication", "Authentifizierung"),
                Lang("How to log in: ntlm (Windows integrated) or basic.",
                     "Anmeldeverfahren: ntlm (Windows-integriert) oder basic."),
                default="ntlm", choices=("ntlm", "basic"), bound=True),
        Setting("mailboxes", "list", Lang("Mailboxes", "Postfächer"),
                Lang("Mailbox to archive by impersonation (repeatable; needs the ApplicationImpersonation role). "
                     "Default: the user's own mailbox.", "Per Impersonation zu archivierendes Postfach (mehrfach; "
                     "braucht die Rolle ApplicationImpersonation). Standard: das eigene Postfach des Benutzers."),
                option="--mailbox", lower=True),
        Setting("folders", "list", Lang("Folders", "Ordner"),
                Lang("Folder to archive as Outlook shows it (repeatable): inbox or Posteingang, Posteingang/Kunden. "
                     "Default: inbox.", "Zu archivierender Ordner, wie Outlook ihn zeigt (mehrfach): inbox oder "
                     "Posteingang, Posteingang/Kunden. Standard: inbox."), default=("inbox",), option="--folder"),
        Setting("ca_file", "pem", Lang("CA certificate (PEM, optional)", "CA-Zertifikat (PEM, optional)"),
                Lang("A CA certificate (PEM) to trust for this server, for an internal CA.",
                     "Ein CA-Zertifikat (PEM), dem für diesen Server vertraut wird, für eine eigene CA."), default=""),
        UNREAD_ONLY,
        after_setting(actions),
    )

    @classmethod
    def validate(cls, account: Account) -> None:
        super().validate(account)
        url = urlsplit(str(account.settings.get("url", "")))
        if url.scheme != "https" or not url.hostname:
            raise ConfigError(t("Account %(name)s: the EWS URL must start with https:// and name the server, e.g. "
                                "https://mail.example.com/EWS/Exchange.asmx.", name=account.name))
        if not account.settings.get("mailboxes") and "@" not in str(account.settings.get("user", "")):
            raise ConfigError(t("Account %(name)s: name the mailbox to archive with --mailbox, or log in as "
                                "user@domain to archive the user's own mailbox.", name=account.name))
        check_folder_names(account)

    @classmethod
    def describe(cls, account: Account) -> str:
        mailboxes = ", ".join(account.mailboxes) or f"{account.user} (own mailbox)"
        return (f"{account.name}: ews {account.url}, user {account.user}, auth {account.auth}, mailboxes {mailboxes}, "
                f"folders {', '.join(account.folders)}, {'unread only' if account.unread_only else 'all mails'}, "
                f"after archive: {account.after}{'' if account.enabled else ', disabled'}")

    def __enter__(self) -> EwsSource:
        self.session = EwsSession(self.account, self.secret, self.timeout, own_pool=self.own_pool)
        self._folders: dict[str, Any] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def mailbox_addresses(self) -> list[str]:
        return self.watch_groups(self.account)

    @classmethod
    def watch_groups(cls, account: Account) -> list[str]:
        return list(account.mailboxes) or [account.user.lower()]

    def stream_subscribe(self, group: str) -> str:
        """A streaming subscription to new mail in the mailbox's archived folders."""
        folders = [f for f in self.folders() if f.group == group]
        self._streamed = {self._folder(f).id: f.label for f in folders}
        return self.session.subscribe_streaming(group, [self._folder(f) for f in folders])

    def stream(self, group: str, sid: str, minutes: int, stop: threading.Event) -> Iterator[set[str]]:
        for events in self.session.streaming_events(group, sid, minutes, stop):
            labels: set[str] = set()
            for parent, old_parent in events:
                if parent in self._streamed:
                    labels.add(self._streamed[parent])
                elif parent is None and old_parent is None:  # an event naming no folder: look everywhere
                    labels |= set(self._streamed.values())
                # else a mail that left a watched folder (the after-archive move): nothing new
            yield labels

    def stream_unsubscribe(self, group: str, sid: str) -> None:
        self.session.unsubscribe(group, sid)

    def folders(self) -> list[Folder]:
        acc = self.account
        return [Folder(f"{mailbox}/{name}", f"ews:{acc.name}:{mailbox}/{name}", (mailbox, name), mailbox)
                for mailbox in self.mailbox_addresses() for name in acc.folders]

    def _folder(self, folder: Folder) -> Any:
        if folder.label not in self._folders:
            self._folders[folder.label] = self.session.folder(*folder.data)
        return self._folders[folder.label]

    def open(self, folder: Folder, ledger: Ledger) -> None:
        self._folder(folder)

    def batches(self, folder: Folder, ledger: Ledger) -> Iterator[Batch]:
        mailbox, _ = folder.data
        ews_folder = self._folder(folder)
        state = ledger.cursor
        while True:
            try:
                changes, new_state, last = self.session.sync_page(mailbox, ews_folder, state, ["is_read"])
            except SyncStateError:
                if state is None:
                    raise
                ews_folder.item_sync_state = None
                ledger.restart(t("Account %(name)s: Exchange no longer accepts the sync state of %(folder)s; the "
                                 "folder was read again, duplicates skipped.", name=self.account.name,
                                 folder=folder.label), forget_pending=False)
                state = None
                continue
            ids = [item.id for kind, item in changes if kind == "create" and not
                   (self.account.unread_only and getattr(item, "is_read", False))]
            chunks = [ids[i:i + FETCH_CHUNK] for i in range(0, len(ids), FETCH_CHUNK)] or [[]]
            for n, chunk in enumerate(chunks):
                yield Batch([Item(self.key(folder, i), i) for i in chunk], new_state if n == len(chunks) - 1 else None)
            if last or new_state == state:
                return
            state = new_state

    def fetch(self, folder: Folder, items: list[Item], spool_dir: Path) -> list[RawMail]:
        mailbox, _ = folder.data
        got = self.session.fetch(mailbox, [i.ref for i in items], ["mime_content", "datetime_received"])
        out = []
        for item in items:
            found = got.get(item.ref)
            if found is None or not found.mime_content:
                continue
            mime = found.mime_content
            received = found.datetime_received.strftime("%Y-%m-%dT%H:%M:%SZ") if found.datetime_received else None
            out.append(RawMail(mime if isinstance(mime, bytes) else mime.encode("utf-8"), self.account.name,
                               folder.label, item.key, received=received))
        return out

    def apply(self, folder: Folder, action: AfterAction, refs: list) -> None:
        self.session.apply(folder.data[0], action, refs)

    def probe(self) -> ProbeReport:
        report = ProbeReport()
        for folder in self.folders():
            try:
                ews_folder = self._folder(folder)
                report.folders.append(FolderReport(folder.label, int(ews_folder.total_count or 0)))
            except FolderError as e:
                report.folders.append(FolderReport(folder.label, error=e))
        action = self.account.action
        mailbox = self.mailbox_addresses()[0]
        if action.kind == "move":
            try:
                self.session.folder(mailbox, action.target)
                report.action = t("the folder '%(folder)s' exists", folder=escaped(action.target))
            except FolderError:
                report.action = t("the folder '%(folder)s' will be created at the first archived mail",
                                  folder=escaped(action.target))
        try:
            root = self.session.call(lambda: self.session.mailbox(mailbox).msg_folder_root, mailbox)
            report.available = sorted(f.name for f in self.session.call(lambda: list(root.children), mailbox)
                                      if f.name)
        except SourceError:
            pass
        return report

    def inbox(self) -> list[InboxReport]:
        out = []
        for mailbox in self.mailbox_addresses():
            inbox = self.session.folder(mailbox, "inbox")
            changes, _, _ = self.session.sync_page(mailbox, inbox, None, ["subject"], page=1)
            subjects = [getattr(item, "subject", "") or "" for kind, item in changes if kind == "create"]
            out.append(InboxReport(mailbox, inbox.name or "Inbox", int(inbox.total_count or 0),
                                   int(inbox.unread_count or 0), subjects[0] if subjects else None))
        return out
