"""Conversations: which record an incoming mail belongs to, and the subject token that names one. Pure.

A record is a document mails were sent from (``send``); the sent mails and the replies to them
carry its number in ``record``. A mail answering an archived mail (its In-Reply-To or References
names that mail's Message-ID) joins that mail's record, or makes that mail a record. A subject
token ("[Akte 1234]") is easy to forge, so it alone links a mail only when its sender took part in
the record's conversation (was a sender or recipient of one of its mails).
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Callable, Iterable

TOKEN_WORD = "Akte"  # the default word of the subject token: "[Akte 1234]"
TOKEN_SETTING = "send_subject_token"  # the stored setting (settings.py) that renames it, or turns it off
TOKEN_WORD_RE = re.compile(r"^[^\W\d_][\w.-]{0,19}$")  # one word: letters, digits, dots, dashes


@functools.cache
def _token_re(word: str) -> re.Pattern[str]:
    return re.compile(r"\[\s*" + re.escape(word) + r"\s*[:#]?\s*(\d{1,18})\s*\]", re.IGNORECASE)


def token_in(subject: str | None, word: str) -> int | None:
    """The record number in a subject's token ("[Akte 1234]"), or None (also when tokens are off: ``word`` '')."""
    if not word or not subject:
        return None
    found = _token_re(word).findall(subject)
    return int(found[-1]) if found else None


def with_token(subject: str, word: str, record: int) -> str:
    """The subject with the record's token appended, unless it already carries it (or tokens are off)."""
    if not word or token_in(subject, word) == record:
        return subject
    return f"{subject} [{word} {record}]".strip()


def addresses(*fields: str | None) -> set[str]:
    """The bare mail addresses in address header texts, lower case ("Anna <A@x.ch>, b@y.ch" -> a@x.ch, b@y.ch)."""
    found = set()
    for _, addr in email.utils.getaddresses([f for f in fields if f]):
        addr = addr.strip().lower()
        if "@" in addr:
            found.add(addr)
    return found


def choose_record(references: Iterable[str], token: int | None, sender: str | None,
                  records_of: Callable[[list[str]], dict[str, int]],
                  participants: Callable[[int], set[str]]) -> tuple[int | None, str]:
    """The record an incoming mail joins, and why ("reference", "token"), or (None, "").

    ``records_of(message_ids)`` maps the archived mails' Message-IDs among them to their record (or
    their own number); ``participants(record)`` gives the addresses that took part in a record's
    conversation, or an empty set when there is no such document. Header references come first, the
    newest one winning; a token only counts when ``sender`` took part.
    """
    refs = list(references)
    if refs:
        found = records_of(refs)
        for mid in refs:  # In-Reply-To first, then References from the newest
            if mid in found:
                return found[mid], "reference"
    if token is not None:
        senders = addresses(sender)
        if senders and senders & participants(token):
            return token, "token"
    return None, ""
