"""Mail sources: each is one module declaring a ``Source`` (sources/base.py), registered under the entry
point group ``archivista_mail.sources``, as archives are under ``archivista_mail.archives``.

Built in: imap, pop3 and o365 (Microsoft 365 through Graph). Another package adds a kind by
registering its Source class under the group; nothing else needs to change.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from ..errors import ConfigError, escaped, t

if TYPE_CHECKING:
    from .base import Source

GROUP = "archivista_mail.sources"


@functools.cache
def registry() -> dict[str, type[Source]]:
    """Every installed source by its kind, in the order of their WebAdmin pages and names.

    Cached for the process; ``registry.cache_clear()`` after installing one at run time (tests).
    """
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    loaded = {name: ep.load() for name, ep in found.items()}
    return dict(sorted(loaded.items(), key=lambda item: (item[1].page != "mail", item[1].page, item[0])))


def source_class(kind: str) -> type[Source]:
    """The source of an account kind; raises ConfigError naming the installed kinds."""
    try:
        return registry()[kind]
    except KeyError:
        raise ConfigError(t("The account type '%(kind)s' is not known. Use one of: %(kinds)s.", kind=escaped(kind),
                            kinds=", ".join(registry()))) from None
