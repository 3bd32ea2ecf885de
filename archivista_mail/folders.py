"""IMAP folder names as people write them, and as a server's personal namespace holds them.

People write folder names the way a mail client shows them: ``Entwürfe``, ``Archiv/Alt``, with
"/" between levels. Servers differ (RFC 2342 NAMESPACE): Dovecot keeps personal folders at the
top with "." or "/" between levels, Cyrus and Courier put them under ``INBOX.`` with ".". A
``Namespace`` maps one form to the other; it is pure and knows nothing of connections.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .errors import ConfigError, escaped, t

INBOX = "INBOX"


class FolderNameError(ConfigError):
    """Raised when a folder name cannot exist on a server (empty level, the server's separator in a name)."""


def check_folder_name(name: str) -> str:
    """Check a folder name as a person wrote it (no server needed) and return it; raises FolderNameError."""
    if not name or not name.strip():
        raise FolderNameError(t("A folder name is empty. Write it as your mail client shows it, e.g. Entwürfe or "
                                "Archiv/Alt."))
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise FolderNameError(t("The folder name '%(folder)s' contains control characters; no mail server can hold "
                                "it.", folder=escaped(name)))
    if name.startswith("/") or name.endswith("/") or "//" in name:
        raise FolderNameError(t("The folder name '%(folder)s' has an empty level. Write levels with one '/' between "
                                "them, e.g. Archiv/Alt.", folder=escaped(name)))
    return name


@dataclass(frozen=True)
class Namespace:
    """A server's personal namespace: its prefix (``""``, ``"INBOX."``) and level separator (None: flat)."""

    prefix: str = ""
    separator: str | None = "/"

    def to_server(self, name: str) -> str:
        """The server's name for a folder written as a mail client shows it; raises FolderNameError.

        ``INBOX`` is the inbox on every server; ``INBOX/Sub`` is a level below it. A name that
        already starts with the namespace prefix (``INBOX.Entwürfe``) is taken as the server's
        own spelling, so settings written that way keep working.
        """
        check_folder_name(name)
        if name.upper() == INBOX:
            return INBOX
        if self.prefix and name.startswith(self.prefix):
            return name
        levels = name.split("/")
        sep = self.separator
        if sep is None:  # a flat server: no levels, a "/" is just a character
            return self.prefix + name
        if sep != "/":
            for level in levels:
                if sep in level:
                    raise FolderNameError(t(
                        "The folder name '%(folder)s' cannot exist on this server: it separates folder levels with "
                        "'%(separator)s', so no name can contain it. For a folder inside another write the levels "
                        "with '/' (%(levels)s); otherwise choose a name without '%(separator)s'.",
                        folder=escaped(name), separator=escaped(sep), levels=escaped("/".join(name.split(sep)))))
        if levels[0].upper() == INBOX:
            return sep.join([INBOX, *levels[1:]])
        return self.prefix + sep.join(levels)

    def to_display(self, server_name: str) -> str:
        """A server's folder name as a mail client shows it (levels joined by "/")."""
        if server_name.upper() == INBOX:
            return INBOX
        sep = self.separator
        name = server_name
        if self.prefix and name.startswith(self.prefix):
            name = name[len(self.prefix):]
        elif sep and name.upper().startswith(INBOX + sep):
            name = INBOX + sep + name[len(INBOX) + len(sep):]
        return name.replace(sep, "/") if sep and sep != "/" else name
