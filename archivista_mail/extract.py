"""Text out of documents (PDF, HTML, office files, text) and type sniffing. Pure functions.

PDF text comes from pypdfium2 (about 12 ms for a one-page PDF here) with pypdf as the
fallback for files PDFium rejects (pypdf: about 38 ms). Heavy imports happen on first use so
that a no-op import run does not pay for them.
"""

from __future__ import annotations

import html
import io
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser

MAX_TEXT_CHARS = 2_000_000  # beyond this the text is cut: enough for search, bounded memory


@dataclass(frozen=True)
class Extracted:
    """Result of extraction: text, or an empty text with the reason it could not be read."""

    text: str
    status: str  # done | none | failed
    error: str | None = None


_magic = None


def sniff_mime_type(data: bytes) -> str:
    """MIME type from the content's first bytes (libmagic), not from what the mail's header claims."""
    global _magic
    if _magic is None:
        import magic

        _magic = magic.Magic(mime=True)
    if not data:
        return "application/x-empty"
    try:
        return _magic.from_buffer(data)
    except Exception:  # libmagic errors on some inputs; the header type is the fallback
        return "application/octet-stream"


class _TextFromHTML(HTMLParser):
    SKIP = {"script", "style", "head", "title", "noscript", "template"}
    BREAK = {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:  # type: ignore[override]
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BREAK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        elif tag in self.BREAK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def html_to_text(source: str) -> str:
    """Visible text of an HTML document: scripts and styles dropped, blocks on their own lines."""
    parser = _TextFromHTML()
    try:
        parser.feed(source)
        parser.close()
    except Exception:  # HTMLParser is lenient, but a bad charref must not cost the mail its text
        return html.unescape(re.sub(r"<[^>]*>", " ", source))
    text = "".join(parser.out)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def _pdf_text(data: bytes) -> str:
    try:
        import pypdfium2 as pdfium
    except ImportError:  # pragma: no cover - pypdfium2 is a dependency; pypdf still works
        return _pdf_text_pypdf(data)
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        return _pdf_text_pypdf(data)
    try:
        pages = []
        size = 0
        for page in pdf:
            textpage = page.get_textpage()
            text = textpage.get_text_bounded()
            textpage.close()
            page.close()
            pages.append(text)
            size += len(text)
            if size > MAX_TEXT_CHARS:
                break
        return "\n".join(pages)
    finally:
        pdf.close()


def _pdf_text_pypdf(data: bytes) -> str:
    import logging

    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns on every damaged xref
    reader = PdfReader(io.BytesIO(data), strict=False)
    return "\n".join((page.extract_text() or "") for page in reader.pages)


_XML_TEXT_MEMBERS = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ("word/document.xml",),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ("xl/sharedStrings.xml",),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ("ppt/slides/",),
    "application/vnd.oasis.opendocument.text": ("content.xml",),
    "application/vnd.oasis.opendocument.spreadsheet": ("content.xml",),
    "application/vnd.oasis.opendocument.presentation": ("content.xml",),
}


def _office_text(data: bytes, members: tuple[str, ...]) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        texts = []
        for name in sorted(z.namelist()):
            if any(name == m or (m.endswith("/") and name.startswith(m) and name.endswith(".xml")) for m in members):
                xml = z.read(name).decode("utf-8", "replace")
                xml = re.sub(r"</(w:p|a:p|text:p|text:h|si|row)>", "\n", xml)
                texts.append(html.unescape(re.sub(r"<[^>]+>", "", xml)))
        return "\n".join(texts)


def has_extractor(mime_type: str) -> bool:
    """True if ``extract_text`` can get text out of this type."""
    return (mime_type in ("application/pdf", "text/html", "application/json", "application/xml")
            or mime_type in _XML_TEXT_MEMBERS or mime_type.startswith("text/"))


def extract_text(data: bytes, mime_type: str) -> Extracted:
    """Extract searchable text from a document's bytes by its sniffed MIME type; never raises."""
    try:
        if mime_type == "application/pdf":
            text = _pdf_text(data)
        elif mime_type in _XML_TEXT_MEMBERS:
            text = _office_text(data, _XML_TEXT_MEMBERS[mime_type])
        elif mime_type == "text/html":
            text = html_to_text(data.decode("utf-8", "replace"))
        elif mime_type.startswith("text/") or mime_type in ("application/json", "application/xml"):
            text = data.decode("utf-8", "replace") if _is_utf8(data) else data.decode("windows-1252", "replace")
        else:
            return Extracted("", "none", f"no text extractor for {mime_type}")
    except Exception as e:  # damaged files: archived all the same, the reason is recorded
        return Extracted("", "failed", f"{mime_type} text unreadable: {type(e).__name__}: {str(e)[:200]}")
    text = text.replace("\x00", "")[:MAX_TEXT_CHARS]
    if not text.strip():
        return Extracted("", "none", "no text in document (scanned image or empty)")
    return Extracted(text, "done")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
