"""Documents: full-text search, list, the document view, safe previews and downloads."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import NoReturn
from urllib.parse import quote, unquote

import nh3
from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext

from archivista_mail.display import neutral_filename, reveal_controls
from archivista_mail.errors import ArchiveError, NotFoundError
from archivista_mail.mime import parse_mail
from archivista_mail.model import Part

from . import get_archive
from .auth import admin_required, login_required
from .links import direct_link

bp = Blueprint("documents", __name__)
PAGE = 50
MAX_NUMBER = 2**63 - 1  # a document number or result offset beyond SQLite's INTEGER range names nothing
MAX_PAGE = MAX_NUMBER // PAGE
ATTACHMENTS = 1000  # listed on a mail's page; search finds the others
PREVIEW_TYPES = ("application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp")
# What an archived HTML mail may keep: text and layout; no scripts, forms, frames or remote content.
# Framed by our own view page only (its iframe adds the sandbox attribute as well).
SANDBOX_CSP = ("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
               "frame-ancestors 'self'")
# Images and text (always text/plain): nothing in them needs to run.
PREVIEW_CSP = "sandbox; default-src 'none'; img-src 'self' data:; frame-ancestors 'self'"
# PDFs, checked in Chromium 156 (test_pdf_and_html_previews_show_in_chromium_with_these_headers, and by
# hand): its PDF viewer shows an error page instead of the PDF in an <iframe sandbox>, and it does not
# apply a "sandbox" CSP to a PDF response (the PDF's document keeps our origin). So in Chromium neither
# gives the PDF an opaque origin. What keeps a PDF's own script out of our origin there is the viewer's
# design: the file is rendered by the PDF extension (its own origin) with PDFium, whose JavaScript has
# no DOM; the document in our origin is Chromium's wrapper. Our part: the bytes go out only as
# application/pdf with nosniff (never as anything a browser could render as HTML), in a frame only our
# pages may embed. "sandbox" stays for browsers that apply it to PDFs (reported for Safari, where a PDF
# with scripts then shows blank; not checked in Firefox) -- there the Download link remains.
PDF_CSP = "sandbox; default-src 'none'; object-src 'self'; frame-ancestors 'self'"
DOWNLOAD_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"
IMAGE_BYTES = 2_000_000  # an inline image larger than this is not embedded (the attachment list has it)
# All data: URIs of one body together. Each reference embeds its own copy, so without this a 2 MB
# image referenced 100,000 times would make a 270 GB page.
INLINE_BYTES = 20 << 20
_IMAGE_TYPE = re.compile(r"image/[a-z0-9][a-z0-9.+-]*")


@bp.after_request
def _no_store(response: Response) -> Response:
    """Archived content stays out of browser and proxy caches (a shared PC, the back button after logout)."""
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_template_filter("reveal")
def _reveal(text: str | None) -> str:
    """Jinja: ``{{ doc.subject|reveal }}`` -- characters that hide or reorder text shown as markers."""
    return reveal_controls(text)


def _fail(code: int, message: str) -> NoReturn:
    """Stop with HTTP ``code``; the error page (webadmin/errors.py) shows ``message`` (translated by the caller)."""
    abort(code, description=message)


def _document(number: int) -> dict:
    if not 0 < number <= MAX_NUMBER:
        _fail(404, gettext("There is no document with this number."))
    try:
        return get_archive().get_document(number)
    except NotFoundError:
        _fail(404, gettext("There is no document with this number."))


def _page() -> int | None:
    """The result page asked for (1 if none), None beyond the last page any archive can have; 400 unless
    it is a whole number from 1."""
    raw = request.args.get("page", "1").strip()
    digits = raw.lstrip("0")
    if not (raw.isascii() and raw.isdigit() and digits):
        _fail(400, gettext("The page number must be a whole number from 1 up."))
    return int(digits) if len(digits) <= 18 and int(digits) <= MAX_PAGE else None


@bp.get("/")
@bp.get("/documents")
@login_required
def search():
    query = request.args.get("q", "").strip()
    direction = request.args.get("direction", "")
    extra = {"direction": direction} if direction in ("in", "out") else {}
    page = _page()
    archive = get_archive()
    if page is None:
        rows = []  # beyond the last page of any archive: nothing to ask the archive
    elif query:
        rows = archive.search(query, limit=PAGE + 1, offset=(page - 1) * PAGE, **extra)
    else:
        rows = archive.list_documents(limit=PAGE + 1, offset=(page - 1) * PAGE, **extra)
    return render_template("documents/search.html", rows=rows[:PAGE], more=len(rows) > PAGE, query=query,
                           page=page or MAX_PAGE + 1, direction=extra.get("direction", ""))


@bp.get("/documents/<int:number>")
@login_required
def view(number: int):
    doc = _document(number)
    archive = get_archive()
    children = archive.list_documents(parent=number, limit=ATTACHMENTS + 1)
    more_children = len(children) > ATTACHMENTS
    children = list(reversed(children[:ATTACHMENTS]))
    parent = archive.get_document(doc["parent"]) if doc["parent"] else None
    body_text, has_html = "", False
    if doc["kind"] == "mail":
        parsed = parse_mail(archive.read_blob(number))
        body_text, has_html = parsed.text, bool(parsed.html)
    url, title = direct_link(doc)
    conversation = _conversation(archive, doc)
    g.state.audit(g.user["name"], "webadmin.docs.view", str(number), "")
    return render_template("documents/view.html", doc=doc, children=children, more_children=more_children,
                           conversation=conversation, sending=next((d["sending"] for d in conversation
                                                                    if d["number"] == number), None),
                           parent=parent, body_text=body_text, has_html=has_html, link_url=url, link_title=title,
                           previewable=doc["mime_type"] in PREVIEW_TYPES or (doc["mime_type"] or "").startswith("text/"))


def _conversation(archive, doc: dict) -> list[dict]:
    """The record's conversation (the record first, then sent mails and replies in order), [] when there is
    none or the archive keeps none."""
    try:
        rows = archive.conversation(doc["number"])
    except ArchiveError:  # an archive plugin without outgoing mail
        return []
    return rows if len(rows) > 1 else []


FIELD_NAME_MAX, FIELD_VALUE_MAX = 100, 2000


@bp.post("/documents/<int:number>/fields")
@admin_required
def set_field(number: int):
    """Set (an empty value: remove) a metadata field of a document by hand; audited."""
    _document(number)
    name = request.form.get("name", "").strip()
    value = request.form.get("value", "").strip()
    if not name or len(name) > FIELD_NAME_MAX or len(value) > FIELD_VALUE_MAX or ":" in name:
        flash(gettext("A field needs a name without ':' (up to %(name)s characters) and a value of up to %(value)s "
                      "characters.", name=FIELD_NAME_MAX, value=FIELD_VALUE_MAX))
        return redirect(url_for("documents.view", number=number))
    archive = get_archive()
    if not hasattr(archive, "set_field"):
        abort(404)
    archive.set_field(number, name, value or None)
    g.state.audit(g.user["name"], "docs.field", str(number), f"{name}={value}" if value else f"{name} removed")
    flash(gettext("Saved."))
    return redirect(url_for("documents.view", number=number))


class InlineImages:
    """A mail's own images for its HTML's ``cid:`` references, as data: URIs (nothing is loaded remotely).

    One dictionary lookup per reference, each image encoded once: linear in the HTML and the parts.
    An image over IMAGE_BYTES, an SVG, or one that would take the body's data: URIs past ``budget``
    bytes is left out (its <img> loses its src; the alt text shows).
    """

    def __init__(self, parts: Iterable[Part], budget: int = INLINE_BYTES) -> None:
        self.parts: dict[str, Part] = {}
        for part in parts:
            if part.content_id and _IMAGE_TYPE.fullmatch(part.content_type) and part.content_type != "image/svg+xml" \
                    and isinstance(part.data, bytes) and len(part.data) < IMAGE_BYTES:
                self.parts.setdefault(part.content_id, part)  # the first part of a Content-ID wins
        self.uris: dict[str, str] = {}
        self.left = budget

    def src(self, reference: str) -> str | None:
        """The data: URI for ``cid:...`` (RFC 2392: the Content-ID, %-encoded), or None."""
        cid = reference[4:].strip()
        if cid not in self.parts:
            cid = unquote(cid)
        part = self.parts.get(cid)
        if part is None:
            return None
        uri = self.uris.get(cid)
        if uri is None:
            data = part.data if isinstance(part.data, bytes) else b""  # spooled parts are too big to inline anyway
            uri = self.uris[cid] = f"data:{part.content_type};base64,{base64.b64encode(data).decode()}"
        if len(uri) > self.left:
            return None
        self.left -= len(uri)
        return uri


def safe_html(source: str, images: InlineImages | None = None) -> str:
    """Archived HTML cleaned for display: scripts, event handlers, forms, frames and remote images removed;
    ``cid:`` images replaced from ``images`` while cleaning (one pass)."""

    def attribute(element: str, name: str, value: str) -> str | None:
        if element == "img" and name == "src" and not value.lower().startswith("data:"):
            # nh3 has dropped remote schemes already; cid: becomes the mail's own image, anything
            # else (a relative URL) would point into WebAdmin itself.
            return images.src(value) if images is not None and value.lower().startswith("cid:") else None
        return value

    cleaned = nh3.clean(source, tags=nh3.ALLOWED_TAGS - {"a"} | {"span", "div", "font", "center"},
                        clean_content_tags={"script", "style"}, url_schemes={"data", "cid"}, link_rel=None,
                        attributes={"*": {"style", "align", "width", "height", "colspan", "rowspan"},
                                    "img": {"src", "alt"}, "font": {"color", "size", "face"}},
                        attribute_filter=attribute)
    return re.sub(r"(?i)url\s*\(", "blocked(", cleaned)  # no remote content through CSS either


@bp.get("/documents/<int:number>/body")
@login_required
def body(number: int):
    """A mail's HTML body, cleaned, served with a sandboxing CSP so nothing in it runs in our origin."""
    doc = _document(number)
    if doc["kind"] != "mail":
        return Response(gettext("Not a mail."), 404, mimetype="text/plain")
    parsed = parse_mail(get_archive().read_blob(number))
    response = Response(safe_html(parsed.html, InlineImages(parsed.parts)), mimetype="text/html")
    response.headers["Content-Security-Policy"] = SANDBOX_CSP
    return response


@bp.get("/documents/<int:number>/preview")
@login_required
def preview(number: int):
    """PDF, common images and text shown in the browser; text always as text/plain, never as HTML."""
    doc = _document(number)
    data = get_archive().read_blob(number)
    mime = doc["mime_type"] or "application/octet-stream"
    if mime.startswith("text/") or mime == "message/rfc822":
        response = Response(data, mimetype="text/plain; charset=utf-8")
    elif mime in PREVIEW_TYPES:
        response = Response(data, mimetype=mime)
    else:
        return download(number)
    response.headers["Content-Security-Policy"] = PDF_CSP if mime == "application/pdf" else PREVIEW_CSP
    response.headers["Content-Disposition"] = "inline"
    g.state.audit(g.user["name"], "webadmin.docs.preview", str(number), "")
    return response


@bp.get("/documents/<int:number>/download")
@login_required
def download(number: int):
    doc = _document(number)
    name = neutral_filename(doc["filename"] or (f"{number}.eml" if doc["kind"] == "mail" else f"{number}.bin"))
    response = Response(get_archive().read_blob(number), mimetype="application/octet-stream")
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
    response.headers["Content-Disposition"] = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
    response.headers["Content-Security-Policy"] = DOWNLOAD_CSP
    g.state.audit(g.user["name"], "webadmin.docs.download", str(number), name)
    return response
