"""Direct document links: the configured base URL plus a document number, and the link's title."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

LINK_PATH = "/doc/"
BASE_URL_SETTING = "link_base_url"  # "DNS-Name für API-Aufruf"
TITLE_FIELD_SETTING = "link_title_field"  # "Titelfeld für API-Link"; empty: document number and title
TITLE_FIELDS = ("title", "subject", "filename", "from", "date", "message_id")


def check_base_url(value: str) -> str:
    """A usable base URL: http:// or https://, a host (name or IP address), no query. Raises ConfigError."""
    value = value.strip().rstrip("/")
    scheme, _, rest = value.partition("://")
    if scheme not in ("http", "https") or not rest or any(c in rest for c in "?# "):
        raise ConfigError(f"The DNS name {value!r} is not usable: write it as http://NAME or https://NAME "
                          "(a domain or an IP address, optionally with a port).")
    return value


def link_url(base_url: str, number: int) -> str:
    """The direct link to a document."""
    if not base_url:
        raise ConfigError("No DNS name for direct links is set. Set it in WebAdmin under Archive links "
                          "('DNS-Name für API-Aufruf').")
    return f"{base_url.rstrip('/')}{LINK_PATH}{number}"


def link_title(document: dict[str, Any], title_field: str = "") -> str:
    """'Aktennummer: Titelinhalt' (number: title), or number and the configured field."""
    field = title_field or "title"
    value = document.get({"from": "from_addr"}.get(field, field)) or document.get("title") or ""
    return f"{document['number']}: {value}"
