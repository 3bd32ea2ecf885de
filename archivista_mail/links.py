"""Direct document links: the configured base URL plus a document number, and the link's title."""

from __future__ import annotations

import re
from typing import Any

from .errors import ConfigError, escaped, t

LINK_PATH = "/doc/"
BASE_URL_SETTING = "link_base_url"  # "DNS-Name für API-Aufruf"
TITLE_FIELD_SETTING = "link_title_field"  # "Titelfeld für API-Link"; empty: document number and title
TITLE_FIELDS = ("title", "subject", "filename", "from", "date", "message_id")


_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")


def check_base_url(value: str) -> str:
    """A usable base URL: a host name or address (https:// is assumed) or http(s)://HOST[:PORT][/PATH].

    Raises ConfigError. A bare ``archiv.example.ch`` is stored as ``https://archiv.example.ch``.
    """
    value = value.strip().rstrip("/")
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "https", value
    host, _, path = rest.partition("/")
    if scheme not in ("http", "https") or not _HOST.match(host) or any(c in path for c in "?# \\"):
        raise ConfigError(t("The DNS name '%(value)s' is not usable: write the name WebAdmin is reached by, e.g. "
                            "archiv.example.ch, or a URL such as https://archiv.example.ch:8443.", value=escaped(value)))
    return f"{scheme}://{rest}"


def link_url(base_url: str, number: int) -> str:
    """The direct link to a document."""
    if not base_url:
        raise ConfigError(t("No DNS name for direct links is set. Set it with 'archivista-mail settings set "
                            "%(setting)s archiv.example.ch' (the name WebAdmin is reached by), or in WebAdmin under "
                            "Archive links ('DNS-Name für API-Aufruf').", setting=BASE_URL_SETTING))
    return f"{base_url.rstrip('/')}{LINK_PATH}{number}"


def link_title(document: dict[str, Any], title_field: str = "") -> str:
    """'Aktennummer: Titelinhalt' (number: title), or number and the configured field."""
    field = title_field or "title"
    if field.startswith("field:"):  # a metadata field (Aktennummer); the title where a document has none
        value = (document.get("fields") or {}).get(field[6:]) or document.get("title") or ""
    else:
        value = document.get({"from": "from_addr"}.get(field, field)) or document.get("title") or ""
    return f"{document['number']}: {value}"
