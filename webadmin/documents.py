"""Documents: full-text search, list, the document view, safe previews and downloads."""

from __future__ import annotations

import base64
import re

import nh3
from flask import Blueprint, Response, g, render_template, request

from archivista_mail.errors import NotFoundError
from archivista_mail.mime import parse_mail

from . import get_archive
from .auth import login_required
from .links import direct_link

bp = Blueprint("documents", __name__)
PAGE = 50
PREVIEW_TYPES = ("application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp")
# What an archived HTML mail may keep: text and layout; no scripts, forms, frames or remote content.
SANDBOX_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:"


def _document(number: int) -> dict:
    try:
        return get_archive().get_document(number)
    except NotFoundError:
        from flask import abort

        abort(404)


@bp.get("/")
@bp.get("/documents")
@login_required
def search():
    query = request.args.get("q", "").strip()
    page = max(1, request.args.get("page", 1, type=int))
    archive = get_archive()
    if query:
        rows = archive.search(query, limit=PAGE + 1, offset=(page - 1) * PAGE)
    else:
        rows = archive.list_documents(limit=PAGE + 1, offset=(page - 1) * PAGE)
    return render_template("documents/search.html", rows=rows[:PAGE], more=len(rows) > PAGE, query=query, page=page)


@bp.get("/documents/<int:number>")
@login_required
def view(number: int):
    doc = _document(number)
    archive = get_archive()
    children = list(reversed(archive.list_documents(parent=number, limit=1000)))
    parent = archive.get_document(doc["parent"]) if doc["parent"] else None
    body_text, has_html = "", False
    if doc["kind"] == "mail":
        parsed = parse_mail(archive.read_blob(number))
        body_text, has_html = parsed.text, bool(parsed.html)
    url, title = direct_link(doc)
    g.state.audit(g.user["name"], "webadmin.docs.view", str(number), "")
    return render_template("documents/view.html", doc=doc, children=children, parent=parent, body_text=body_text,
                           has_html=has_html, link_url=url, link_title=title,
                           previewable=doc["mime_type"] in PREVIEW_TYPES or (doc["mime_type"] or "").startswith("text/"))


def safe_html(source: str) -> str:
    """Archived HTML cleaned for display: scripts, event handlers, forms, frames and remote images removed."""
    cleaned = nh3.clean(source, tags=nh3.ALLOWED_TAGS - {"a"} | {"span", "div", "font", "center"},
                        clean_content_tags={"script", "style"}, url_schemes={"data", "cid"}, link_rel=None,
                        attributes={"*": {"style", "align", "width", "height", "colspan", "rowspan"},
                                    "img": {"src", "alt"}, "font": {"color", "size", "face"}})
    return re.sub(r"(?i)url\s*\(", "blocked(", cleaned)  # no remote content through CSS either


def inline_images(html: str, parts) -> str:
    """Point cid: references at the mail's own inline images (as data: URIs; nothing is loaded remotely)."""
    for part in parts:
        if part.content_id and part.content_type.startswith("image/") and part.content_type != "image/svg+xml" \
                and isinstance(part.data, bytes) and len(part.data) < 2_000_000:
            uri = f"data:{part.content_type};base64,{base64.b64encode(part.data).decode()}"
            html = html.replace(f"cid:{part.content_id}", uri)
    return html


@bp.get("/documents/<int:number>/body")
@login_required
def body(number: int):
    """A mail's HTML body, cleaned, served with a sandboxing CSP so nothing in it runs in our origin."""
    doc = _document(number)
    if doc["kind"] != "mail":
        return Response("Not a mail.", 404, mimetype="text/plain")
    parsed = parse_mail(get_archive().read_blob(number))
    response = Response(safe_html(inline_images(parsed.html, parsed.parts)), mimetype="text/html")
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
        response = Response(data, mimetype="text/plain")
        response.charset = "utf-8"
    elif mime in PREVIEW_TYPES:
        response = Response(data, mimetype=mime)
    else:
        return download(number)
    # The browser's PDF viewer does not run in a sandboxed document; nothing else needs more than this.
    response.headers["Content-Security-Policy"] = ("default-src 'none'; object-src 'self'" if mime == "application/pdf"
                                                   else "sandbox; default-src 'none'; img-src 'self' data:")
    response.headers["Content-Disposition"] = "inline"
    g.state.audit(g.user["name"], "webadmin.docs.preview", str(number), "")
    return response


@bp.get("/documents/<int:number>/download")
@login_required
def download(number: int):
    doc = _document(number)
    name = doc["filename"] or (f"{number}.eml" if doc["kind"] == "mail" else f"{number}.bin")
    name = re.sub(r'[\\/\r\n"]', "_", name)
    response = Response(get_archive().read_blob(number), mimetype="application/octet-stream")
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
    from urllib.parse import quote

    response.headers["Content-Disposition"] = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
    g.state.audit(g.user["name"], "webadmin.docs.download", str(number), name)
    return response
