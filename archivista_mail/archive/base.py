"""The archive interface: what the importer, the CLI and WebAdmin need from a document store.

The embedded SQLite archive implements it; another DMS plugs in by implementing it and
registering the class under the ``archivista_mail.archives`` entry point group.

Exactly-once rests on one promise an implementation must keep: ``save_batch`` stores the
documents, the source ledger (seen keys, cursor, failures) and the pending server actions in
one durable transaction, and returns only after it is durable.
"""

from __future__ import annotations

import abc
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model import DocumentPlan, RawMail, SaveResult

# What a document is, for everyone reading the archive (CLI, WebAdmin, links): the keys of the dicts
# ``get_document``, ``list_documents`` and ``search`` return. ``kind`` is "mail" or "attachment";
# ``parent`` the number of the mail an attachment (or forwarded mail) belongs to, else None; ``inline``
# a bool; ``defects`` a list of sentences; ``date`` and ``archived_at`` ISO 8601 strings or None;
# ``direction`` "in" (archived from a source) or "out" (sent from the archive); ``record`` the number of the
# record whose conversation a mail belongs to (see conversation.py), else None.
DOCUMENT_FIELDS = ("number", "kind", "parent", "title", "subject", "from_addr", "to_addr", "cc_addr", "date",
                   "filename", "mime_type", "inline", "size", "sha256", "account", "folder", "message_id",
                   "text_status", "text_error", "defects", "archived_at", "direction", "record")


@dataclass(frozen=True)
class Failure:
    """A message that could not be archived, kept to be retried on the next run."""

    key: str
    account: str
    folder: str
    uid: int | None
    reason: str
    attempts: int = 1


@dataclass(frozen=True)
class PendingAction:
    """A server action (read, move:FOLDER, delete) owed for a mail whose archive copy is durable."""

    key: str
    account: str
    folder: str
    uid: int | None
    action: str


def _no_sending(archive: Archive) -> Exception:
    from ..errors import ArchiveError

    return ArchiveError(f"The archive {type(archive).__name__} keeps no outgoing mail or conversations, so "
                        "nothing can be sent from it. Use an archive that does (the embedded one does).")


class Archive(abc.ABC):
    """A document archive with the import ledger that makes imports exactly-once."""

    @property
    def spool_dir(self) -> Path:
        """Where large mails and parts are kept in transit (on the blobs' file system, ideally)."""
        return Path(tempfile.gettempdir())

    def clean_spool(self) -> int:
        """Remove files a killed run left in the spool; called under the import lock. Returns how many."""
        return 0

    def open_again(self) -> Archive | None:
        """Another handle on the same archive for another thread of the same import (its own connection),
        so mailboxes can be imported side by side; None if the backend cannot (they then run one by one).
        The importer closes it with ``close()``."""
        return None

    def close(self) -> None:
        """Release what this handle holds (connections)."""

    @abc.abstractmethod
    def ensure_schema(self) -> None:
        """Create or migrate storage; idempotent, run at the start of every import."""

    # -- the import ledger -------------------------------------------------------------
    @abc.abstractmethod
    def known_keys(self, keys: Iterable[str]) -> set[str]:
        """The subset of source keys already archived (or skipped as duplicates)."""

    @abc.abstractmethod
    def get_state(self, key: str) -> str | None:
        """A folder's cursor, as its source wrote it (an IMAP "UIDVALIDITY:UID", a Graph delta link); see
        ``save_batch``."""

    @abc.abstractmethod
    def set_state(self, key: str, value: str | None) -> None:
        """Replace or (None) drop a source's resume position outside a batch (e.g. an expired delta)."""

    @abc.abstractmethod
    def failures(self, account: str | None = None, folder: str | None = None) -> list[Failure]:
        """Messages whose last attempt failed, to be retried."""

    @abc.abstractmethod
    def pending_actions(self, account: str, folder: str | None = None) -> list[PendingAction]:
        """Server actions still owed for archived mails."""

    @abc.abstractmethod
    def actions_done(self, keys: Iterable[str]) -> None:
        """Forget pending actions once the server has carried them out."""

    @abc.abstractmethod
    def forget_failures(self, keys: Iterable[str]) -> None:
        """Drop failures of messages that vanished from the server before they could be archived."""

    @abc.abstractmethod
    def reset_folder(self, account: str, folder: str, state_key: str | None, forget_pending: bool) -> None:
        """Start a folder over (its cursor means nothing any more): drop the cursor kept under ``state_key``
        and, with ``forget_pending``, the folder's failures and owed actions (their references are void)."""

    @abc.abstractmethod
    def save_batch(
        self,
        mails: list[tuple[RawMail, list[DocumentPlan]]],
        *,
        failed: Iterable[tuple[RawMail, str]] = (),
        action: str | None = None,
        state: tuple[str, str | None] | None = None,
    ) -> list[SaveResult]:
        """Archive mails durably in one transaction with the ledger; see the module docstring.

        ``state`` is (key, value): the folder's new cursor, kept in the same transaction.
        """

    # -- documents ----------------------------------------------------------------------
    @abc.abstractmethod
    def get_document(self, number: int) -> dict[str, Any]:
        """One document's metadata (the keys in ``DOCUMENT_FIELDS``); raises NotFoundError."""

    @abc.abstractmethod
    def list_documents(self, *, limit: int = 50, offset: int = 0, kind: str | None = None,
                       parent: int | None = None, direction: str | None = None) -> list[dict[str, Any]]:
        """Documents, newest first; ``direction`` "in" or "out" keeps mails of that direction."""

    @abc.abstractmethod
    def search(self, query: str, *, limit: int = 50, offset: int = 0,
               fields: dict[str, str] | None = None, direction: str | None = None) -> list[dict[str, Any]]:
        """Full-text search over subject, addresses, body and attachment text, newest first; ``NAME:VALUE`` terms
        in the query and ``fields`` keep documents whose metadata field NAME has that value."""

    @abc.abstractmethod
    def get_text(self, number: int) -> str:
        """A document's searchable text: a mail's body, an attachment's extracted text ('' if none)."""

    @abc.abstractmethod
    def read_blob(self, number: int) -> bytes:
        """The stored bytes of a document (for a mail: the original message)."""

    # -- sending and conversations (issue "sending from the archive") ---------------------------
    # Not abstract: an archive plugin without them still imports; sending then says it needs them.
    def reserve_outgoing(self, raw: RawMail, plan: DocumentPlan, send: dict[str, Any], owed: int | None = None) -> int:
        """Store a mail about to be sent as an outgoing document on its record, with its outbox row (status
        "reserved"), in one durable transaction, before the server sees it; returns its number. ``send``
        holds the outbox columns (message_id, record, account, sender, recipients, actor, ...); ``owed``
        is the id of the owed automatic reply it fulfils. Idempotent per Message-ID."""
        raise _no_sending(self)

    def update_outgoing(self, message_id: str, **changes: Any) -> None:
        """Change an outbox row (status, reply, attempts, next_attempt), durably."""
        raise _no_sending(self)

    def outbox(self, statuses: Iterable[str] | None = None, number: int | None = None,
               limit: int = 1_000_000, message_id: str | None = None, request: str | None = None
               ) -> list[dict[str, Any]]:
        """Outbox rows (the columns of the outbox, recipients as a list), oldest first: those with one of
        ``statuses``, of a document or record ``number``, of one ``message_id`` or of one person's ``request``."""
        raise _no_sending(self)

    def drop_owed(self, owed: int, reason: str) -> None:
        """Record an owed automatic reply as failed without sending it (its SMTP account is gone)."""
        raise _no_sending(self)

    def conversation(self, number: int) -> list[dict[str, Any]]:
        """The record a document belongs to (or is) and every mail of its conversation, oldest first; each a
        document dict. Raises NotFoundError."""
        raise _no_sending(self)

    # -- deferred text extraction ---------------------------------------------------------
    @abc.abstractmethod
    def pending_text(self, limit: int) -> list[dict[str, Any]]:
        """Documents whose text is not yet extracted: dicts with number, mime_type and the blob's file path."""

    @abc.abstractmethod
    def save_texts(self, results: Iterable[tuple[int, str, str, str | None]]) -> None:
        """Store extraction results (number, text, status, error) and index the text."""
