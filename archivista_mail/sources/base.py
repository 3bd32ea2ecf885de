"""What a mail source is: its declared settings and the few operations the one import loop calls.

A source is one module. It subclasses ``Source``, declares its settings once (``Setting``: type,
default, secret or not, help in German and English, whether the secret is bound to it) and is
registered under the entry point group ``archivista_mail.sources``. The CLI's ``account add KIND``,
WebAdmin's account forms, ``account test`` and ``mailtest.py`` are built from the declarations;
the importer (importer.py) runs every source through the same loop:

    with SourceClass(account, secret, timeout) as source:        # connect, log in
        for folder in source.folders():                           # the units with a cursor
            source.open(folder)                                   # FolderError: this folder only
            ... owed actions: source.apply(folder, action, refs)  # refs from source.ref_of(folder, key)
            for batch in source.batches(folder, ledger):          # what is new since the cursor
                raws = source.fetch(folder, new items, spool_dir) # original bytes (or spool files)
                ... parse, plan, save durably with batch.cursor ...
                source.apply(folder, action, refs)                # only after the commit

Foreign exceptions are translated inside the source; it raises our errors (errors.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..accounts import Account, AfterAction
from ..config import Config
from ..errors import ArchivistaMailError, ConfigError, Text, escaped, t
from ..folders import check_folder_name
from ..model import RawMail

SPOOL_FROM = 8 << 20  # mails larger than this are fetched (or copied) in pieces to disk, not into memory

# -- declarations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lang:
    """A text in English and German (declarations carry both; WebAdmin picks, the CLI speaks English)."""

    en: str
    de: str

    def __call__(self, lang: str) -> str:
        return self.de if lang == "de" else self.en


@dataclass(frozen=True)
class Setting:
    """One setting of a source, declared once; the CLI option, the form field and the checks come from it.

    ``type``: "text", "int", "bool", "choice" (one of ``choices``), "list" (repeatable option, one per
    line in a form), "after" (an after-archive action among the source's ``actions``), "pem" (a CA
    certificate file), "secret" (the one secret: entered, never shown; ``secret_from`` says how the
    CLI reads it). ``bound``: the secret is sealed with this value (vault), so changing it needs the
    secret again. ``default`` may be a function of the other values (e.g. the port of a security).
    """

    name: str
    type: str
    label: Lang
    help: Lang
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    bound: bool = False
    option: str | None = None  # the CLI option; default --name with dashes
    secret_from: str = "stdin"  # secret: "stdin" (a line, or a prompt) or "file" (the file's content)
    lower: bool = False  # compared and bound in lower case (host names)
    minimum: int | None = None
    maximum: int | None = None

    @property
    def flag(self) -> str:
        """The CLI option, e.g. --host or --password-stdin."""
        return self.option or "--" + self.name.replace("_", "-")

    def default_for(self, values: Mapping[str, Any]) -> Any:
        """The default, computed from the other values where it depends on them."""
        if callable(self.default):
            return self.default(values)
        if self.type == "list":
            return tuple(self.default or ())
        return self.default

    def convert(self, raw: Any, account: str) -> Any:
        """A value from the CLI or a form, typed and checked; raises ConfigError naming the setting."""
        label = self.label
        if self.type == "int":
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise ConfigError(t("Account %(name)s: %(setting)s must be a whole number, not '%(value)s'.",
                                    name=account, setting=label, value=escaped(str(raw)))) from None
            if (self.minimum is not None and value < self.minimum) or \
                    (self.maximum is not None and value > self.maximum):
                raise ConfigError(t("Account %(name)s: %(setting)s must be between %(low)s and %(high)s, not "
                                    "%(value)s.", name=account, setting=label, low=self.minimum, high=self.maximum,
                                    value=value))
            return value
        if self.type == "bool":
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in ("1", "yes", "true", "on")
        if self.type == "list":
            items = raw.splitlines() if isinstance(raw, str) else list(raw)
            return tuple(item.strip() for item in items if item and item.strip())
        text = str(raw).strip()
        if self.type == "choice" and text not in self.choices:
            raise ConfigError(t("Account %(name)s: %(setting)s '%(value)s' is not known. Use one of: %(choices)s.",
                                name=account, setting=label, value=escaped(text), choices=", ".join(self.choices)))
        return text.lower() if self.lower else text


def after_setting(actions: tuple[str, ...], folder_names: bool = True) -> Setting:
    """The after-archive action setting, for a source that supports ``actions``."""
    listed = ", ".join(AfterAction.spelled(a) for a in actions)
    return Setting("after", "after", Lang("After archiving", "Nach dem Archivieren"),
                   Lang(f"What happens to a mail on the server once its archive copy is durable: {listed}.",
                        f"Was nach dem dauerhaften Archivieren mit der Mail auf dem Server geschieht: {listed}."),
                   default="none")


UNREAD_ONLY = Setting("unread_only", "bool", Lang("Unread only", "Nur ungelesene"),
                      Lang("Archive only unread mail (default: all mail).",
                           "Nur ungelesene Mails archivieren (sonst alle)."), default=False)


# -- what the loop and a source exchange ----------------------------------------------------------


@dataclass(frozen=True)
class Folder:
    """A unit with its own cursor: an IMAP folder, a mailbox's folder in Microsoft 365, a POP3 maildrop.

    ``label`` is what people see (documents, run reports, the ledger's folder); ``state_key`` where
    its cursor is kept (None: the source keeps none); ``data`` is the source's own.
    """

    label: str
    state_key: str | None = None
    data: Any = None
    group: str | None = None  # folders of different groups (mailboxes) may be imported side by side


@dataclass
class Item:
    """A message the source listed: its ledger key, what fetch/apply take (``ref``), its size if known.

    A source that has the bytes at hand when listing (files) sets ``raw``, and nothing is fetched.
    """

    key: str
    ref: Any
    size: int | None = None
    raw: RawMail | None = None


@dataclass
class Batch:
    """Messages to archive together, and the cursor to keep once their commit is durable (None: keep it)."""

    items: list[Item]
    cursor: str | None = None


class Ledger:
    """A source's view of the archive's import ledger for one folder (the importer provides it)."""

    cursor: str | None

    def known(self, keys: list[str]) -> set[str]:
        """The keys already archived."""
        raise NotImplementedError

    def expect(self, count: int) -> None:
        """Tell the progress display how many messages are coming (when the source knows it up front)."""

    def restart(self, note: str | Text, forget_pending: bool) -> None:
        """The cursor means nothing any more (UIDVALIDITY changed, a delta token expired): start over.

        Content hashes keep what is archived from being archived twice. ``forget_pending`` drops
        owed actions and failures too, when their references (IMAP UIDs) mean nothing either.
        """
        raise NotImplementedError


@dataclass
class FolderReport:
    """One folder in a connection test: its message count, or the error saying why it cannot be archived."""

    name: str
    count: int | None = None
    error: ArchivistaMailError | None = None
    skipped: bool = False  # it holds only other folders: the importer skips it with a warning


@dataclass
class ProbeReport:
    """What a connection test found: each folder, the after-archive action, the server's folders to pick from."""

    folders: list[FolderReport] = field(default_factory=list)
    action: str | Text | None = None  # e.g. "the folder 'Archiv/Alt' exists"
    action_error: ArchivistaMailError | None = None
    available: list[str] = field(default_factory=list)
    notes: list[str | Text] = field(default_factory=list)  # what else the test found (SMTP: size limit, SMTPUTF8)

    @property
    def ok(self) -> bool:
        """True when every folder can be archived and the after-archive action can be carried out."""
        return not self.action_error and not any(f.error and not f.skipped for f in self.folders)


@dataclass
class InboxReport:
    """What ``mailtest.py`` shows of one mailbox: its inbox, how full it is, the first message's subject."""

    mailbox: str
    inbox: str
    messages: int
    unread: int | None = None
    first_subject: str | None = None  # None: the inbox is empty


# -- the source ---------------------------------------------------------------------------------------


class Source:
    """A mail source for one account; subclasses declare and implement. Use as a context manager.

    Class attributes are the declaration; instances are a logged-in session.
    """

    kind: ClassVar[str]
    title: ClassVar[Lang]
    page: ClassVar[str] = "mail"  # the WebAdmin page listing these accounts (kinds may share one)
    page_title: ClassVar[Lang | None] = None  # that page's title (None: the source's title)
    settings: ClassVar[tuple[Setting, ...]]
    actions: ClassVar[tuple[str, ...]] = ("none",)
    actions_at_close: ClassVar[bool] = False  # True: an action takes effect when the session ends (POP3 QUIT)
    # How many groups of folders (Folder.group: a mailbox) the importer may run at once, each on its own
    # thread: for sources limited per mailbox (Gmail's quota). Their calls for different groups must then
    # be safe on different threads.
    parallel_groups: ClassVar[int] = 1
    # How the watch service (watch.py) waits for new mail: "idle" (the source's watch_folder and idle, one
    # connection per folder), "notifications" (subscribe: the server posts to WebAdmin), "pubsub" (start_watch,
    # pull: the server publishes to a queue) or "polling" (an import every watch_poll_seconds; the cursor keeps
    # it cheap).
    watch_mode: ClassVar[str] = "polling"
    outgoing: ClassVar[bool] = False  # an account to send through (SMTP): the import loop passes it by
    folder_setting: ClassVar[str] = "folders"  # the list setting WebAdmin's folder picker fills (Gmail: labels)

    def __init__(self, account: Account, secret: str, config: Config) -> None:
        self.account = account
        self.secret = secret
        self.config = config
        self.timeout = config.network_timeout

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    # -- declaration helpers ------------------------------------------------------------------
    @classmethod
    def setting(cls, name: str) -> Setting:
        """The declared setting of that name."""
        return next(s for s in cls.settings if s.name == name)

    @classmethod
    def secret_setting(cls) -> Setting | None:
        """The setting that holds the secret, if the source has one."""
        return next((s for s in cls.settings if s.type == "secret"), None)

    @classmethod
    def endpoint(cls, account: Account) -> str:
        """Where the account's secret may be sent: kind and the bound settings (the vault seals it with this)."""
        values = []
        for s in cls.settings:
            if s.bound:
                value = account.settings.get(s.name)
                values.append(value.lower() if s.lower and isinstance(value, str) else value)
        return json.dumps([cls.kind, *values])

    @classmethod
    def describe(cls, account: Account) -> str:
        """One line for lists (never the secret)."""
        shown = []
        for s in cls.settings:
            value = account.settings.get(s.name)
            if s.type == "secret" or value in (None, "", ()):
                continue
            if s.type == "list":
                value = ", ".join(value)
            shown.append(f"{s.name.replace('_', ' ')} {value}")
        return f"{account.name}: {cls.kind}, {', '.join(shown)}{'' if account.enabled else ', disabled'}"

    @classmethod
    def check_secret(cls, account: Account, secret: str) -> str:
        """The secret as it is to be stored (e.g. a key file's content checked and compacted); raises ConfigError."""
        return secret

    @classmethod
    def warnings(cls, account: Account) -> list[str]:
        """What to tell whoever saves this account (e.g. that it is unencrypted)."""
        return []

    @classmethod
    def validate(cls, account: Account) -> None:
        """Checks beyond each setting's own (the source's cross-field rules); raises ConfigError."""
        for s in cls.settings:
            if s.required and s.type != "secret" and account.settings.get(s.name) in (None, "", ()):
                raise ConfigError(t("Account %(name)s: %(setting)s (%(flag)s) is missing.", name=account.name,
                                    setting=s.label, flag=s.flag))
        action = account.action
        if action.kind not in cls.actions:
            raise ConfigError(t("Account %(name)s: %(kind)s accounts cannot '%(action)s' after archiving; they can: "
                                "%(actions)s.", name=account.name, kind=cls.title, action=escaped(str(action)),
                                actions=", ".join(AfterAction.spelled(a) for a in cls.actions)))
        folders = account.settings.get("folders", ())
        if action.kind == "move" and action.target in folders:
            raise ConfigError(t("Account %(name)s: mail would be moved into '%(folder)s', which is archived itself, "
                                "so it would be fetched again after every move. Move it to a folder that is not in "
                                "the account's folder list.", name=account.name, folder=escaped(action.target)))

    # -- the import loop's operations -----------------------------------------------------------
    def folders(self) -> list[Folder]:
        """The account's units with a cursor, in order."""
        raise NotImplementedError

    def open(self, folder: Folder, ledger: Ledger) -> None:
        """Make ``folder`` the current one, before its owed actions are replayed; raises FolderError (or
        FolderSkippedError) for this folder only. A cursor that means nothing any more is restarted here
        (``ledger.restart``), so no stale reference is acted on."""

    def batches(self, folder: Folder, ledger: Ledger) -> Iterator[Batch]:
        """What is new since ``ledger.cursor``, in batches, oldest first."""
        raise NotImplementedError

    def fetch(self, folder: Folder, items: list[Item], spool_dir: Path) -> list[RawMail]:
        """The original bytes of ``items`` (large ones into a spool file); messages gone since are left out."""
        raise NotImplementedError

    def apply(self, folder: Folder, action: AfterAction, refs: list) -> None:
        """Carry out an after-archive action; raises ActionRefusedError when the server refuses it."""
        raise NotImplementedError

    def key(self, folder: Folder, ref: Any) -> str:
        """The ledger key of a message (kind, account, folder and the source's reference)."""
        return f"{self.kind}:{self.account.name}:{folder.label}:{ref}"

    def ref_of(self, folder: Folder, key: str) -> Any:
        """The inverse of ``key``: the reference fetch and apply take."""
        return key[len(self.key(folder, "")):]

    # -- the watch service (watch_mode "idle") -----------------------------------------------
    def watch_folder(self, label: str) -> None:
        """Open a folder to wait for new mail in (read-only); raises FolderError."""
        raise NotImplementedError

    def folder_state(self, label: str) -> tuple:
        """Something that changes when mail comes into a folder, read cheaply (IMAP: STATUS); for folders
        polled beside the IDLE ones."""
        raise NotImplementedError

    def notify(self, labels: list[str]) -> list[str]:
        """Ask the server to announce new mail in these folders while ``idle`` waits on this connection (IMAP
        NOTIFY); returns the labels it covers, [] when the server cannot. Raises SourceError."""
        return []

    def idle(self, stop: Any, renew: float) -> set[str]:
        """Wait until the server announces new mail (the watched folder's or ``notify``'s), ``renew`` seconds pass
        or ``stop`` (an Event) is set; returns the labels announced (empty: none). Raises SourceError when the
        connection is broken or silent."""
        raise NotImplementedError

    # -- the watch service (watch_mode "notifications": the server posts to WebAdmin) ----------------------
    def subscribe(self, folder: Folder, url: str, client_state: str, seconds: int) -> tuple[str, float]:
        """Ask the server to post new mail in ``folder`` to ``url`` with ``client_state``; returns the
        subscription's id and expiry. Raises SourceError."""
        raise NotImplementedError

    def renew(self, folder: Folder, sid: str, seconds: int) -> float:
        """Extend a subscription; returns its new expiry. Raises SourceError."""
        raise NotImplementedError

    def unsubscribe(self, folder: Folder, sid: str) -> None:
        """End a subscription."""
        raise NotImplementedError

    # -- the watch service (watch_mode "pubsub": the server publishes to a queue we pull from) -------------------
    def start_watch(self, mailbox: str) -> float:
        """Ask the server to publish a mailbox's changes; returns when that ends. Raises SourceError."""
        raise NotImplementedError

    def stop_watch(self, mailbox: str) -> None:
        raise NotImplementedError

    def pull(self, wait: float) -> list[tuple[str, str]]:
        """What was published: (acknowledgement id, the mailbox it names); [] after ``wait`` seconds."""
        raise NotImplementedError

    def acknowledge(self, ack_ids: list[str]) -> None:
        raise NotImplementedError

    # -- the watch service (watch_mode "streaming": the server streams events on a response held open) -------------
    own_pool: str = ""  # set by the watch service before entering: a connection pool apart from the importer's

    @classmethod
    def watch_groups(cls, account: Account) -> list[str]:
        """The groups (mailboxes) streamed apart, one stream each."""
        raise NotImplementedError

    def stream_subscribe(self, group: str) -> str:
        """Subscribe to new mail in a group's folders; returns the subscription's id. Raises SourceError."""
        raise NotImplementedError

    def stream(self, group: str, sid: str, minutes: int, stop: Any) -> Iterator[set[str]]:
        """The labels with new mail, as the server streams them, for up to ``minutes``; ends when the server
        closes the stream or soon after ``stop`` (an Event) is set. Raises SourceError, also when the server no
        longer knows the subscription."""
        raise NotImplementedError

    def stream_unsubscribe(self, group: str, sid: str) -> None:
        raise NotImplementedError

    # -- connection tests -------------------------------------------------------------------------
    def probe(self) -> ProbeReport:
        """Each folder's message count or problem, and whether the after-archive action can work."""
        raise NotImplementedError

    def inbox(self) -> list[InboxReport]:
        """What mailtest.py shows: each mailbox's inbox and its first message's subject."""
        raise NotImplementedError


def batches_of(items: list[Item], count: int, max_bytes: int) -> Iterator[list[Item]]:
    """Cut items into runs of at most ``count`` items and ``max_bytes`` (one item at least); sizes unknown count 0."""
    batch: list[Item] = []
    size = 0
    for item in items:
        if batch and (len(batch) >= count or size + (item.size or 0) > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item.size or 0
    if batch:
        yield batch


def check_folder_names(account: Account, setting: str = "folders") -> None:
    """A source's folder names and move target written as a mail client shows them (see folders.py)."""
    for name in account.settings.get(setting, ()):
        check_folder_name(name)
    if account.action.kind == "move":
        check_folder_name(account.action.target)

