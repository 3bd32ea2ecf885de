"""Outgoing mail: templates, placeholders, the allowed-domain check, the message itself, and when an
automatic reply must not be sent. Pure: the caller reads documents and settings and sends the bytes.

The message is built with CRLF line ends, exactly the bytes handed to the SMTP server and archived.
A mail document travels as a ``message/rfc822`` attachment holding its original bytes unchanged; an
attachment document as itself (base64).
"""

from __future__ import annotations

import email.utils
import html
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP, SMTPUTF8
from pathlib import Path

from .conversation import addresses
from .errors import ConfigError, escaped, t

LANGS = ("de", "en")
TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
PLACEHOLDER = re.compile(r"\{(number|title|link|sender_name|field:[^{}\s][^{}]{0,63})\}")
ADDRESS = re.compile(r"^[^@\s<>(),;:\"\\\[\]]{1,64}@[^@\s<>(),;:\"\\\[\]]{1,253}$")


@dataclass(frozen=True)
class Template:
    """A mail template in one language: subject, plain text, and HTML (None: made from the text)."""

    subject: str
    text: str
    html: str | None = None


BUILT_IN: dict[str, dict[str, Template]] = {
    "document": {
        "de": Template("{title}", "Guten Tag\n\nIm Anhang erhalten Sie das Dokument {number}: {title}.\n"
                       "Direkter Link (nach der Anmeldung): {link}\n\nFreundliche Grüsse\n{sender_name}\n"),
        "en": Template("{title}", "Hello\n\nPlease find attached document {number}: {title}.\n"
                       "Direct link (after login): {link}\n\nKind regards\n{sender_name}\n"),
    },
    "acknowledgement": {
        "de": Template("Eingangsbestätigung: {title}",
                       "Guten Tag\n\nIhre Nachricht «{title}» ist bei uns eingegangen und wurde unter der Nummer "
                       "{number} abgelegt.\n\nDies ist eine automatische Antwort.\n\nFreundliche Grüsse\n"
                       "{sender_name}\n"),
        "en": Template("Received: {title}",
                       "Hello\n\nYour message \"{title}\" has reached us and was filed as number {number}.\n\n"
                       "This is an automatic reply.\n\nKind regards\n{sender_name}\n"),
    },
}


def template_names(directory: Path | None) -> list[str]:
    """The built-in templates and those in ``directory`` (NAME.LANG.txt)."""
    names = set(BUILT_IN)
    if directory is not None and directory.is_dir():
        for f in directory.glob("*.txt"):
            name, _, lang = f.stem.rpartition(".")
            if lang in LANGS and TEMPLATE_NAME.match(name):
                names.add(name)
    return sorted(names)


def load_template(name: str, lang: str, directory: Path | None) -> Template:
    """A template: ``directory``/NAME.LANG.txt (first line "Subject: ...", a blank line, the text) with an
    optional NAME.LANG.html, else a built-in one. Raises ConfigError naming the templates there are."""
    if lang not in LANGS:
        raise ConfigError(t("The language '%(lang)s' is not known. Use de or en.", lang=escaped(lang)))
    if not TEMPLATE_NAME.match(name or ""):
        raise ConfigError(t("The template name '%(name)s' is not usable: use lower-case letters, digits, dashes and "
                            "underscores.", name=escaped(name)))
    if directory is not None:
        text_file = directory / f"{name}.{lang}.txt"
        if text_file.is_file():
            content = text_file.read_text(encoding="utf-8").replace("\r\n", "\n")
            head, _, body = content.partition("\n\n")
            if not head.lower().startswith("subject:"):
                raise ConfigError(t("The template %(path)s must start with a line 'Subject: ...' and a blank line.",
                                    path=text_file))
            html_file = directory / f"{name}.{lang}.html"
            return Template(head[8:].strip(), body, html_file.read_text(encoding="utf-8")
                            if html_file.is_file() else None)
    if name in BUILT_IN:
        return BUILT_IN[name][lang]
    raise ConfigError(t("There is no mail template '%(name)s' in %(lang)s. Templates: %(names)s.", name=escaped(name),
                        lang=lang, names=", ".join(template_names(directory))))


def render(text: str, values: Mapping[str, str], escape: bool = False) -> str:
    """Fill in {number}, {title}, {link}, {sender_name} and {field:NAME} (a missing field: empty). A line with
    {link} is left out when there is no link (no DNS name is set for direct links)."""
    def fill(match: re.Match) -> str:
        value = values.get(match.group(1), "")
        return html.escape(value) if escape else value

    if not values.get("link") and "{link}" in text:
        text = "".join(line for line in text.splitlines(keepends=True) if "{link}" not in line)
    return PLACEHOLDER.sub(fill, text)


def check_address(address: str, what: str = "address") -> str:
    """A bare mail address (local@domain), stripped; raises ConfigError. No display names, no lists."""
    address = (address or "").strip()
    if not ADDRESS.match(address) or any(ord(c) < 32 or c == "\x7f" for c in address) or ".." in address:
        raise ConfigError(t("'%(address)s' is not a mail address (%(what)s). Write one address such as "
                            "name@example.ch.", address=escaped(address), what=what))
    return address


def domain_of(address: str) -> str:
    """The domain of an address, lower case and IDNA-normalised where possible."""
    domain = address.rpartition("@")[2].strip().rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def in_allowed_domains(address: str, allowed: tuple[str, ...]) -> bool:
    """True when the address's domain is one of ``allowed`` exactly (no sub-domains, no look-alikes)."""
    return domain_of(address) in {domain_of("x@" + d) for d in allowed}


def make_message_id(domain: str) -> str:
    """A new, unique Message-ID (without <>), at the sending domain."""
    return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}.{secrets.token_hex(10)}@{domain_of('x@' + domain)}"


@dataclass
class Outgoing:
    """Everything a sent mail is made of."""

    from_addr: str
    from_name: str
    to: list[str]
    cc: list[str]
    subject: str
    text: str
    html: str
    message_id: str
    reference: int  # the record, in X-Archivista-Reference
    reply_to: str = ""
    in_reply_to: str = ""  # a Message-ID without <> (automatic replies answer the mail)
    auto: bool = False  # Auto-Submitted: auto-replied
    attachment: tuple[str, str, bytes] | None = None  # (file name, MIME type, bytes); message/rfc822 stays as is
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc]


def needs_smtputf8(out: Outgoing) -> bool:
    """True when an address is not plain ASCII (the server must then offer SMTPUTF8)."""
    return any(not a.isascii() for a in [out.from_addr, *out.recipients, out.reply_to])


def build_message(out: Outgoing) -> bytes:
    """The message as handed to the server: headers, text and HTML, the attachment; CRLF line ends."""
    policy = SMTPUTF8 if needs_smtputf8(out) else SMTP
    head = EmailMessage(policy=policy)
    head["From"] = email.utils.formataddr((out.from_name, out.from_addr)) if out.from_name else out.from_addr
    head["To"] = ", ".join(out.to)
    if out.cc:
        head["Cc"] = ", ".join(out.cc)
    if out.reply_to:
        head["Reply-To"] = out.reply_to
    head["Subject"] = out.subject
    head["Date"] = email.utils.formatdate(localtime=True)
    head["Message-ID"] = f"<{out.message_id}>"
    if out.in_reply_to:
        head["In-Reply-To"] = f"<{out.in_reply_to}>"
        head["References"] = f"<{out.in_reply_to}>"
    head["X-Archivista-Reference"] = str(out.reference)
    if out.auto:
        head["Auto-Submitted"] = "auto-replied"
        head["X-Auto-Response-Suppress"] = "All"
    for name, value in out.extra_headers.items():
        head[name] = value
    body = MIMEPart(policy=policy)
    body.set_content(out.text, subtype="plain", cte="quoted-printable")
    body.add_alternative(out.html, subtype="html", cte="quoted-printable")
    parts = [body.as_bytes()]
    filename, mime_type, data = out.attachment or ("", "", b"")
    filename = " ".join(filename.split())  # a decoded title may hold line breaks; a header may not
    if out.attachment is None:
        pass
    elif mime_type == "message/rfc822":
        data = re.sub(rb"\r?\n", b"\r\n", data)  # SMTP's line ends; the bytes are otherwise the original's
        cte = "7bit" if data.isascii() else "8bit"
        disposition = EmailMessage(policy=policy)
        disposition.add_header("Content-Disposition", "attachment", filename=filename)
        parts.append(b"Content-Type: message/rfc822\r\n" + disposition.as_bytes().split(b"\r\n\r\n")[0] +
                     f"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode() + data)
    else:
        part = MIMEPart(policy=policy)
        maintype, _, subtype = (mime_type or "application/octet-stream").partition("/")
        part.set_content(data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename,
                         disposition="attachment")
        parts.append(part.as_bytes())
    boundary = "=_archivista_" + secrets.token_hex(12)
    while any(boundary.encode() in p for p in parts):  # pragma: no cover - 96 random bits
        boundary = "=_archivista_" + secrets.token_hex(12)
    head["MIME-Version"] = "1.0"
    head["Content-Type"] = f'multipart/mixed; boundary="{boundary}"'
    b = boundary.encode()
    payload = b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + b + b"--\r\n"
    headers = b"".join(policy.fold_binary(name, value) for name, value in head.items())
    return headers + b"\r\n" + payload


def text_to_html(text: str) -> str:
    """A template's text as simple HTML (paragraphs, line breaks, links kept as text)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "<!DOCTYPE html><html><body>" + "".join(
        "<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>\n" for p in paragraphs) + "</body></html>\n"


# -- automatic replies: never to machines, lists or people who asked not to get them ------------------------
NO_REPLY_LOCAL = re.compile(r"^(no-?reply|do-?not-?reply|mailer-daemon|postmaster|bounces?|list|listserv|"
                            r"majordomo|owner-.*|.*-request|.*-bounces?|noreply[.+-].*|no-reply[.+-].*)$", re.I)


def auto_reply_refusal(headers: Mapping[str, list[str]], sender: str) -> str | None:
    """Why an automatic reply to this mail must not be sent (RFC 3834), or None when it may be.

    ``headers``: the mail's headers by lower-case name; ``sender``: its From address text.
    """
    def first(name: str) -> str:
        values = headers.get(name) or [""]
        return (values[0] or "").strip().lower()

    found = addresses(sender)
    if len(found) != 1:
        return "the sender's address is missing or not one address"
    address = next(iter(found))
    if NO_REPLY_LOCAL.match(address.partition("@")[0]):
        return f"the sender {address} is a no-reply or system address"
    auto = first("auto-submitted")
    if auto and auto != "no":
        return f"the mail is auto-submitted ({auto})"
    if first("precedence") in ("bulk", "list", "junk", "auto_reply"):
        return f"the mail is marked Precedence: {first('precedence')}"
    for name in ("list-id", "list-unsubscribe", "list-post", "x-auto-response-suppress", "feedback-id"):
        if headers.get(name):
            return f"the mail has a {name} header (a list, bulk or automatic mail)"
    if first("return-path") in ("<>", ""):
        if "return-path" in headers:
            return "the mail has an empty return path (a bounce)"
    return None
