"""Mail sources: each is one module declaring a ``Source`` (sources/base.py), registered under the entry
point group ``archivista_mail.sources``, as archives are under ``archivista_mail.archives``.

Built in: imap, pop3 and o365 (Microsoft 365 through Graph). Another package adds a kind by
registering its Source class under the group; nothing else needs to change.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from ..errors import ConfigError, escaped, t

if TYPE_CHECKING:
    from .base import Source

GROUP = "archivista_mail.sources"
# The built-in kinds, as pyproject.toml registers them: found without reading every installed package's
# metadata (a cron run pays for that scan only when an account is of a plugin's kind), and from a checkout.
BUILT_IN = {"imap": "archivista_mail.sources.imap:ImapSource", "pop3": "archivista_mail.sources.pop3:Pop3Source",
            "o365": "archivista_mail.sources.graph:GraphSource", "gmail": "archivista_mail.sources.gmail:GmailSource",
            "ews": "archivista_mail.sources.ews:EwsSource", "smtp": "archivista_mail.sources.smtp:SmtpSource"}


@functools.cache
def _installed() -> dict[str, EntryPoint]:
    """The entry points of the installed sources, by kind (reading them loads no source module)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


@functools.cache
def source_class(kind: str) -> type[Source]:
    """The source of an account kind, its module loaded on first use; raises ConfigError naming the kinds."""
    found = EntryPoint(kind, BUILT_IN[kind], GROUP) if kind in BUILT_IN else _installed().get(kind)
    if found is None:
        raise ConfigError(t("The account type '%(kind)s' is not known. Use one of: %(kinds)s.", kind=escaped(kind),
                            kinds=", ".join(sorted(_installed()))))
    return found.load()


def registry() -> dict[str, type[Source]]:
    """Every installed source by its kind, in the order of their WebAdmin pages and names (loads them all)."""
    loaded = {kind: source_class(kind) for kind in {**BUILT_IN, **_installed()}}
    return dict(sorted(loaded.items(), key=lambda item: (item[1].page != "mail", item[1].page, item[0])))


def forget_installed() -> None:
    """Read the installed sources again (after installing one at run time: tests)."""
    _installed.cache_clear()
    source_class.cache_clear()
