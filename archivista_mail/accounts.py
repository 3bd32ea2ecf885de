"""Mail accounts: what one is, how its settings are checked, parsed from the CLI's words."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import ConfigError, escaped, t
from .folders import check_folder_name

KINDS = ("imap", "pop3", "o365")
GRAPH_HOST = "graph.microsoft.com"
SECURITY = ("ssl", "starttls", "plain")
DEFAULT_PORTS = {("imap", "ssl"): 993, ("imap", "starttls"): 143, ("imap", "plain"): 143,
                 ("pop3", "ssl"): 995, ("pop3", "starttls"): 110, ("pop3", "plain"): 110}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class AfterAction:
    """What happens to a mail at its source once its archive copy is durable: none, read, move:FOLDER, delete."""

    kind: str  # none | read | move | delete
    target: str = ""  # the folder of a move, as the user wrote it

    @classmethod
    def parse(cls, value: str | None) -> AfterAction:
        """``none``, ``read``, ``delete`` or ``move:FOLDER``; raises ConfigError for anything else."""
        value = (value or "none").strip()
        if value in ("none", "read", "delete"):
            return cls(value)
        if value.startswith("move:") and value[5:].strip():
            return cls("move", value[5:].strip())
        raise ConfigError(t("The after-archive action '%(action)s' is not known. Use none, read, move:FOLDER or "
                            "delete.", action=escaped(value)))

    def __str__(self) -> str:
        return f"move:{self.target}" if self.kind == "move" else self.kind


@dataclass(frozen=True)
class Account:
    """One mailbox to archive. ``secret`` is the encrypted password token, never the password."""

    name: str
    kind: str
    host: str
    port: int
    security: str
    username: str
    secret: str = field(repr=False)
    folders: tuple[str, ...] = ("INBOX",)
    unread_only: bool = False
    after: str = "none"
    ca_file: str | None = None
    enabled: bool = True
    tenant: str | None = None  # o365: the Azure tenant (directory) ID; ``username`` holds the client ID
    mailboxes: tuple[str, ...] = ()  # o365: the mailboxes (addresses) the app reads
    batch_size: int = 25  # o365: messages per Graph page ("Anzahl Mails (Office 365)")

    @property
    def endpoint(self) -> str:
        """Where the account's secret may be sent: it is sealed with this (see vault) and opened only for it."""
        if self.kind == "o365":
            return json.dumps(["o365", self.tenant or "", self.username])
        return json.dumps([self.kind, self.host.lower(), self.port, self.security, self.username])

    @property
    def action(self) -> AfterAction:
        """The after-archive action, parsed."""
        return AfterAction.parse(self.after)

    @property
    def readonly(self) -> bool:
        """True when the server must not be changed (no after-archive action)."""
        return self.after == "none"

    def describe(self) -> str:
        """A one-line description for lists and messages (never the secret)."""
        if self.kind == "o365":
            return (f"{self.name}: o365 tenant {self.tenant}, client {self.username}, mailboxes "
                    f"{', '.join(self.mailboxes)}, folders {', '.join(self.folders)}, batch size {self.batch_size}, "
                    f"{'unread only' if self.unread_only else 'all mails'}, after archive: {self.after}"
                    f"{'' if self.enabled else ', disabled'}")
        return (f"{self.name}: {self.kind} {self.username}@{self.host}:{self.port} ({self.security}), "
                f"folders {', '.join(self.folders)}, {'unread only' if self.unread_only else 'all mails'}, "
                f"after archive: {self.after}{'' if self.enabled else ', disabled'}")


def parse_after(value: str, kind: str) -> str:
    """Check an after-archive action: none, read, move:FOLDER or delete; raises ConfigError."""
    action = AfterAction.parse(value)
    if kind == "pop3" and action.kind not in ("none", "delete"):
        raise ConfigError(t("POP3 accounts can only keep mail ('none') or delete it after archiving ('delete'), "
                            "not '%(action)s': POP3 has no flags or folders.", action=escaped(action)))
    if action.kind == "move" and kind == "imap":
        check_folder_name(action.target)
    return str(action)


def check_secret_kept(old: Account, new: Account) -> None:
    """Refuse to keep a stored secret for a changed endpoint; raises ConfigError saying what to enter."""
    if new.secret == old.secret and new.endpoint != old.endpoint:
        if old.kind == "o365" or new.kind == "o365":
            raise ConfigError(t("Account %(name)s: the type, server, port, security, user, tenant or client ID "
                                "changed, so enter the client secret again. A stored client secret is only ever "
                                "sent to the server it was entered for.", name=new.name))
        raise ConfigError(t("Account %(name)s: the type, server, port, security, user, tenant or client ID changed, "
                            "so enter the password again. A stored password is only ever sent to the server it "
                            "was entered for.", name=new.name))


def validate(account: Account) -> Account:
    """Check an account's settings and return it; raises ConfigError with what to fix."""
    if not NAME_RE.match(account.name):
        raise ConfigError(t("The account name '%(name)s' is not usable: use up to 64 letters, digits, dots, dashes, "
                            "underscores or @, starting with a letter or digit.", name=escaped(account.name)))
    if account.kind not in KINDS:
        raise ConfigError(t("The account type '%(kind)s' is not known. Use one of: %(kinds)s.",
                            kind=escaped(account.kind), kinds=", ".join(KINDS)))
    if account.security not in SECURITY:
        raise ConfigError(t("The security setting '%(security)s' is not known. Use ssl, starttls or plain.",
                            security=escaped(account.security)))
    if account.kind == "o365":
        return _validate_o365(account)
    if not account.host:
        raise ConfigError(t("Account %(name)s: the server name (--host) is missing.", name=account.name))
    if not 0 < account.port < 65536:
        raise ConfigError(t("Account %(name)s: the port %(port)s is not a TCP port (1-65535).", name=account.name,
                            port=account.port))
    if not account.username:
        raise ConfigError(t("Account %(name)s: the user name (--user) is missing.", name=account.name))
    if not account.folders:
        raise ConfigError(t("Account %(name)s: at least one folder is needed (--folder).", name=account.name))
    _check_after(account)
    if account.kind == "imap":
        for folder in account.folders:
            check_folder_name(folder)
    if account.kind == "pop3" and account.folders != ("INBOX",):
        raise ConfigError(t("Account %(name)s: POP3 has only the inbox; leave out --folder.", name=account.name))
    return account


def _validate_o365(account: Account) -> Account:
    if not account.tenant:
        raise ConfigError(t("Account %(name)s: the tenant ID (--tenant) is missing; it is the Directory ID shown in "
                            "the Azure portal.", name=account.name))
    if not account.username:
        raise ConfigError(t("Account %(name)s: the client ID (--client-id) is missing; it is the Application ID of "
                            "the app registration.", name=account.name))
    if not account.mailboxes:
        raise ConfigError(t("Account %(name)s: at least one mailbox address is needed (--mailbox).",
                            name=account.name))
    if not 1 <= account.batch_size <= 1000:
        raise ConfigError(t("Account %(name)s: the batch size must be between 1 and 1000, not %(size)s.",
                            name=account.name, size=account.batch_size))
    _check_after(account)
    return account


def _check_after(account: Account) -> None:
    parse_after(account.after, account.kind)
    action = account.action
    if action.kind == "move" and action.target in account.folders:
        raise ConfigError(t("Account %(name)s: mail would be moved into '%(folder)s', which is archived itself, so "
                            "it would be fetched again after every move. Move it to a folder that is not in the "
                            "account's folder list.", name=account.name, folder=escaped(action.target)))
