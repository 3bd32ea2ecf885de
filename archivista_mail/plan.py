"""ParsedMail -> [DocumentPlan]: which documents one mail becomes. Pure."""

from __future__ import annotations

from .extract import has_extractor, html_to_text, sniff_mime_type
from .model import Content, DocumentPlan, ParsedMail, RawMail
from .spool import read_head

UNTITLED = "(no subject)"
SNIFF_BYTES = 65536


def mail_text(mail: ParsedMail) -> str:
    """The searchable body text of a mail: the plain part, else the HTML part as text."""
    if mail.text.strip():
        return mail.text
    if mail.html:
        return html_to_text(mail.html)
    return ""


def plan_documents(raw: RawMail, mail: ParsedMail) -> list[DocumentPlan]:
    """The mail document first (its blob is the raw message), then attachments depth-first."""
    plans: list[DocumentPlan] = []
    _plan_mail(plans, raw.content, mail, parent=None, date_fallback=raw.received, filename=None)
    return plans


def _plan_mail(plans: list[DocumentPlan], data: Content, mail: ParsedMail, parent: int | None,
               date_fallback: str | None, filename: str | None) -> None:
    index = len(plans)
    plans.append(
        DocumentPlan(
            kind="mail",
            data=data,
            title=mail.subject or filename or UNTITLED,
            filename=filename,
            parent=parent,
            subject=mail.subject,
            from_=mail.from_,
            to=mail.to,
            cc=mail.cc,
            date=mail.date or date_fallback,
            message_id=mail.message_id,
            references=list(mail.references) if parent is None else [],
            mime_type="message/rfc822",
            text=mail_text(mail),
            text_status="done",
            defects=list(mail.defects),
        )
    )
    for n, part in enumerate(mail.parts, 1):
        if part.message is not None:
            _plan_mail(plans, part.data, part.message, parent=index, date_fallback=None, filename=part.filename)
            continue
        filename = part.filename or _fallback_name(n, part.content_type)
        mime_type = _choose_type(sniff_mime_type(read_head(part.data, SNIFF_BYTES)), part.content_type)
        extractable = has_extractor(mime_type)
        plans.append(
            DocumentPlan(
                kind="attachment",
                data=part.data,
                title=filename,
                parent=index,
                date=mail.date or date_fallback,
                filename=filename,
                mime_type=mime_type,
                inline=part.inline,
                text=None,
                text_status="pending" if extractable else "none",
                text_error=None if extractable else f"no text extractor for {mime_type}",
            )
        )


def _choose_type(sniffed: str, declared: str) -> str:
    """Trust the content; fall back to the declared type where libmagic only knows 'some bytes'."""
    if sniffed == "application/octet-stream" and declared:
        return declared
    if sniffed == "text/plain" and declared.startswith("text/"):
        return declared  # libmagic cannot tell text/calendar or text/csv from text/plain
    if sniffed == "application/zip" and declared.startswith("application/vnd."):
        return declared  # office formats are zips; libmagic needs more than a prefix to tell
    return sniffed


_EXT = {"application/pgp-signature": ".asc", "application/pkcs7-signature": ".p7s", "text/plain": ".txt", "text/html": ".html", "text/calendar": ".ics", "message/rfc822": ".eml",
        "application/pdf": ".pdf", "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif"}


def _fallback_name(n: int, content_type: str) -> str:
    return f"part-{n}{_EXT.get(content_type, '.bin')}"
