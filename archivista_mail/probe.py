"""Connection tests: log in and report what is there, without changing anything (for any source)."""

from __future__ import annotations

from .accounts import Account
from .config import Config
from .sources.base import InboxReport, ProbeReport
from .vault import Vault


def _opened(acc: Account, config: Config):
    source = acc.source
    secret = Vault(config.key_path).secret_of(acc) if source.secret_setting() else ""
    return source(acc, secret, config)


def probe_account(acc: Account, config: Config, secret: str | None = None) -> ProbeReport:
    """Log in and report each folder's message count (or problem); raises SourceError if the login fails.

    ``secret``: use this one instead of the stored one (mailtest.py with settings given on its command line).
    """
    source = acc.source(acc, secret, config) if secret is not None else _opened(acc, config)
    with source as session:
        return session.probe()


def inbox_report(acc: Account, config: Config, secret: str | None = None) -> list[InboxReport]:
    """What mailtest.py shows of each mailbox; raises SourceError subclasses with a sentence. Never a secret."""
    source = acc.source(acc, secret, config) if secret is not None else _opened(acc, config)
    with source as session:
        return session.inbox()


def messages(n: int) -> str:
    """'1 message', '2 messages'."""
    return f"{n} message{'' if n == 1 else 's'}"


def mailtest_lines(reports: list[InboxReport]) -> list[str]:
    """What ``mailtest.py`` prints: 'Authenticated!', then each mailbox, its inbox and first message's subject."""
    lines = ["Authenticated!"]
    for r in reports:
        unread = f", {r.unread} unread" if r.unread is not None else ""
        first = "(the inbox is empty)" if r.first_subject is None else (r.first_subject or "(no subject)")
        lines += [f"Mailbox: {r.mailbox}", f"Inbox: {r.inbox} ({messages(r.messages)}{unread})", f"First message: {first}"]
    return lines
