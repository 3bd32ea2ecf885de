"""Settings kept in the database, changed while the appliance runs: in WebAdmin or with
'archivista-mail settings set'. Each is declared once here with its check and help; the CLI,
WebAdmin and docs/configuration.md use these declarations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .conversation import TOKEN_SETTING, TOKEN_WORD, TOKEN_WORD_RE
from .errors import ConfigError, escaped, t
from .links import BASE_URL_SETTING, TITLE_FIELD_SETTING, TITLE_FIELDS, check_base_url
from .state import State

INTERVAL_SETTING = "import_interval_minutes"


@dataclass(frozen=True)
class StoredSetting:
    """A setting in the database: its key, what it does, and the check that turns input into the stored value."""

    key: str
    help: str
    parse: Callable[[str], str]


def _title_field(value: str) -> str:
    value = value.strip()
    if value and value not in TITLE_FIELDS and not (value.startswith("field:") and value[6:].strip()):
        raise ConfigError(t("The title field '%(field)s' is not a document field. Use one of: %(fields)s, "
                            "field:NAME for a metadata field, or nothing for the title.", field=escaped(value),
                            fields=", ".join(TITLE_FIELDS)))
    return value


def _switch(value: str) -> str:
    value = value.strip().lower()
    if value not in ("", "0", "1"):
        raise ConfigError(t("Write 1 to switch it on, 0 (or nothing) to switch it off."))
    return "1" if value == "1" else ""


def _interval(value: str) -> str:
    value = value.strip()
    if value and not (value.isdigit() and 1 <= int(value) <= 1440):
        raise ConfigError(t("The import interval must be a whole number of minutes from 1 to 1440."))
    return value


def _token_word(value: str) -> str:
    value = value.strip()
    if value and value.lower() != "off" and not TOKEN_WORD_RE.match(value):
        raise ConfigError(t("The subject token's word '%(value)s' is not usable: write one word of up to 20 letters "
                            "or digits (Akte, Dossier), or off.", value=escaped(value)))
    return value


STORED_SETTINGS = {s.key: s for s in [
    StoredSetting(BASE_URL_SETTING, "Direct links (\"DNS-Name für API-Aufruf\"): the name WebAdmin is reached by, "
                  "e.g. archiv.example.ch (stored as https://archiv.example.ch) or https://archiv.example.ch:8443. "
                  "Empty: no direct links.", lambda v: check_base_url(v) if v.strip() else ""),
    StoredSetting(TITLE_FIELD_SETTING, "Direct links (\"Titelfeld für API-Link\"): the document field shown after the "
                  f"number in a link's title, one of {', '.join(TITLE_FIELDS)} or field:NAME (a metadata field such as "
                  "field:Aktennummer). Empty: the title "
                  "(Aktennummer: Titelinhalt).", _title_field),
    StoredSetting(TOKEN_SETTING, f"Sending: the word of the subject token that files replies onto their record "
                  f"([{TOKEN_WORD} 1234]); off for no token (replies are then linked by their references only). Empty: "
                  f"{TOKEN_WORD}.", _token_word),
    StoredSetting("watch_enabled", "Watch service (\"Sofort archivieren (Push)\"): 1 lets 'archivista-mail watch' "
                  "(the service archivista-mail-watch) archive new mail within seconds; 0 or empty: it waits, and "
                  "cron's scheduled import alone archives.", _switch),
    StoredSetting(INTERVAL_SETTING, "Minutes between scheduled imports, 1-1440. Empty: import_interval_minutes of "
                  "the configuration file.", _interval),
]}


def save_setting(state: State, key: str, value: str, actor: str) -> str:
    """Check and store a setting; returns the stored value. Raises ConfigError naming what is wrong."""
    if key not in STORED_SETTINGS:
        raise ConfigError(t("There is no setting '%(key)s'. Settings: %(settings)s.", key=escaped(key),
                            settings=", ".join(STORED_SETTINGS)))
    stored = STORED_SETTINGS[key].parse(value)
    state.save_setting(key, stored, actor)
    return stored
