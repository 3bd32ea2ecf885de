"""WebAdmin's languages through Flask-Babel: German (the default) and English, option labels and dates.

Message ids are English and English is the source language: it needs no catalogue. The German
catalogue is ``webadmin/translations/de/LC_MESSAGES/messages.po``; ``make messages`` extracts the ids
from the Python code and the templates (babel.cfg) and updates it, ``make messages-compile`` writes
the ``.mo`` file beside it, which is committed so that a checkout and the Debian package need no
build step. tests/test_webadmin_i18n.py fails on an id without German or a stale ``.mo``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytz
from flask import session
from flask_babel import Babel, format_datetime, get_locale, gettext, lazy_gettext
from markupsafe import Markup, escape

from archivista_mail.errors import ArchivistaMailError, ConfigError, Text

LANGUAGES = {"de": "Deutsch", "en": "English"}
DEFAULT_LANGUAGE = "de"

# Babel patterns per language; "medium" is the locale's own (English: "Nov 24, 2026, 11:03:00 AM").
DATETIME_FORMATS = {"de": "dd.MM.yyyy HH:mm", "en": "medium"}

# Stored values stay as they are (in the database, the CLI and the forms' values); only what a
# person reads is translated. Groups: after-archive actions, connection security, document kinds,
# import run statuses, WebAdmin roles, document fields (for the direct link's title).
LABELS = {
    "after": {"none": lazy_gettext("Leave as it is"), "read": lazy_gettext("Mark as read"),
              "move": lazy_gettext("Move to a folder"), "delete": lazy_gettext("Delete"),
              "label": lazy_gettext("Add a label"), "trash": lazy_gettext("Move to the trash"),
              "delete-hard": lazy_gettext("Delete permanently")},
    "security": {"ssl": lazy_gettext("SSL/TLS"), "starttls": lazy_gettext("STARTTLS"),
                 "plain": lazy_gettext("Unencrypted")},
    "kind": {"mail": lazy_gettext("Mail"), "attachment": lazy_gettext("Attachment")},
    "archive": {"all": lazy_gettext("The mail and its attachments"),
                "attachments-only": lazy_gettext("Only the attachments (the mail hidden)"),
                "skip": lazy_gettext("Nothing (the mail stays on the server untouched)")},
    "run": {"ok": lazy_gettext("OK"), "partial": lazy_gettext("Partly failed"),
            "unreachable": lazy_gettext("Unreachable")},
    "source": {"all accounts": lazy_gettext("all accounts")},
    "role": {"admin": lazy_gettext("Administrator"), "viewer": lazy_gettext("Viewer"),
             "sender": lazy_gettext("Viewer who may send")},
    "watch": {"idle": lazy_gettext("IMAP IDLE"), "notify": lazy_gettext("IMAP NOTIFY"),
              "polling": lazy_gettext("Polling"), "notifications": lazy_gettext("Change notifications"),
              "push": lazy_gettext("Push (Pub/Sub)"), "streaming": lazy_gettext("Streaming notifications")},
    "direction": {"in": lazy_gettext("Received"), "out": lazy_gettext("Sent")},
    "sending": {"reserved": lazy_gettext("Waiting to be sent"), "sending": lazy_gettext("Being sent"),
                "sent": lazy_gettext("Sent"), "deferred": lazy_gettext("Deferred, tried again later"),
                "failed": lazy_gettext("Refused by the server"),
                "unconfirmed": lazy_gettext("Unconfirmed: may have been delivered"),
                "owed": lazy_gettext("Owed by a rule")},
    "field": {"title": lazy_gettext("Title"), "subject": lazy_gettext("Subject"),
              "filename": lazy_gettext("File name"), "from": lazy_gettext("From"), "date": lazy_gettext("Date"),
              "message_id": lazy_gettext("Message-ID")},
}

babel = Babel()


def select_locale() -> str:
    """The language chosen on the page (kept in the session), German until someone picks another."""
    lang = session.get("lang")
    return lang if lang in LANGUAGES else DEFAULT_LANGUAGE


def current_language() -> str:
    """The language code of this request ("de" or "en"), for ``<html lang>`` and the switch."""
    return str(get_locale() or DEFAULT_LANGUAGE)


def system_timezone() -> str:
    """The machine's time zone name (TZ, the /etc/localtime link, /etc/timezone), or UTC if none is found."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        link = os.readlink("/etc/localtime")  # what timedatectl set-timezone sets
        candidates.append(link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else "")
    except OSError:
        pass
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    return next((name for name in candidates if name in pytz.all_timezones_set), "UTC")


def check_timezone(name: str) -> str:
    """``name`` if it is a known time zone (empty: the machine's); raises ConfigError otherwise.

    Checked against pytz's list, since Flask-Babel reads BABEL_DEFAULT_TIMEZONE with pytz."""
    if not name:
        return system_timezone()
    if name not in pytz.all_timezones_set:
        raise ConfigError(f"The time zone {name!r} (webadmin_timezone) is not known. Use a name like "
                          "Europe/Zurich, or leave it empty for the machine's time zone.")
    return name


def option_label(value: str | None, group: str) -> str:
    """What a stored option value reads as in the current language; unknown values are shown as stored."""
    if value is None:
        return ""
    if group == "after" and value.startswith("move:"):
        return gettext("Move to %(folder)s", folder=value[5:])
    if group == "after" and value.startswith("label:"):
        return gettext("Add the label %(label)s", label=value[6:])
    label = LABELS.get(group, {}).get(value)  # a plugin's choices are shown as declared
    return str(label) if label is not None else value


def parse_timestamp(value: str) -> datetime | None:
    """A stored timestamp (UTC ``YYYY-MM-DDTHH:MM:SSZ``, or a mail's ISO date with its offset) as an aware
    datetime; None if it is not one. A timestamp without an offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def format_timestamp(value: str | None) -> str:
    """A stored timestamp in the user's language and WebAdmin's time zone (see DATETIME_FORMATS)."""
    moment = parse_timestamp(value) if value else None
    if moment is None:
        return value or ""
    return format_datetime(moment, DATETIME_FORMATS.get(current_language(), "medium"))


def time_element(value: str | None) -> Markup:
    """``<time>`` with the formatted timestamp, keeping the stored value in its datetime and title attributes."""
    if not value:
        return Markup("")
    if parse_timestamp(value) is None:
        return escape(value)
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(value, format_timestamp(value))


def localize(text: object) -> str:
    """Jinja: a core sentence (a Text from t()) in the user's language; anything else as it is."""
    return text.translated(gettext, current_language()) if isinstance(text, Text) else ("" if text is None else str(text))


def localized(error: ArchivistaMailError, public: bool = False) -> str:
    """An error's sentence in the user's language: WebAdmin's own and the core's (those written with t())."""
    return error.localized(gettext, public=public, lang=current_language())
