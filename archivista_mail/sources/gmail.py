"""Google Workspace through the Gmail API: a service account with domain-wide delegation, one mailbox at a time.

Google's own client libraries carry the requests (google-auth signs the service account's JWT and
impersonates each mailbox with ``with_subject``; googleapiclient builds the calls and the HTTP
batches). This adapter adds what an archive needs:
- the narrowest scope for the after-archive action (readonly; gmail.modify to mark, label or trash;
  https://mail.google.com/ only for ``--after delete``);
- the original bytes (``format=raw``), many messages per HTTP batch request;
- Gmail's per-user quota (250 units per second, ``messages.get`` costs 5) kept on our side with a
  token bucket, so the server never has to refuse; rate-limit answers anyway (429, 403
  rateLimitExceeded/userRateLimitExceeded, 5xx) are retried with exponential backoff, part by part;
- the cursor: the mailbox's ``historyId``. The first run takes it from the profile *before* listing
  the label, then lists everything; later runs read ``history.list``. A 404 for an expired start id
  lists the label again (the ledger and content hashes skip what is archived).
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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

READONLY = "https://www.googleapis.com/auth/gmail.readonly"
MODIFY = "https://www.googleapis.com/auth/gmail.modify"
FULL = "https://mail.google.com/"
QUOTA_PER_SECOND = 250  # Gmail's per-user limit, in quota units
COST = {"get": 5, "list": 5, "history": 2, "profile": 1, "labels": 1, "modify": 5, "batchModify": 50, "trash": 5,
        "batchDelete": 50, "createLabel": 5, "watch": 100, "stop": 50}
PUBSUB = "https://pubsub.googleapis.com/v1"
SCOPE_PUBSUB = "https://www.googleapis.com/auth/pubsub"
_TOPIC = re.compile(r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/topics/[A-Za-z][\w.~+%-]{2,254}$")
_SUBSCRIPTION = re.compile(r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/subscriptions/[A-Za-z][\w.~+%-]{2,254}$")
FETCH_BATCH = 40  # messages.get per HTTP batch request: 200 of the 250 units a second
MAX_ATTEMPTS = 8
LIST_PAGE = 500  # messages.list and history.list: the most Gmail returns per page
KEY_FIELDS = ("type", "client_email", "private_key", "client_id", "token_uri")


def scopes_for(action: AfterAction) -> list[str]:
    """The one scope the account needs: read only, modify for read/label/trash, full access to delete."""
    if action.kind == "delete":
        return [FULL]
    return [MODIFY] if action.kind in ("read", "label", "trash") else [READONLY]


class QuotaWindow:
    """Gmail's per-user quota on our side: ``take(units)`` waits until the units sent in the last second,
    these included, stay within ``limit``.

    A sliding window rather than a token bucket: a bucket that starts full lets nearly twice its rate
    through in the first second. The limit is below Google's 250 units a second and the window longer
    than a second (``span``), so that requests that arrive bunched up at Google's end (up to 0.2 s
    closer together than they were sent) still fit within any second there.
    """

    def __init__(self, limit: float = QUOTA_PER_SECOND * 0.9, span: float = 1.2,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit, self.span, self.clock, self.sleep = limit, span, clock, sleep
        self.sent: deque[tuple[float, float]] = deque()  # (when, units)
        self.lock = threading.Lock()

    def take(self, units: float) -> None:
        units = min(units, self.limit)
        with self.lock:
            while True:
                now = self.clock()
                while self.sent and self.sent[0][0] <= now - self.span:
                    self.sent.popleft()
                used = sum(u for _, u in self.sent)
                if used + units <= self.limit:
                    self.sent.append((now, units))
                    return
                # wait until enough of the oldest units have left the window
                freed, until = used, now
                for when, spent in self.sent:
                    freed -= spent
                    until = when + self.span
                    if freed + units <= self.limit:
                        break
                self.sleep(max(0.001, until - now))


def _error_reason(error: Any) -> tuple[int, str, str]:
    """Status, reason (e.g. rateLimitExceeded, accessNotConfigured) and message of a googleapiclient HttpError."""
    status = int(getattr(getattr(error, "resp", None), "status", 0) or 0)
    reason, message = "", str(getattr(error, "reason", "") or "")
    try:
        body = json.loads(error.content.decode("utf-8"))["error"]
        message = body.get("message", message)
        reasons = [e.get("reason", "") for e in body.get("errors", [])]
        reasons += [d.get("reason", "") for d in body.get("details", []) if isinstance(d, dict)]
        reason = next((r for r in reasons if r), body.get("status", ""))
    except (AttributeError, ValueError, KeyError, TypeError):
        pass
    return status, reason, message


def _retryable(status: int, reason: str) -> bool:
    return status in (429, 500, 502, 503, 504) or (status == 403 and reason in (
        "rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"))


class GmailSession:
    """The service account's connection to one mailbox (impersonated). Not thread-safe: one per thread."""

    def __init__(self, account: Account, info: dict, mailbox: str, scopes: list[str], timeout: int,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import google_auth_httplib2
        import httplib2
        from google.oauth2 import service_account
        from googleapiclient.discovery import build

        self.account, self.mailbox, self.scopes, self.sleep = account, mailbox, scopes, sleep
        self.client_id = str(info.get("client_id", "?"))
        credentials = service_account.Credentials.from_service_account_info(info, scopes=scopes).with_subject(mailbox)
        self.credentials = credentials
        self.http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(timeout=timeout))
        self.service = build("gmail", "v1", http=self.http, cache_discovery=False, static_discovery=True)
        self.quota = QuotaWindow(sleep=sleep)
        self.retries = 0
        self.reconnects = 0
        self.label_ids: dict[str, str] | None = None

    def close(self) -> None:
        """Close the HTTP connections."""
        for connection in list(self.http.http.connections.values()):
            connection.close()
        self.http.http.connections.clear()

    def authenticate(self) -> None:
        """Get the access token now, so a delegation problem is reported as such. Raises AuthError/ConnectError."""
        import google.auth.exceptions
        import google_auth_httplib2

        try:
            self.credentials.refresh(google_auth_httplib2.Request(self.http.http))
        except google.auth.exceptions.RefreshError as e:
            raise _token_failure(self.account, self.client_id, self.mailbox, self.scopes, e) from e
        except (google.auth.exceptions.TransportError, OSError) as e:  # OSError: a proxy refusing (PySocks)
            raise ConnectError(t("Account %(name)s: Google's login service cannot be reached (%(reason)s). Check the "
                                 "network, proxy and firewall of this machine.", name=self.account.name,
                                 reason=str(e).strip())) from e

    # -- requests -------------------------------------------------------------------------------
    def call(self, request: Any, cost: str, acting: AfterAction | None = None, missing: Any = None) -> Any:
        """Execute one request within the quota, retrying rate limits with backoff. Raises SourceError.

        ``missing``: what a 404 returns instead of an error (a message gone already), or an exception class
        to raise.
        """
        from googleapiclient.errors import HttpError

        for attempt in range(MAX_ATTEMPTS):
            self.quota.take(COST[cost])
            try:
                result = request.execute(num_retries=0)
                self.reconnects = 0
                return result
            except HttpError as e:
                status, reason, message = _error_reason(e)
                if status == 404 and missing is not None:
                    if isinstance(missing, type) and issubclass(missing, Exception):
                        raise missing(message) from e
                    return missing
                if _retryable(status, reason) and attempt < MAX_ATTEMPTS - 1:
                    self.retries += 1
                    self.sleep(self.backoff(attempt))
                    continue
                raise self.error(status, reason, message, acting) from e
            except Exception as e:  # httplib2 / socket / TLS / token refresh
                if self.reconnect(e):
                    continue
                raise self.transport_error(e) from e
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def backoff(attempt: int) -> float:
        """Exponential backoff with jitter, as Google asks: 1, 2, 4 ... 32 s (plus up to 1 s)."""
        return min(32.0, 2.0 ** attempt) * 0.5 + random.random() * 0.5

    def reconnect(self, e: Exception) -> bool:
        """True when a dropped connection may be retried on a new one (twice in a row at most)."""
        import http.client

        import google.auth.exceptions

        if isinstance(e, google.auth.exceptions.RefreshError) or \
                not isinstance(e, (OSError, http.client.HTTPException)) or self.reconnects >= 2:
            return False
        self.reconnects += 1
        self.close()  # httplib2 would reuse the broken connection
        return True

    def transport_error(self, e: Exception) -> SourceError:
        import google.auth.exceptions

        if isinstance(e, google.auth.exceptions.RefreshError):
            return _token_failure(self.account, self.client_id, self.mailbox, self.scopes, e)
        return FetchError(t("Account %(name)s: the request to the Gmail API for %(mailbox)s failed (%(reason)s). The "
                            "next run continues where this one stopped.", name=self.account.name,
                            mailbox=self.mailbox, reason=f"{type(e).__name__}: {e}"))

    def error(self, status: int, reason: str, message: str, acting: AfterAction | None = None) -> SourceError:
        name, mailbox = self.account.name, self.mailbox
        if reason in ("accessNotConfigured", "SERVICE_DISABLED"):
            return AuthError(t("Account %(name)s: the Gmail API is not enabled for the service account's Google Cloud "
                               "project (%(message)s). Enable the Gmail API in the Google Cloud console (APIs & "
                               "Services, Library, Gmail API) and run again.", name=name, message=message))
        if reason in ("insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"):
            error_class = ActionRefusedError if acting is not None else AuthError
            return error_class(t("Account %(name)s: Google refused %(what)s for %(mailbox)s: the access granted does "
                                 "not cover it. In the Google Admin console (Security, API controls, Domain-wide "
                                 "delegation) give the service account's client ID the scope %(scope)s.", name=name,
                                 what=t("the after-archive action '%(action)s'", action=escaped(acting))
                                 if acting is not None else t("the request"), mailbox=mailbox,
                                 scope=" ".join(self.scopes)))
        if acting is not None and status in (400, 403, 404):
            return ActionRefusedError(t("Account %(name)s: Gmail refused the after-archive action '%(action)s' for "
                                        "%(mailbox)s (%(status)s %(reason)s: %(message)s). The mails are archived; "
                                        "the action is tried again on the next run.", name=name,
                                        action=escaped(acting), mailbox=mailbox, status=status, reason=reason,
                                        message=message))
        if status == 401:
            return AuthError(t("Account %(name)s: Google rejected the access token for %(mailbox)s (%(message)s). "
                               "Check that the service account and its key still exist.", name=name, mailbox=mailbox,
                               message=message))
        if status == 403 and reason in ("failedPrecondition", "FAILED_PRECONDITION") or "Mail service not enabled" \
                in message:
            return FolderError(t("Account %(name)s: the mailbox %(mailbox)s has no Gmail service (%(message)s). "
                                 "Check its licence in the Google Admin console.", name=name, mailbox=mailbox,
                                 message=message))
        if _retryable(status, reason):
            return FetchError(t("Account %(name)s: Gmail kept limiting the requests for %(mailbox)s (%(status)s "
                                "%(reason)s). The next run continues where this one stopped.", name=name,
                                mailbox=mailbox, status=status, reason=reason))
        return FetchError(t("Account %(name)s: the Gmail API answered %(status)s %(reason)s for %(mailbox)s: "
                            "%(message)s. The next run tries again.", name=name, status=status, reason=reason,
                            mailbox=mailbox, message=message))

    # -- mailbox --------------------------------------------------------------------------------
    def users(self) -> Any:
        return self.service.users()

    def profile(self) -> dict:
        return self.call(self.users().getProfile(userId="me"), "profile")

    def labels(self) -> dict[str, str]:
        """The mailbox's labels: name (and, for system labels, id) -> id."""
        if self.label_ids is None:
            found = self.call(self.users().labels().list(userId="me"), "labels").get("labels", [])
            self.label_ids = {}
            for label in found:
                self.label_ids[label["name"]] = label["id"]
                if label.get("type") == "system":
                    self.label_ids[label["id"]] = label["id"]
        return self.label_ids

    def label_id(self, name: str) -> str:
        """The id of a label as the user sees it (INBOX, SENT, Kunden/Müller); raises FolderError if missing."""
        labels = self.labels()
        found = labels.get(name)
        if found is None and labels.get(name.upper()) == name.upper():  # a system label: inbox is INBOX
            found = name.upper()
        if found is None:
            lowered = {k.lower(): v for k, v in labels.items()}
            found = lowered.get(name.lower())
        if found is None:
            user = sorted(k for k, v in labels.items() if k != v)
            raise FolderError(t("Account %(name)s: the mailbox %(mailbox)s has no label '%(label)s'. Its labels: "
                                "%(labels)s.", name=self.account.name, mailbox=self.mailbox, label=escaped(name),
                                labels=", ".join(["INBOX", "SENT", *user])))
        return found

    def label_info(self, label_id: str) -> dict:
        return self.call(self.users().labels().get(userId="me", id=label_id), "labels")

    def list_ids(self, label_id: str, unread_only: bool) -> list[str]:
        """Every message id with the label (newest first, as Gmail lists them)."""
        ids: list[str] = []
        token = None
        labels = [label_id, "UNREAD"] if unread_only and label_id != "UNREAD" else [label_id]
        while True:
            page = self.call(self.users().messages().list(userId="me", labelIds=labels, maxResults=LIST_PAGE,
                                                          pageToken=token, includeSpamTrash=label_id in (
                                                              "SPAM", "TRASH")), "list")
            ids.extend(m["id"] for m in page.get("messages", []))
            token = page.get("nextPageToken")
            if not token:
                return ids

    def history(self, start: str, label_id: str, token: str | None) -> dict:
        """One page of the mailbox's history since ``start`` for the label. Raises HistoryExpiredError (404)."""
        request = self.users().history().list(userId="me", startHistoryId=start, labelId=label_id,
                                              historyTypes=["messageAdded", "labelAdded"], maxResults=LIST_PAGE,
                                              pageToken=token)
        return self.call(request, "history", missing=HistoryExpiredError)

    def fetch_raw(self, ids: list[str]) -> dict[str, dict]:
        """``format=raw`` of each id, FETCH_BATCH per HTTP batch request; gone ones left out. Raises SourceError."""
        return self.batched(ids, lambda i: self.users().messages().get(userId="me", id=i, format="raw"), "get")

    def batched(self, ids: list[str], request: Callable[[str], Any], cost: str,
                acting: AfterAction | None = None) -> dict[str, Any]:
        """``request(id)`` for each id, FETCH_BATCH per HTTP batch request, parts that were rate limited asked
        again with backoff; returns the answers by id (ids gone, 404, left out). Raises SourceError."""
        out: dict[str, Any] = {}
        waiting = list(ids)
        attempt = 0
        while waiting:
            chunk, waiting = waiting[:FETCH_BATCH], waiting[FETCH_BATCH:]
            again = self._batch(chunk, request, cost, out, acting)
            if again:
                if attempt >= MAX_ATTEMPTS - 1:
                    raise self.error(429, "rateLimitExceeded", "", acting)
                self.retries += 1
                self.sleep(self.backoff(attempt))
                attempt += 1
                waiting = again + waiting
            else:
                attempt = 0
        return out

    def _batch(self, chunk: list[str], request: Callable[[str], Any], cost: str, out: dict[str, Any],
               acting: AfterAction | None) -> list[str]:
        """One HTTP batch request; returns the ids to ask for again (rate limited, or the connection dropped)."""
        from googleapiclient.errors import HttpError

        again: list[str] = []
        problem: list[SourceError] = []

        def done(request_id: str, response: Any, exception: Exception | None) -> None:
            if exception is None:
                out[request_id] = response
                return
            if isinstance(exception, HttpError):
                status, reason, message = _error_reason(exception)
                if _retryable(status, reason):
                    again.append(request_id)
                elif status != 404:  # 404: deleted since it was listed: nothing to archive, nothing to do
                    problem.append(self.error(status, reason, message, acting))
            else:
                problem.append(self.transport_error(exception))

        batch = self.service.new_batch_http_request(callback=done)
        for message_id in chunk:
            batch.add(request(message_id), request_id=message_id)
        self.quota.take(COST[cost] * len(chunk))
        try:
            batch.execute()
        except HttpError as e:
            status, reason, message = _error_reason(e)
            if _retryable(status, reason):
                return chunk
            raise self.error(status, reason, message, acting) from e
        except Exception as e:  # noqa: BLE001 - translated
            if self.reconnect(e):
                return chunk
            raise self.transport_error(e) from e
        self.reconnects = 0
        if problem:
            raise problem[0]
        return again

    def apply(self, action: AfterAction, ids: list[str]) -> None:
        """An after-archive action on messages; ActionRefusedError when Gmail refuses it."""
        users = self.users()
        if action.kind == "none" or not ids:
            return
        if action.kind in ("read", "label"):
            body: dict[str, list[str]] = {"ids": []}
            if action.kind == "read":
                body["removeLabelIds"] = ["UNREAD"]
            else:
                body["addLabelIds"] = [self.ensure_label(action)]
            for i in range(0, len(ids), 1000):
                body["ids"] = ids[i:i + 1000]
                self.call(users.messages().batchModify(userId="me", body=dict(body)), "batchModify", acting=action)
        elif action.kind == "trash":  # one call per message, so in HTTP batches; a message gone already is done
            self.batched(ids, lambda i: users.messages().trash(userId="me", id=i), "trash", acting=action)
        elif action.kind == "delete":
            for i in range(0, len(ids), 1000):
                self.call(users.messages().batchDelete(userId="me", body={"ids": ids[i:i + 1000]}), "batchDelete",
                          acting=action)
        else:
            raise ConfigError(t("Account %(name)s: Gmail accounts cannot '%(action)s' after archiving.",
                                name=self.account.name, action=escaped(action)))

    def ensure_label(self, action: AfterAction) -> str:
        """The id of the action's label, created if the mailbox does not have it yet."""
        try:
            return self.label_id(action.target)
        except FolderError:
            created = self.call(self.users().labels().create(userId="me", body={
                "name": action.target, "labelListVisibility": "labelShow", "messageListVisibility": "show"}),
                "createLabel", acting=action)
            self.label_ids = None
            return created["id"]

    def first_subject(self, label_id: str) -> str | None:
        """The subject of the newest message with the label; None if there is none."""
        page = self.call(self.users().messages().list(userId="me", labelIds=[label_id], maxResults=1), "list")
        messages = page.get("messages") or []
        if not messages:
            return None
        meta = self.call(self.users().messages().get(userId="me", id=messages[0]["id"], format="metadata",
                                                     metadataHeaders=["Subject"]), "get")
        headers = meta.get("payload", {}).get("headers", [])
        return next((h.get("value", "") for h in headers if h.get("name", "").lower() == "subject"), "")


class HistoryExpiredError(FetchError):
    """history.list answered 404: the start id is older than Gmail keeps history; list the label again."""


def _token_failure(acc: Account, client_id: str, mailbox: str, scopes: list[str], e: Exception) -> SourceError:
    """What Google's token endpoint said, as an error naming the account and what to fix (an unknown
    mailbox fails that mailbox only: FolderError)."""
    return (FolderError if "invalid_grant" in str(e) and ("email" in str(e).lower() or "user id" in str(e).lower())
            else AuthError)(_token_problem(acc, client_id, mailbox, scopes, e))


def _token_problem(acc: Account, client_id: str, mailbox: str, scopes: list[str], e: Exception) -> Text:
    detail = str(e.args[0] if e.args else e)
    scope = " ".join(scopes)
    if "unauthorized_client" in detail:
        return t("Account %(name)s: Google refused to let the service account act for %(mailbox)s "
                 "(unauthorized_client): domain-wide delegation is not set up for its client ID with the scope "
                 "%(scope)s. In the Google Admin console (Security, API controls, Domain-wide delegation) add the "
                 "client ID %(client)s with that scope.", name=acc.name, mailbox=mailbox, scope=scope,
                 client=client_id)
    if "invalid_grant" in detail and ("email" in detail.lower() or "user" in detail.lower()):
        return t("Account %(name)s: Google does not know the mailbox %(mailbox)s (invalid_grant). Check the address: "
                 "it must be a user of the Google Workspace domain.", name=acc.name, mailbox=mailbox)
    if "invalid_grant" in detail:
        return t("Account %(name)s: Google rejected the service account's key (%(detail)s). The key may have been "
                 "deleted or replaced: create a new JSON key for the service account and add it again with "
                 "--service-account-file.", name=acc.name, detail=escaped(detail[:200]))
    if "disabled" in detail.lower():
        return t("Account %(name)s: the service account is disabled (%(detail)s). Enable it in the Google Cloud "
                 "console.", name=acc.name, detail=escaped(detail[:200]))
    return t("Account %(name)s: Google refused the service account's login for %(mailbox)s (%(detail)s). Check the "
             "key file and the domain-wide delegation.", name=acc.name, mailbox=mailbox, detail=escaped(detail[:200]))


def key_info(secret: str) -> dict:
    """The service account key (the JSON key file's content) as a dict; raises ConfigError if it is not one."""
    try:
        info = json.loads(secret)
    except ValueError:
        info = None
    if not isinstance(info, dict) or info.get("type") != "service_account" or \
            any(not info.get(k) for k in KEY_FIELDS):
        raise ConfigError(t("This is not a service account's JSON key file. In the Google Cloud console open the "
                            "service account, Keys, Add key, JSON, and give the downloaded file."))
    return info


class GmailSource(Source):
    """Google Workspace mailboxes through the Gmail API: one unit per mailbox and label, the cursor a historyId."""

    kind = "gmail"
    title = Lang("Google Workspace", "Google Workspace")
    page = "gmail"
    actions = ("none", "read", "label", "trash", "delete")
    parallel_groups = 4  # mailboxes side by side: Gmail's quota is per mailbox
    folder_setting = "labels"
    settings = (
        Setting("service_account", "secret", Lang("Service account key (JSON)", "Dienstkonto-Schlüssel (JSON)"),
                Lang("The service account's JSON key file (stored encrypted; the file can be deleted afterwards).",
                     "Die JSON-Schlüsseldatei des Dienstkontos (verschlüsselt gespeichert; die Datei kann danach "
                     "gelöscht werden)."), option="--service-account-file", secret_from="file"),
        Setting("mailboxes", "list", Lang("Mailboxes", "Postfächer"),
                Lang("Mailbox address to archive (repeatable); the service account acts for each.",
                     "Zu archivierende Postfachadresse (mehrfach); das Dienstkonto handelt für jede."),
                required=True, option="--mailbox", lower=True),
        Setting("labels", "list", Lang("Labels", "Labels"),
                Lang("Label to archive, as Gmail shows it (repeatable): INBOX, SENT or a user label such as "
                     "Kunden/Müller. Default: INBOX.", "Zu archivierendes Label, wie Gmail es zeigt (mehrfach): "
                     "INBOX, SENT oder ein eigenes Label wie Kunden/Müller. Standard: INBOX."),
                default=("INBOX",), option="--label"),
        UNREAD_ONLY,
        after_setting(actions),
        Setting("pubsub_topic", "text", Lang("Pub/Sub topic (push, optional)", "Pub/Sub-Topic (Push, optional)"),
                Lang("projects/PROJECT/topics/TOPIC that Gmail may publish to (gmail-api-push@system.gserviceaccount.com "
                     "as Publisher): with a subscription, new mail is archived within seconds (watch service).",
                     "projects/PROJEKT/topics/TOPIC, in das Gmail veröffentlichen darf (gmail-api-push@system."
                     "gserviceaccount.com als Publisher): mit einem Abonnement werden neue Mails innert Sekunden "
                     "archiviert (Überwachungsdienst)."), default=""),
        Setting("pubsub_subscription", "text", Lang("Pub/Sub pull subscription (push, optional)",
                                                    "Pub/Sub-Pull-Abonnement (Push, optional)"),
                Lang("projects/PROJECT/subscriptions/NAME of that topic, which the service account may pull from "
                     "(Pub/Sub Subscriber); works behind NAT.", "projects/PROJEKT/subscriptions/NAME dieses Topics, "
                     "das das Dienstkonto abrufen darf (Pub/Sub Subscriber); funktioniert hinter NAT."), default=""),
    )
    watch_mode = "pubsub"  # users.watch and a Pub/Sub pull subscription, when both are set; else polling

    @classmethod
    def check_secret(cls, account: Account, secret: str) -> str:
        info = key_info(secret)
        return json.dumps(info, separators=(",", ":"))

    @classmethod
    def validate(cls, account: Account) -> None:
        super().validate(account)
        for mailbox in account.settings.get("mailboxes", ()):
            if "@" not in mailbox:
                raise ConfigError(t("Account %(name)s: '%(mailbox)s' is not a mailbox address. Give the user's address "
                                    "in the Google Workspace domain, e.g. anna@example.com.", name=account.name,
                                    mailbox=escaped(mailbox)))
        topic, subscription = account.settings.get("pubsub_topic") or "", account.settings.get("pubsub_subscription") or ""
        if bool(topic) != bool(subscription) or (topic and not _TOPIC.match(topic)) or \
                (subscription and not _SUBSCRIPTION.match(subscription)):
            raise ConfigError(t("Account %(name)s: for push give both the Pub/Sub topic (projects/PROJECT/topics/NAME) "
                                "and its pull subscription (projects/PROJECT/subscriptions/NAME), or neither.",
                                name=account.name))
        if account.action.kind == "label" and account.action.target in account.settings.get("labels", ()):
            raise ConfigError(t("Account %(name)s: the label '%(label)s' is archived itself, so labelled mail would be "
                                "found again by every run. Add a label that is not in the account's label list.",
                                name=account.name, label=escaped(account.action.target)))

    @classmethod
    def warnings(cls, account: Account) -> list[str]:
        scope = " ".join(scopes_for(account.action))
        return [f"Domain-wide delegation needed for the service account's client ID: {scope}"]

    def __enter__(self) -> GmailSource:
        self.info = key_info(self.secret)
        self.scopes = scopes_for(self.account.action)
        self.sessions: dict[str, GmailSession] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        for session in self.sessions.values():
            session.close()

    def session(self, mailbox: str) -> GmailSession:
        """The mailbox's session, logged in on first use (a mailbox's login failing fails that mailbox only)."""
        if mailbox not in self.sessions:
            try:
                session = GmailSession(self.account, self.info, mailbox, self.scopes, self.timeout)
            except ValueError as e:  # the key's private key does not load
                raise AuthError(t("Account %(name)s: the service account key cannot be used (%(reason)s). Add a new "
                                  "JSON key with --service-account-file.", name=self.account.name,
                                  reason=str(e))) from e
            try:
                session.authenticate()
            except BaseException:
                session.close()
                raise
            self.sessions[mailbox] = session
        return self.sessions[mailbox]

    def folders(self) -> list[Folder]:
        acc = self.account
        return [Folder(f"{mailbox}/{label}", f"gmail:{acc.name}:{mailbox}/{label}", (mailbox, label), mailbox)
                for mailbox in acc.mailboxes for label in acc.labels]

    def open(self, folder: Folder, ledger: Ledger) -> None:
        mailbox, label = folder.data
        self.session(mailbox).label_id(label)

    def batches(self, folder: Folder, ledger: Ledger) -> Iterator[Batch]:
        mailbox, label = folder.data
        session = self.session(mailbox)
        label_id = session.label_id(label)
        cursor = ledger.cursor
        if cursor and cursor.isdigit():
            try:
                yield from self._history(folder, session, label_id, cursor)
                return
            except HistoryExpiredError:
                ledger.restart(t("Account %(name)s: Gmail no longer keeps the history of %(folder)s since the last "
                                 "run; the label was read again, duplicates skipped.", name=self.account.name,
                                 folder=folder.label), forget_pending=False)  # message ids stay valid
        yield from self._listing(folder, session, label_id, ledger)

    def _listing(self, folder: Folder, session: GmailSession, label_id: str, ledger: Ledger) -> Iterator[Batch]:
        """Everything with the label, oldest first. The history id is taken before listing and kept only with
        the last batch: a run stopped half-way lists again (cheap: ids only; archived ones are not fetched)."""
        start = str(session.profile()["historyId"])
        ids = list(reversed(session.list_ids(label_id, self.account.unread_only)))
        ledger.expect(len(ids))
        if not ids:
            yield Batch([], start)
            return
        for i in range(0, len(ids), FETCH_BATCH):
            chunk = ids[i:i + FETCH_BATCH]
            last = i + FETCH_BATCH >= len(ids)
            yield Batch([Item(self.key(folder, m), m) for m in chunk], start if last else None)

    def _history(self, folder: Folder, session: GmailSession, label_id: str, start: str) -> Iterator[Batch]:
        """What was added to the label since ``start``; each page's cursor the last history record read."""
        token = None
        while True:
            page = session.history(start, label_id, token)
            ids: list[str] = []
            for record in page.get("history", []):
                for added in record.get("messagesAdded", []):
                    message = added.get("message", {})
                    if label_id in message.get("labelIds", []):
                        ids.append(message["id"])
                for added in record.get("labelsAdded", []):
                    if label_id in added.get("labelIds", []):
                        ids.append(added.get("message", {}).get("id"))
            ids = list(dict.fromkeys(i for i in ids if i))
            token = page.get("nextPageToken")
            records = page.get("history", [])
            page_cursor = str(page.get("historyId") or start) if not token else \
                str(records[-1]["id"]) if records else None
            chunks = [ids[i:i + FETCH_BATCH] for i in range(0, len(ids), FETCH_BATCH)] or [[]]
            for n, chunk in enumerate(chunks):
                yield Batch([Item(self.key(folder, m), m) for m in chunk],
                            page_cursor if n == len(chunks) - 1 else None)
            if not token:
                return

    def fetch(self, folder: Folder, items: list[Item], spool_dir: Path) -> list[RawMail]:
        mailbox, label = folder.data
        got = self.session(mailbox).fetch_raw([i.ref for i in items])
        out = []
        for item in items:
            message = got.get(item.ref)
            if message is None:
                continue
            if self.account.unread_only and "UNREAD" not in message.get("labelIds", ["UNREAD"]):
                continue  # read meanwhile: an unread-only account leaves it
            raw = base64.urlsafe_b64decode(message["raw"] + "=" * (-len(message["raw"]) % 4))
            received = None
            if message.get("internalDate"):
                received = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(message["internalDate"]) / 1000))
            out.append(RawMail(raw, self.account.name, folder.label, item.key, received=received))
        return out

    def apply(self, folder: Folder, action: AfterAction, refs: list) -> None:
        self.session(folder.data[0]).apply(action, refs)

    # -- push (the watch service): users.watch and a Pub/Sub pull subscription ------------------------------------
    def start_watch(self, mailbox: str) -> float:
        """users.watch: Gmail publishes the mailbox's changes of the archived labels to the topic. Returns when the
        watch expires (Gmail: 7 days; renewed daily). Raises SourceError."""
        session = self.session(mailbox)
        labels = [session.label_id(label) for label in self.account.labels]
        answer = session.call(session.users().watch(userId="me", body={
            "topicName": self.account.pubsub_topic, "labelIds": labels, "labelFilterBehavior": "include"}), "watch")
        return int(answer.get("expiration", 0)) / 1000 or time.time() + 7 * 86400

    def stop_watch(self, mailbox: str) -> None:
        session = self.session(mailbox)
        session.call(session.users().stop(userId="me"), "stop")

    def pull(self, wait: float) -> list[tuple[str, str]]:
        """Messages on the subscription, each (ackId, the mailbox it names); [] after ``wait`` seconds without.
        Raises SourceError (AuthError: the service account may not pull)."""
        data = self._pubsub("pull", {"maxMessages": 100}, timeout=wait + self.timeout)
        out = []
        for received in data.get("receivedMessages", []):
            try:
                note = json.loads(base64.b64decode(received["message"].get("data", "")))
                out.append((received["ackId"], str(note.get("emailAddress", "")).lower()))
            except (ValueError, KeyError, TypeError):
                out.append((received.get("ackId", ""), ""))  # not Gmail's: acknowledged and dropped
        return out

    def acknowledge(self, ack_ids: list[str]) -> None:
        if ack_ids:
            self._pubsub("acknowledge", {"ackIds": ack_ids}, timeout=self.timeout)

    def _pubsub(self, verb: str, body: dict, timeout: float) -> dict:
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import AuthorizedSession
        from google.oauth2 import service_account

        if not hasattr(self, "_pubsub_session"):  # the service account itself, not a mailbox: no subject
            credentials = service_account.Credentials.from_service_account_info(self.info, scopes=[SCOPE_PUBSUB])
            self._pubsub_session = AuthorizedSession(credentials)
        acc = self.account
        try:
            response = self._pubsub_session.post(f"{PUBSUB}/{acc.pubsub_subscription}:{verb}", json=body,
                                                 timeout=timeout)
        except (GoogleAuthError, OSError, ValueError) as e:
            raise ConnectError(t("Account %(name)s: Cloud Pub/Sub cannot be reached (%(reason)s). Check the network "
                                 "and the firewall; the watch connects again by itself.", name=acc.name,
                                 reason=f"{type(e).__name__}: {e}")) from e
        if response.status_code >= 500:
            raise ConnectError(t("Account %(name)s: Cloud Pub/Sub answered %(status)s, a fault at Google; the watch "
                                 "connects again by itself.", name=acc.name, status=response.status_code))
        if response.status_code in (401, 403):
            raise AuthError(t("Account %(name)s: the service account may not pull from %(subscription)s (%(status)s). "
                              "Grant it the role Pub/Sub Subscriber on that subscription.", name=acc.name,
                              subscription=acc.pubsub_subscription, status=response.status_code))
        if response.status_code >= 400:
            raise FetchError(t("Account %(name)s: Cloud Pub/Sub answered %(status)s for %(subscription)s. Check that "
                               "the subscription exists and belongs to the topic.", name=acc.name,
                               status=response.status_code, subscription=acc.pubsub_subscription))
        return response.json() if response.content else {}

    def probe(self) -> ProbeReport:
        report = ProbeReport()
        action = self.account.action
        for folder in self.folders():
            mailbox, label = folder.data
            try:
                session = self.session(mailbox)
                info = session.label_info(session.label_id(label))
                report.folders.append(FolderReport(folder.label, int(info.get("messagesTotal", 0))))
            except FolderError as e:
                report.folders.append(FolderReport(folder.label, error=e))
        for mailbox in self.account.mailboxes:
            if mailbox in self.sessions:
                report.available = sorted(k for k, v in self.sessions[mailbox].labels().items() if k != v or
                                          k in ("INBOX", "SENT"))
                break
        if action.kind == "label" and self.sessions:
            try:
                next(iter(self.sessions.values())).label_id(action.target)
                report.action = t("the label '%(label)s' exists", label=escaped(action.target))
            except FolderError:
                report.action = t("the label '%(label)s' will be created at the first archived mail",
                                  label=escaped(action.target))
        elif action.kind != "none":
            report.action = t("the scope %(scope)s is granted", scope=" ".join(self.scopes))
        return report

    def inbox(self) -> list[InboxReport]:
        out = []
        for mailbox in self.account.mailboxes:
            session = self.session(mailbox)
            info = session.label_info("INBOX")
            out.append(InboxReport(mailbox, "INBOX", int(info.get("messagesTotal", 0)),
                                   int(info.get("messagesUnread", 0)), session.first_subject("INBOX")))
        return out
