"""Mail accounts: what one is, how its settings are read from input and checked.

An account's settings are those its source declares (sources/base.py ``Setting``); this module
knows none of them by name except the after-archive action every source has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, escaped, t

if TYPE_CHECKING:
    from .sources.base import Source

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


# After-archive actions: plain ones, and those with a target (``move:FOLDER``, ``label:NAME``).
PLAIN_ACTIONS = ("none", "read", "trash", "delete", "delete-hard")
TARGET_ACTIONS = {"move": "FOLDER", "label": "NAME"}


@dataclass(frozen=True)
class AfterAction:
    """What happens to a mail at its source once its archive copy is durable: none, read, move:FOLDER,
    label:NAME (Gmail), trash (Gmail), delete, delete-hard (EWS). Each source says which it supports."""

    kind: str  # one of PLAIN_ACTIONS or TARGET_ACTIONS
    target: str = ""  # the folder of a move or the label to add, as the user wrote it

    @classmethod
    def parse(cls, value: str | None) -> AfterAction:
        """``none``, ``read``, ``move:FOLDER`` ...; raises ConfigError for anything else."""
        value = (value or "none").strip()
        if value in PLAIN_ACTIONS:
            return cls(value)
        kind, colon, target = value.partition(":")
        if colon and kind in TARGET_ACTIONS and target.strip():
            return cls(kind, target.strip())
        raise ConfigError(t("The after-archive action '%(action)s' is not known. Use none, read, move:FOLDER or "
                            "delete (Gmail: label:NAME or trash; EWS: delete-hard).", action=escaped(value)))

    @staticmethod
    def spelled(kind: str) -> str:
        """How an action kind is written in options and messages (move:FOLDER for move)."""
        return f"{kind}:{TARGET_ACTIONS[kind]}" if kind in TARGET_ACTIONS else kind

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" if self.kind in TARGET_ACTIONS else self.kind


@dataclass(frozen=True)
class Account:
    """One mailbox (or set of mailboxes) to archive. ``secret`` is the sealed token, never the password.

    ``settings`` holds what the account's source declares; they read as attributes too
    (``account.host``, ``account.folders``).
    """

    name: str
    kind: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    secret: str = field(default="", repr=False)
    enabled: bool = True

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        if not name.startswith("_") and "kind" in self.__dict__:
            # A declared setting the account has no value for (stored before the source declared it): its default.
            for s in self.source.settings:
                if s.name == name:
                    return s.default_for(settings)
        raise AttributeError(f"account {self.__dict__.get('name')!r} has no setting {name!r}")

    @property
    def source(self) -> type[Source]:
        """The account's source class (raises ConfigError if its kind is not installed)."""
        from .sources import source_class

        return source_class(self.kind)

    @property
    def after(self) -> str:
        """The after-archive action as stored ('none', 'read', 'move:FOLDER', 'delete')."""
        return str(self.settings.get("after") or "none")

    @property
    def action(self) -> AfterAction:
        """The after-archive action, parsed."""
        return AfterAction.parse(self.after)

    @property
    def readonly(self) -> bool:
        """True when the server must not be changed (no after-archive action)."""
        return self.action.kind == "none"

    @property
    def endpoint(self) -> str:
        """Where the account's secret may be sent: it is sealed with this (see vault) and opened only for it."""
        return self.source.endpoint(self)

    def describe(self) -> str:
        """A one-line description for lists and messages (never the secret)."""
        return self.source.describe(self)

    def with_settings(self, **changes: Any) -> Account:
        """A copy with some settings changed."""
        return replace(self, settings={**self.settings, **changes})


def account_from_input(kind: str, name: str, given: Mapping[str, Any], old: Account | None = None) -> Account:
    """An account of ``kind`` from input (CLI options or a form): each declared setting converted and checked,
    defaults filled in, ``old``'s values kept where nothing was given; checked as a whole. Raises ConfigError.

    The secret is not set here: seal it into the result with ``Vault.seal``.
    """
    from .sources import source_class

    source = source_class(kind)
    settings: dict[str, Any] = {}
    missing = []
    for s in source.settings:
        if s.type == "secret":
            continue
        raw = given.get(s.name)
        if raw is None or (raw == "" and s.type not in ("text", "pem")) or (raw == () and s.type == "list"):
            value = old.settings.get(s.name) if old is not None and old.kind == kind else None
            if value is None:
                missing.append(s)
            settings[s.name] = value
        else:
            settings[s.name] = s.convert(raw, name)
    for s in missing:  # defaults last: some depend on other values (the port on the security)
        settings[s.name] = s.default_for(settings)
    if "after" in settings:
        settings["after"] = str(AfterAction.parse(settings["after"]))
    return validate(Account(name=name, kind=kind, settings=settings, secret=old.secret if old else "",
                            enabled=old.enabled if old else True))


def check_secret_kept(old: Account, new: Account) -> None:
    """Refuse to keep a stored secret for a changed endpoint; raises ConfigError saying what to enter."""
    if new.secret == old.secret and (new.kind != old.kind or new.endpoint != old.endpoint):
        from .sources.base import Lang

        bound = [s.label for s in new.source.settings if s.bound]
        changed = Lang(", ".join(["type", *(b.en for b in bound)]), ", ".join(["Typ", *(b.de for b in bound)]))
        raise ConfigError(t("Account %(name)s: one of %(settings)s changed, so enter the password or secret again. A "
                            "stored secret is only ever sent to the server it was entered for.", name=new.name,
                            settings=changed))


def validate(account: Account) -> Account:
    """Check an account's name and its settings as its source declares them; returns it or raises ConfigError."""
    if not NAME_RE.match(account.name):
        raise ConfigError(t("The account name '%(name)s' is not usable: use up to 64 letters, digits, dots, dashes, "
                            "underscores or @, starting with a letter or digit.", name=escaped(account.name)))
    account.source.validate(account)
    return account
