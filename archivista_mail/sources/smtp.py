"""SMTP accounts: where the archive sends mail from (smtplib). Declared like the sources, so the CLI's
``account add smtp``, WebAdmin's forms, secrets and ``account test`` work the same; the import loop
skips them (``outgoing``).

One transmission is MAIL FROM, RCPT TO for each recipient, then DATA: any recipient refused makes the
whole mail refused (5xx) or deferred (4xx) before DATA, so a mail never reaches only some of its
recipients. ``before_data`` is called just before DATA: from then on the server may accept the mail
even if we never hear its answer (the caller records that, see sender.py).
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable
from dataclasses import dataclass

from ..accounts import Account
from ..compose import check_address, in_allowed_domains
from ..errors import ConfigError, SourceError, escaped, t
from .base import Lang, ProbeReport, Setting, Source
from .mailserver import Session, plain_warning, reason_of, server_settings, tls_context

PORTS = {"ssl": 465, "starttls": 587, "plain": 25}


class SendRefusedError(SourceError):
    """The server refused the mail: ``permanent`` for a 5xx reply (do not retry), else 4xx (retry later)."""

    def __init__(self, message, reply: str, permanent: bool) -> None:
        super().__init__(message)
        self.reply = reply
        self.permanent = permanent


@dataclass(frozen=True)
class Limits:
    """What the server announced after login."""

    size: int | None  # the SIZE limit in bytes, None if it names none
    smtputf8: bool


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"[:500]


class SmtpSession(Session):
    """One logged-in SMTP connection."""

    auth_errors = (smtplib.SMTPAuthenticationError,)
    protocol_errors = (smtplib.SMTPException,)

    def _connect(self) -> None:
        a = self.account
        with self._guard(t("connecting")):
            if a.security == "ssl":
                self.client = smtplib.SMTP_SSL(a.host, a.port, timeout=self.timeout, context=tls_context(a))
            else:
                self.client = smtplib.SMTP(a.host, a.port, timeout=self.timeout)
            self.client.ehlo()
            if a.security == "starttls":
                if not self.client.has_extn("starttls"):
                    raise ConfigError(t("Account %(name)s: %(host)s:%(port)s does not offer STARTTLS. Use --security "
                                        "ssl on the server's TLS port (465), or ask the provider.", name=a.name,
                                        host=a.host, port=a.port))
                self.client.starttls(context=tls_context(a))
                self.client.ehlo()
        if a.user:
            with self._guard(t("logging in")):
                if not self.client.has_extn("auth"):
                    raise ConfigError(t("Account %(name)s: %(host)s:%(port)s offers no login (AUTH) on this "
                                        "connection. Use --security ssl or starttls, or leave the user empty for a "
                                        "server that relays for this machine.", name=a.name, host=a.host, port=a.port))
                self.client.login(a.user, self._password)

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.quit()
            except (smtplib.SMTPException, OSError):
                self.client.close()
            self.client = None

    def limits(self) -> Limits:
        size = self.client.esmtp_features.get("size", "").strip()
        return Limits(int(size) if size.isdigit() and int(size) > 0 else None, self.client.has_extn("smtputf8"))

    def transmit(self, envelope_from: str, recipients: list[str], data: bytes, utf8: bool,
                 before_data: Callable[[], None]) -> str:
        """Send one mail; returns the server's reply to DATA. Raises SendRefusedError, or a connection error."""
        a = self.account
        limits = self.limits()
        if utf8 and not limits.smtputf8:
            raise SendRefusedError(t("Account %(name)s: an address has non-ASCII characters, and %(host)s does not "
                                     "offer SMTPUTF8. Use an ASCII address.", name=a.name, host=a.host),
                                   "SMTPUTF8 not offered", permanent=True)
        if limits.size is not None and len(data) > limits.size:
            raise SendRefusedError(t("Account %(name)s: the mail has %(size)s bytes; %(host)s takes at most %(limit)s. "
                                     "Send a smaller document, or a link instead.", name=a.name, size=len(data),
                                     host=a.host, limit=limits.size), f"SIZE {limits.size}", permanent=True)
        options = ["SMTPUTF8"] if utf8 else []
        if self.client.has_extn("size"):
            options.append(f"SIZE={len(data)}")
        if not data.isascii() and self.client.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        with self._guard(t("sending mail")):
            code, msg = self.client.mail(envelope_from, options)
            if code != 250:
                self._refused(code, msg, f"MAIL FROM:<{envelope_from}>")
            for rcpt in recipients:
                code, msg = self.client.rcpt(rcpt)
                if code not in (250, 251):
                    self._refused(code, msg, f"RCPT TO:<{rcpt}>")
            code, msg = self.client.docmd("data")
            if code != 354:  # refused before the server has anything: deferred or failed, never in doubt
                self._refused(code, msg, "DATA")
            before_data()  # from here on the server may have the mail
            body = re.sub(rb"(?m)^\.", b"..", data)  # RFC 5321 4.5.2, as smtplib's data() does
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
            self.client.send(body + b".\r\n")
            code, msg = self.client.getreply()
            if code != 250:
                self._refused(code, msg, "the end of DATA", after_data=True)
        return _reply(code, msg)

    def _refused(self, code: int, msg: bytes, command: str, after_data: bool = False):
        reply = _reply(code, msg)
        if not after_data:
            try:
                self.client.rset()
            except (smtplib.SMTPException, OSError):
                pass
        a = self.account
        if 400 <= code < 500:
            raise SendRefusedError(t("Account %(name)s: %(host)s deferred the mail at %(command)s (%(reply)s). It is "
                                     "tried again later.", name=a.name, host=a.host, command=escaped(command),
                                     reply=reply), reply, permanent=False)
        raise SendRefusedError(t("Account %(name)s: %(host)s refused the mail at %(command)s (%(reply)s). Check the "
                                 "addresses and the account's right to send from %(sender)s.", name=a.name,
                                 host=a.host, command=escaped(command), reply=reply, sender=a.from_address),
                               reply, permanent=True)


class SmtpSource(Source):
    """An SMTP account: the archive sends documents (and automatic replies) through it."""

    kind = "smtp"
    title = Lang("SMTP (sending)", "SMTP (Versand)")
    page = "mail"
    outgoing = True
    settings = (
        *server_settings("SMTP", PORTS),
        Setting("from_address", "text", Lang("From address", "Absenderadresse"),
                Lang("The address mails are sent from; its domain must be an allowed domain.",
                     "Die Adresse, von der gesendet wird; ihre Domain muss erlaubt sein."),
                required=True, option="--from"),
        Setting("from_name", "text", Lang("Sender name (optional)", "Absendername (optional)"),
                Lang("The name shown with the From address, e.g. the company.",
                     "Der Name, der mit der Absenderadresse erscheint, z. B. die Firma."), default=""),
        Setting("reply_to", "text", Lang("Reply-To (optional)", "Antwortadresse (optional)"),
                Lang("Where replies go, if not to the From address; must be in an allowed domain.",
                     "Wohin Antworten gehen, falls nicht an die Absenderadresse; muss in einer erlaubten Domain sein."),
                default=""),
        Setting("allowed_domains", "list", Lang("Allowed sender domains", "Erlaubte Absender-Domains"),
                Lang("Domains the From and Reply-To addresses may have (repeatable). Default: the From address's.",
                     "Domains, die Absender- und Antwortadresse haben dürfen (mehrfach). Standard: die der "
                     "Absenderadresse."), option="--allowed-domain"),
    )

    @classmethod
    def validate(cls, account: Account) -> None:
        super().validate(account)
        sender = check_address(account.settings.get("from_address", ""), "From")
        name = str(account.settings.get("from_name") or "")
        if any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 for c in name) or len(name) > 200:
            raise ConfigError(t("Account %(name)s: the sender name must be one line of up to 200 characters.",
                                name=account.name))
        allowed = cls.allowed(account)
        for domain in allowed:
            check_address("x@" + domain, "allowed domain")
        for what, address in (("From", sender), ("Reply-To", account.settings.get("reply_to") or "")):
            if address and not in_allowed_domains(check_address(address, what), allowed):
                raise ConfigError(t("Account %(name)s: the %(what)s address %(address)s is not in the allowed domains "
                                    "(%(domains)s). Add its domain with --allowed-domain, or use an address there.",
                                    name=account.name, what=what, address=escaped(address),
                                    domains=", ".join(allowed)))

    @classmethod
    def allowed(cls, account: Account) -> tuple[str, ...]:
        """The allowed sender domains (the From address's when none are set)."""
        return tuple(account.settings.get("allowed_domains") or ()) or \
            (str(account.settings.get("from_address", "")).rpartition("@")[2].lower(),)

    @classmethod
    def warnings(cls, account: Account) -> list[str]:
        return [w for w in [plain_warning(account)] if w]

    def __enter__(self) -> SmtpSource:
        self.session = SmtpSession(self.account, self.secret, self.timeout).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def probe(self) -> ProbeReport:
        limits = self.session.limits()
        size = t("size limit %(mb)s MB", mb=round(limits.size / (1 << 20), 1)) if limits.size else \
            t("no size limit announced")
        utf8 = t("SMTPUTF8 offered") if limits.smtputf8 else t("no SMTPUTF8 (ASCII addresses only)")
        return ProbeReport(notes=[size, utf8])

    def folders(self) -> list:
        return []  # nothing to import

    def inbox(self) -> list:
        return []


__all__ = ["Limits", "SendRefusedError", "SmtpSession", "SmtpSource", "reason_of"]
