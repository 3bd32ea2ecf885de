"""Sending from the archive: a document (or an automatic reply) composed, archived on its record, then
handed to an SMTP account, exactly once.

Each mail goes through the outbox (archive table ``outbox``):

    reserved  the Message-ID and the exact bytes are archived as an outgoing document (durable)
    sending   written just before DATA: from here on the server may have the mail
    sent      the server accepted it (its reply kept)
    deferred  a temporary refusal (4xx) or no connection: tried again (``outbox retry``, cron)
    failed    a permanent refusal (5xx): the server's reply is kept, nothing is tried again
    unconfirmed  a run died while the server had the mail (found "sending" by the next run): it may
              have been delivered, so it is never sent again by itself; ``outbox resend`` does.
    owed      (automatic replies) a rule's reply, owed since the answered mail's commit

A kill before "sending" sends the reserved bytes on the next retry; a kill after it never sends them
twice. Everything under the outbox lock, so two processes never work on one mail.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .accounts import Account
from .archive.base import Archive
from .compose import (
    Outgoing,
    build_message,
    check_address,
    load_template,
    make_message_id,
    render,
    text_to_html,
)
from .config import Config
from .conversation import TOKEN_SETTING, TOKEN_WORD, with_token
from .db import now_iso
from .errors import ArchivistaMailError, ConfigError, SourceError, escaped, t
from .links import BASE_URL_SETTING, link_url
from .model import RawMail
from .plan import plan_documents
from .runs import import_lock
from .state import State
from .vault import Vault

OUTBOX_LOCK = "outbox.lock"
MAX_RECIPIENTS = 50
RETRY_AFTER = (60, 300, 900, 3600, 4 * 3600)  # seconds before the 1st, 2nd, ... retry of a deferred mail
GIVE_UP_AFTER = 20  # deferred attempts before a mail is failed for good
SENT_FOLDER = "sent"


def pause_at(point: str) -> None:
    """Test hook: stop this process (SIGSTOP) at a named point when ARCHIVISTA_MAIL_PAUSE_AT names it, so a
    test can kill it exactly there. Points: reserved, sending, accepted."""
    if point in os.environ.get("ARCHIVISTA_MAIL_PAUSE_AT", "").split(","):
        os.kill(os.getpid(), signal.SIGSTOP)


@dataclass
class SendResult:
    """What happened to one mail: its outgoing document, Message-ID, status and the server's reply."""

    number: int
    message_id: str
    status: str
    reply: str = ""
    record: int | None = None

    def line(self) -> str:
        return (f"Document {self.number} ({self.status}) on record {self.record}, Message-ID <{self.message_id}>"
                + (f": {self.reply}" if self.reply else "."))


def token_word(state: State) -> str:
    """The subject token's word ("Akte"), or '' when tokens are off."""
    word = state.setting(TOKEN_SETTING, "").strip()
    return "" if word.lower() == "off" else (word or TOKEN_WORD)


class Sender:
    """Sends documents and owed automatic replies through the SMTP accounts of a data directory."""

    def __init__(self, config: Config, state: State, archive: Archive, actor: str = "cli") -> None:
        self.config = config
        self.state = state
        self.archive = archive
        self.actor = actor
        self.vault = Vault(config.key_path)

    # -- composing -------------------------------------------------------------------------------
    def smtp_account(self, name: str) -> Account:
        """The SMTP account ``name``; raises ConfigError when it is not one, or disabled."""
        acc = self.state.account(name)
        if not acc.source.outgoing:
            raise ConfigError(t("Account %(name)s is not an SMTP account; send through one added with "
                                "'archivista-mail account add smtp'.", name=name))
        if not acc.enabled:
            raise ConfigError(t("The SMTP account %(name)s is disabled; enable it first.", name=name))
        return acc

    def compose(self, acc: Account, document: dict[str, Any], to: list[str], cc: list[str], subject: str | None,
                template: str, text: str, lang: str, sender_name: str, attach: bool = True,
                in_reply_to: str = "", auto: bool = False) -> Outgoing:
        """The mail for a document: addresses checked, template filled in, token added, document attached."""
        to = [check_address(a, "To") for a in to if a.strip()]
        cc = [check_address(a, "Cc") for a in cc if a.strip()]
        if not to:
            raise ConfigError(t("Give at least one recipient (To)."))
        if len(to) + len(cc) > MAX_RECIPIENTS:
            raise ConfigError(t("A mail from the archive goes to at most %(max)s recipients.", max=MAX_RECIPIENTS))
        acc.source.validate(acc)  # the stored account checked again: From and Reply-To in its allowed domains
        number = document["number"]
        record = document.get("record") or number
        base = self.state.setting(BASE_URL_SETTING, "")
        values = {"number": str(number), "title": document.get("title") or "", "link": link_url(base, number)
                  if base else "", "sender_name": sender_name or acc.from_name or acc.from_address}
        for name, value in (document.get("fields") or {}).items():
            values[f"field:{name}"] = value
        tmpl = load_template(template, lang, self.config.data_dir / "mail-templates")
        body = render(tmpl.text, values).rstrip("\n") + "\n"
        html = render(tmpl.html, values, escape=True) if tmpl.html else None
        if text.strip():  # the user's text after the template's
            text = text.strip().replace("\r\n", "\n")
            body += "\n" + text + "\n"
            if html:
                paragraphs = text_to_html(text).partition("<body>")[2].partition("</body>")[0]
                head, end, tail = html.rpartition("</body>")
                html = head + paragraphs + end + tail if end else html + paragraphs
        subject = (subject or "").strip() or render(tmpl.subject, values)
        subject = " ".join(subject.split())[:300]
        attachment = None
        if attach:
            data = self.archive.read_blob(number)
            if document["kind"] == "mail":
                attachment = ((document.get("title") or f"mail-{number}")[:80] + ".eml", "message/rfc822", data)
            else:
                attachment = (document.get("filename") or f"document-{number}", document.get("mime_type") or
                              "application/octet-stream", data)
        return Outgoing(acc.from_address, acc.from_name, to, cc, with_token(subject, token_word(self.state), record),
                        body, html or text_to_html(body), make_message_id(acc.from_address.rpartition("@")[2]), record,
                        reply_to=acc.reply_to, attachment=attachment, in_reply_to=in_reply_to, auto=auto)

    def reserve(self, acc: Account, out: Outgoing, template: str, lang: str, owed: int | None = None,
                rule: str | None = None, request: str | None = None) -> tuple[int, bytes]:
        """Archive the mail as an outgoing document with its outbox row (durable); returns its number and bytes."""
        data = build_message(out)
        raw = RawMail(data, acc.name, SENT_FOLDER, f"out:{out.message_id}", received=now_iso())
        plan = plan_documents(raw, _parsed(data))[0]  # the mail; what it carries is archived already
        plan.title = out.subject
        number = self.archive.reserve_outgoing(raw, plan, {
            "message_id": out.message_id, "record": out.reference, "account": acc.name, "sender": out.from_addr,
            "recipients": out.recipients, "actor": self.actor, "template": template, "lang": lang,
            **({"rule": rule} if rule else {}), **({"request": request} if request else {})}, owed=owed)
        pause_at("reserved")
        return number, data

    # -- sending -----------------------------------------------------------------------------------
    def send_document(self, number: int, via: str, to: list[str], cc: tuple[str, ...] | list[str] = (),
                      subject: str | None = None, template: str = "document", text: str = "", lang: str = "de",
                      sender_name: str = "", request: str | None = None) -> SendResult:
        """Compose, archive and send a document; the result says what the server answered. ``request``: a one-time
        id of the person's request (WebAdmin's form): the same request a second time (a double click, a reload)
        returns the first one's result instead of sending again."""
        if request:
            done = self.archive.outbox(request=request)
            if done:
                row = done[0]
                return SendResult(row["number"], row["message_id"], row["status"], row.get("reply") or "",
                                  row.get("record"))
        acc = self.smtp_account(via)
        document = self.archive.get_document(number)
        out = self.compose(acc, document, list(to), list(cc), subject, template, text, lang, sender_name)
        with _Lock(self.config.data_dir) as locked:
            if not locked:
                raise ConfigError(t("Another process has been sending from this archive for a minute; try again "
                                    "in a moment."))
            if request and self.archive.outbox(request=request):  # the first request won the lock meanwhile
                return self.send_document(number, via, to, cc, subject, template, text, lang, sender_name, request)
            self.reserve(acc, out, template, lang, request=request)
            self.state.audit(self.actor, "mail.send", str(number), f"via {via} to {', '.join(out.recipients)}, "
                             f"Message-ID <{out.message_id}>")
            return self._transmit(self._row(out.message_id))

    def _row(self, message_id: str) -> dict[str, Any]:
        return self.archive.outbox(message_id=message_id)[0]

    def _transmit(self, row: dict[str, Any]) -> SendResult:
        """Hand a reserved (or deferred) mail to its SMTP server and record the answer. Under the outbox lock."""
        mid, number = row["message_id"], row["number"]
        result = SendResult(number, mid, row["status"], row.get("reply") or "", row.get("record"))
        attempts = (row.get("attempts") or 0) + 1
        try:
            acc = self.smtp_account(row["account"])
            secret = self.vault.secret_of(acc)
        except ArchivistaMailError as e:
            return self._deferred(result, attempts, str(e))
        data = self.archive.read_blob(number)
        utf8 = any(not a.isascii() for a in [row["sender"], *row["recipients"]])
        handed = []

        def before_data() -> None:
            self.archive.update_outgoing(mid, status="sending", attempts=attempts)
            handed.append(True)
            pause_at("sending")

        from .sources.smtp import SendRefusedError, SmtpSource

        try:
            with SmtpSource(acc, secret, self.config) as source:
                reply = source.session.transmit(row["sender"], row["recipients"], data, utf8, before_data)
        except SendRefusedError as e:
            if e.permanent:
                self.archive.update_outgoing(mid, status="failed", reply=str(e), attempts=attempts)
                return replace(result, status="failed", reply=str(e))
            return self._deferred(result, attempts, str(e))
        except (SourceError, ArchivistaMailError, OSError) as e:
            if handed:  # the server may have the mail: never sent again by itself
                reason = t("The connection broke after the mail was handed to the server (%(reason)s); it may have "
                           "been delivered. Check with the recipient; 'archivista-mail outbox resend %(mid)s' sends "
                           "it again.", reason=str(e), mid=mid)
                self.archive.update_outgoing(mid, status="unconfirmed", reply=str(reason), attempts=attempts)
                return replace(result, status="unconfirmed", reply=str(reason))
            return self._deferred(result, attempts, str(e))
        pause_at("accepted")
        self.archive.update_outgoing(mid, status="sent", reply=reply, attempts=attempts)
        return replace(result, status="sent", reply=reply)

    def _deferred(self, result: SendResult, attempts: int, reason: str) -> SendResult:
        if attempts >= GIVE_UP_AFTER:
            self.archive.update_outgoing(result.message_id, status="failed", attempts=attempts,
                                         reply=f"{reason} (gave up after {attempts} attempts)")
            return replace(result, status="failed", reply=reason)
        wait = RETRY_AFTER[min(attempts - 1, len(RETRY_AFTER) - 1)]
        due = (datetime.now(timezone.utc) + timedelta(seconds=wait)).isoformat(timespec="seconds")
        self.archive.update_outgoing(result.message_id, status="deferred", reply=reason, attempts=attempts,
                                     next_attempt=due)
        return replace(result, status="deferred", reply=reason)

    # -- the outbox ----------------------------------------------------------------------------------
    def retry(self, due_only: bool = True) -> list[SendResult]:
        """Owed automatic replies, reserved and deferred mails (the due ones, or all); mails a dead run left
        "sending" become "unconfirmed". Returns what happened to each; nothing when another run holds the lock."""
        results: list[SendResult] = []
        with _Lock(self.config.data_dir, wait=0) as locked:
            if not locked:
                return results
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            for row in self.archive.outbox(["sending"]):  # a run died after handing it over
                reason = t("The run sending this mail stopped after handing it to the server; it may have been "
                           "delivered. Check with the recipient; 'archivista-mail outbox resend %(mid)s' sends it "
                           "again.", mid=row["message_id"])
                self.archive.update_outgoing(row["message_id"], status="unconfirmed", reply=str(reason))
                results.append(SendResult(row["number"], row["message_id"], "unconfirmed", str(reason),
                                          row["record"]))
            for row in self.archive.outbox(["owed"]):
                try:
                    results.append(self._send_owed(row))
                except Exception as e:  # noqa: BLE001 - one bad row must not stop the others (or the import)
                    problem = f"The automatic reply could not be made ({type(e).__name__}: {e})."
                    self.archive.drop_owed(row["id"], problem)
                    results.append(SendResult(row["answers"], "", "failed", problem, row["answers"]))
            for row in self.archive.outbox(["reserved", "deferred"]):
                if due_only and row["status"] == "deferred" and (row.get("next_attempt") or "") > now:
                    continue
                try:
                    results.append(self._transmit(row))
                except Exception as e:  # noqa: BLE001 - recorded on the row; the next ones are tried
                    results.append(self._deferred(SendResult(row["number"], row["message_id"], "deferred",
                                                             record=row["record"]), (row.get("attempts") or 0) + 1,
                                                  f"{type(e).__name__}: {e}"))
        return results

    def resend(self, message_id: str) -> SendResult:
        """Send an unconfirmed (or failed) mail again, the same bytes and Message-ID, at a person's request."""
        with _Lock(self.config.data_dir) as locked:
            if not locked:
                raise ConfigError(t("Another process has been sending from this archive for a minute; try again "
                                    "in a moment."))
            rows = self.archive.outbox(["unconfirmed", "failed", "deferred"], message_id=message_id.strip().strip("<>"))
            if not rows:
                raise ConfigError(t("There is no unconfirmed, failed or deferred mail with the Message-ID "
                                    "%(mid)s in the outbox ('archivista-mail outbox list').",
                                    mid=escaped(message_id)))
            self.state.audit(self.actor, "mail.resend", str(rows[0]["number"]), f"Message-ID <{message_id}>")
            return self._transmit(rows[0])

    def _send_owed(self, row: dict[str, Any]) -> SendResult:
        """Compose and send an automatic reply a rule owes for an archived mail."""
        answered = self.archive.get_document(row["answers"])
        to = row["recipients"][0]
        try:
            acc = self.smtp_account(row["account"])
            out = self.compose(acc, answered, [to], [], None, row["template"], "", row.get("lang") or "de", "",
                               attach=False, in_reply_to=answered.get("message_id") or "", auto=True)
        except ArchivistaMailError as e:
            self.archive.drop_owed(row["id"], str(e))
            return SendResult(row["answers"], "", "failed", str(e), answered.get("record") or row["answers"])
        number, _ = self.reserve(acc, out, row["template"], row.get("lang") or "de", owed=row["id"], rule=row["rule"])
        self.state.audit("rule", "mail.autoreply", str(row["answers"]), f"rule {row['rule']}: '{row['template']}' "
                         f"to {to} via {acc.name} as document {number}, Message-ID <{out.message_id}>")
        return self._transmit(self._row(out.message_id))


def _Lock(data_dir: Path, wait: float = 60.0):
    """The outbox lock: one process at a time hands mails to servers (waits up to ``wait`` seconds)."""
    return import_lock(data_dir, OUTBOX_LOCK, wait)


def _parsed(data: bytes):
    from .mime import parse_mail

    return parse_mail(data)


__all__ = ["SendResult", "Sender", "token_word"]
