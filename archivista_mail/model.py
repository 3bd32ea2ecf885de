"""Plain data that crosses stage boundaries: source -> parser -> planner -> archive."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SpooledData:
    """Bytes too large to hold in memory: a file in the blob store's spool, with its hash and size.

    Mails above the spool threshold are fetched to such a file in chunks, and their large parts
    are decoded to such files, so memory stays bounded whatever the attachment size.
    """

    path: Path
    size: int
    sha256: str


Content = bytes | SpooledData


@dataclass(frozen=True)
class RawMail:
    """One message exactly as a source delivered it.

    ``key`` identifies the message at its source (e.g. ``imap:acct:INBOX:uidvalidity:uid``)
    and is what the archive ledger remembers so a message is never fetched twice.
    """

    raw: bytes
    account: str
    folder: str
    key: str
    uid: int | None = None
    received: str | None = None
    spool: SpooledData | None = None  # set (and ``raw`` empty) for mails too large for memory

    @property
    def content(self) -> Content:
        """The original message: in memory, or spooled to a file."""
        return self.spool if self.spool is not None else self.raw


@dataclass
class Part:
    """A leaf of the MIME tree that becomes an attachment document (or a forwarded mail)."""

    filename: str | None
    content_type: str
    data: Content
    inline: bool = False
    content_id: str | None = None
    message: ParsedMail | None = None  # set for message/rfc822 parts


@dataclass
class ParsedMail:
    """What the parser recovered from the raw bytes; never raises, records defects instead."""

    subject: str = ""
    from_: str = ""
    to: str = ""
    cc: str = ""
    date: str | None = None
    message_id: str | None = None
    references: list[str] = field(default_factory=list)  # In-Reply-To, then References newest first (no <>)
    text: str = ""
    html: str = ""
    parts: list[Part] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


@dataclass
class DocumentPlan:
    """One document to create: the mail itself, an attachment, or a forwarded mail.

    ``parent`` is the index of the parent plan in the same list (None for the top mail).
    """

    kind: str  # "mail" | "attachment"
    data: Content
    title: str
    parent: int | None = None
    subject: str | None = None
    from_: str | None = None
    to: str | None = None
    cc: str | None = None
    date: str | None = None
    message_id: str | None = None
    filename: str | None = None
    mime_type: str | None = None
    inline: bool = False
    text: str | None = None
    text_status: str = "done"  # done | pending | none | failed
    text_error: str | None = None
    defects: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)  # metadata fields set by rules (or by hand)
    tags: list[str] = field(default_factory=list)
    hidden: bool = False  # a mail kept only as the parent of its attachments (rule: attachments only)
    after: str | None = None  # the mail's after-archive action when a rule overrides the account's
    references: list[str] = field(default_factory=list)  # the Message-IDs this mail answers (top mail only)
    token: int | None = None  # the record number a subject token names ("[Akte 1234]"), not yet trusted
    sends: list[dict] = field(default_factory=list)  # automatic mails a rule owes once this one is durable


@dataclass
class SaveResult:
    """What the archive did with one message: its new document number, or the duplicate's."""

    key: str
    number: int
    duplicate: bool
