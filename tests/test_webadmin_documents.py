"""WebAdmin's document pages against hostile mail and hostile URLs (Flask test client; one Chromium check).

A pen-test found: a body frame quadratic in a mail's inline images; 500s on odd search text, page
numbers and document numbers; archived content cached and frameable; bidi controls disguising names.
"""

from __future__ import annotations

import base64
import random
import re
import time
from pathlib import Path

import pytest
from conftest import invoke_cli
from mailfactory import make_inline_images_mail, make_png  # noqa: E402
from test_webadmin import SAMPLES, login
from test_webadmin_browser import browser, webadmin  # noqa: F401 -- fixtures

from archivista_mail.archive.embedded import EmbeddedArchive, fts_query
from archivista_mail.config import Config
from archivista_mail.display import neutral_filename, reveal_controls
from webadmin import create_app
from webadmin.documents import IMAGE_BYTES, INLINE_BYTES

HEAD = ("From: {from_}\r\nTo: Archive <archive@example.com>\r\nSubject: {subject}\r\n"
        "Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: <{mid}@example.org>\r\nMIME-Version: 1.0\r\n")


def _words(text: str) -> str:
    """RFC 2047 encoded word (base64) for any text."""
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


RLO_SUBJECT = "Rechnung \u202egpj.exe"
RLO_MAIL = (HEAD.format(from_="=?utf-8?q?Bank=E2=80=AE_gro=2Eelpmaxe?= <evil@example.org>",
                        subject=_words(RLO_SUBJECT), mid="rlo")
            + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the attachment.\r\n"
            "--b\r\nContent-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEtxt.exe\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n"
            "--b\r\nContent-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment; filename*=utf-8''a%07b%E2%81%A6c%E2%80%8Ed%C2%85.pdf\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--b--\r\n").encode()


def related_mail(mid: str, html: str, images: list[tuple[str, str, bytes]]) -> bytes:
    """An HTML-only mail (multipart/related) with ``images`` as (Content-ID, content type, bytes)."""
    out = [HEAD.format(from_="News <news@example.org>", subject=mid, mid=mid),
           'Content-Type: multipart/related; boundary="r"\r\n\r\n',
           f"--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>{html}</body></html>\r\n"]
    for cid, ctype, data in images:
        b64 = base64.encodebytes(data).decode().replace("\n", "\r\n")
        out.append(f"--r\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n"
                   f"Content-ID: <{cid}>\r\nContent-Disposition: inline\r\n\r\n{b64}")
    out.append("--r--\r\n")
    return "".join(out).encode()


BIG = random.Random(1).randbytes(1_500_000)  # under the per-image limit, 2 MB as a data: URI
INLINE_MAIL = related_mail(
    "inline-images",
    '<p>logo <img src="cid:logo%40example.org" alt="logo"></p>'  # RFC 2392: the Content-ID, %-encoded
    + '<img src="cid:big@example.org" alt="big">' * 20  # one image, twenty copies: the page-size cap
    + '<img src="cid:huge@example.org" alt="huge"><img src="cid:vector@example.org" alt="vector">'
    + '<img src="cid:nowhere@example.org" alt="nowhere"><img src="/documents/1/download" alt="inside">',
    [("logo@example.org", "image/png", make_png(1)), ("big@example.org", "image/png", BIG),
     ("huge@example.org", "image/png", bytes(IMAGE_BYTES + 1)),
     ("vector@example.org", "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"/>')])


def import_hostile_mails(run, tmp_path: Path) -> None:
    """The samples and the hostile mails, archived through the importer."""
    mails = tmp_path / "mails"
    mails.mkdir()
    (mails / "rlo.eml").write_bytes(RLO_MAIL)
    (mails / "inline.eml").write_bytes(INLINE_MAIL)
    for source in (SAMPLES, mails):
        result = run("import", "--from", str(source))
        assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def archived(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """One archive for the module's read-only tests: the samples, the hostile mails and a user.
    Returns the data directory and the document numbers by title."""
    data_dir = tmp_path_factory.mktemp("data")

    def run(*args, input=None):
        return invoke_cli("--data-dir", str(data_dir), *args, input=input)

    assert run("init").exit_code == 0
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    import_hostile_mails(run, tmp_path_factory.mktemp("hostile"))
    store = EmbeddedArchive(data_dir)
    numbers = {d["title"]: d["number"] for d in store.list_documents(limit=1000)}
    store.close()
    return data_dir, numbers


@pytest.fixture(scope="module")
def archive(archived) -> dict[str, int]:
    return archived[1]


@pytest.fixture(scope="module")
def app(archived):
    return create_app(Config(data_dir=archived[0]))


@pytest.fixture(scope="module")
def client(app):
    """Logged in, in English (the new messages' German is for the translators)."""
    client = app.test_client()
    assert login(client, "anna", "anna-password").status_code == 302
    with client.session_transaction() as session:
        session["lang"] = "en"
    return client


# -- 1. inline images ---------------------------------------------------------------------------

def test_inline_images_are_embedded_once_each_within_a_cap_for_the_whole_body(client, archive):
    response = client.get(f"/documents/{archive['inline-images']}/body")
    html = response.get_data(as_text=True)
    logo = base64.b64encode(make_png(1)).decode()
    assert f'src="data:image/png;base64,{logo}"' in html  # found by its %-encoded cid: URL
    copies = html.count(base64.b64encode(BIG[:3000]).decode())
    assert 0 < copies < 20  # one 1.5 MB image twenty times would be a 40 MB page
    assert sum(len(uri) for uri in re.findall(r'src="(data:[^"]*)"', html)) <= INLINE_BYTES
    for alt in ("huge", "vector", "nowhere", "inside"):  # too big, SVG, unknown, pointing into WebAdmin
        assert re.search(rf'<img alt="{alt}">', html), alt
    assert "cid:" not in html and "/documents/1/download" not in html


def test_a_mail_with_thousands_of_inline_images_costs_about_one_parse(data_dir, run, tmp_path):
    from archivista_mail.mime import parse_mail

    # Half the pen-test's mail (12,000 images, 4.7 MB; see bench/inline_images_bench.py): quick to
    # import, and still a body frame six times a parse with one str.replace over the page per image.
    raw = make_inline_images_mail(6_000)
    (tmp_path / "mails").mkdir()
    (tmp_path / "mails" / "many.eml").write_bytes(raw)
    assert run("import", "--from", str(tmp_path / "mails")).exit_code == 0
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    client = create_app(Config(data_dir=data_dir)).test_client()
    assert login(client, "anna", "anna-password").status_code == 302
    with client.session_transaction() as session:
        session["lang"] = "en"
    start = time.perf_counter()
    parse_mail(raw)
    parse = time.perf_counter() - start
    for path in ("/documents/1", "/documents/1/body"):  # both parse the mail once; nothing more may grow with it
        start = time.perf_counter()
        response = client.get(path)
        elapsed = time.perf_counter() - start
        assert response.status_code == 200
        assert elapsed < 3 * parse + 0.3, f"{path}: {elapsed:.2f} s, parsing the mail takes {parse:.2f} s"
        if path == "/documents/1":
            html = response.get_data(as_text=True)
            assert html.count("<li>") == 1000 and "more attachments than listed here" in html
    assert response.get_data(as_text=True).count('src="data:image/png;base64,') == 6_000


# -- 2. hostile parameters ----------------------------------------------------------------------

HUGE = "99999999999999999999999"  # beyond SQLite's 64-bit integers
NUMBERS = [HUGE, str(2**63), str(2**63 - 1), "0", "-1", "abc", "1.5", "%00"]
QUERIES = ['"', '""', '"" ""', "%00", "a%00b", "%22%00", "NEAR(", "*", "AND", "NOT x", "x:y", "^", "%FF", "-",
           '"unterminated', "Rechnung OR", "(", "x" * 2000]
PAGES = ["9223372036854775807", "0", "-1", "abc", "", "1e3", HUGE, "%00", "%EF%BC%91", " 2 ", "1" * 5000]


def document_routes(app) -> list[str]:
    """Every route of the document pages and the direct links, so a new one is walked too."""
    return sorted({rule.rule for rule in app.url_map.iter_rules()
                   if rule.endpoint.startswith("documents.") or rule.endpoint == "links.direct"})


def test_hostile_parameters_on_every_document_route_never_cause_a_server_error(client, app):
    routes = document_routes(app)
    assert {"/", "/documents", "/documents/<int:number>", "/documents/<int:number>/body",
            "/documents/<int:number>/preview", "/documents/<int:number>/download", "/doc/<int:number>"} <= set(routes)
    hostile = ([f"q={q}" for q in QUERIES] + [f"page={p}" for p in PAGES]
               + [f"q={q}&page={p}" for q in QUERIES[:6] for p in PAGES])
    urls = []
    for route in routes:
        if "<int:number>" in route:
            urls += [route.replace("<int:number>", n) + "?" + q for n in NUMBERS for q in ("", hostile[0], hostile[-1])]
        else:
            urls += [f"{route}?{q}" for q in hostile]
    for url in urls:
        response = client.get(url, follow_redirects=True)
        assert response.status_code < 500, url


@pytest.mark.parametrize("query", ['"', '""', '"" ""', "%00", "%22%00%22"])
def test_a_search_that_cannot_match_finds_nothing_and_says_so(client, query):
    response = client.get(f"/documents?q={query}")
    assert response.status_code == 200
    assert "No documents found." in response.get_data(as_text=True)


def test_search_text_is_searched_for_not_run_as_fts_syntax(client, archive):
    assert b"Rechnung 2024-117" in client.get("/documents?q=Rechnung%00").data  # NUL separates words
    assert b"Rechnung 2024-117" in client.get('/documents?q="Rechnung 2024"').data  # a phrase stays one
    assert b"Rechnung 2024-117" not in client.get("/documents?q=Rechnung NOT 2024").data  # NOT is a word
    assert fts_query('say "hi there" NEAR(x') == '"say" "hi there" "NEAR(x"'
    assert fts_query('a"b""') == '"a" "b"' and fts_query(' " "" ') is None


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1e3", "%00", "%EF%BC%91"])
def test_a_page_that_is_not_a_whole_number_from_one_is_a_clear_400(client, page):
    response = client.get(f"/documents?q=Rechnung&page={page}")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "The page number must be a whole number from 1 up." in html
    assert "<nav>" in html  # our own page, with the way on


@pytest.mark.parametrize("page", ["9223372036854775807", "184467440737095517", HUGE, "1" * 5000])
def test_a_page_beyond_the_last_is_empty(client, page):
    response = client.get(f"/documents?page={page}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "No documents found." in html
    assert 'href="/documents">&larr; 1</a>' in html


@pytest.mark.parametrize("path", ["/documents/{n}", "/documents/{n}/body", "/documents/{n}/preview",
                                  "/documents/{n}/download", "/doc/{n}"])
@pytest.mark.parametrize("number", [HUGE, str(2**63), "0", "424242"])
def test_a_document_number_that_names_nothing_is_a_404_page(client, path, number):
    response = client.get(path.format(n=number), follow_redirects=True)
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "There is no document with this number." in html and "<nav>" in html
    assert response.headers["Cache-Control"] == "no-store"


def test_the_archive_itself_answers_numbers_beyond_sqlite_without_overflowing(archived):
    from archivista_mail.errors import NotFoundError

    store = EmbeddedArchive(archived[0])
    with pytest.raises(NotFoundError):
        store.get_document(2**80)
    assert store.list_documents(offset=2**80) == [] and store.list_documents(parent=2**80) == []
    assert store.search("Rechnung", offset=2**80) == [] and store.search('"') == []
    assert store.list_documents(limit=2**80)  # as many as there are
    store.close()


# -- 3. headers ---------------------------------------------------------------------------------

def test_every_response_showing_archived_content_is_kept_out_of_caches(client, archive):
    mail, pdf = archive["Rechnung 2024-117 für Beratung"], archive["Rechnung 2024-117.pdf"]
    newsletter = archive["Our spring newsletter"]
    for path in ["/", "/documents?q=Rechnung", f"/documents/{mail}", f"/documents/{newsletter}/body",
                 f"/documents/{pdf}/preview", f"/documents/{mail}/preview", f"/documents/{pdf}/download"]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store", path


def test_our_pages_may_be_framed_by_ourselves_only(client, app, archive):
    newsletter, pdf = archive["Our spring newsletter"], archive["Rechnung 2024-117.pdf"]
    for response in (client.get("/documents"), client.get(f"/documents/{newsletter}"), app.test_client().get("/login")):
        assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]
    body = client.get(f"/documents/{newsletter}/body").headers["Content-Security-Policy"]
    assert body.startswith("sandbox;") and "default-src 'none'" in body and "frame-ancestors 'self'" in body
    preview = client.get(f"/documents/{pdf}/preview")
    policy = preview.headers["Content-Security-Policy"]
    assert preview.mimetype == "application/pdf" and preview.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in policy and "default-src 'none'" in policy and "frame-ancestors 'self'" in policy
    image = client.get(f"/documents/{archive['part-1.png']}/preview")
    assert image.mimetype.startswith("image/") and image.headers["Content-Security-Policy"].startswith("sandbox;")
    download = client.get(f"/documents/{pdf}/download").headers
    assert download["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in download["Content-Security-Policy"]


def test_pdf_and_html_previews_show_in_chromium_with_these_headers(webadmin, browser, run, tmp_path):  # noqa: F811
    """Our frames are not blocked by frame-ancestors or the sandbox; the PDF viewer runs (it would not in
    a sandboxed iframe); names show their bidi controls as markers."""
    import_hostile_mails(run, tmp_path)
    context = browser.new_context(locale="de-DE")
    page = context.new_page()
    page.goto(f"{webadmin}/login")
    page.fill("input[name=username]", "anna")
    page.fill("input[name=password]", "anna-password")
    with page.expect_navigation():
        page.click("#login")

    page.goto(f"{webadmin}/documents?q=Rechnung")
    with page.expect_navigation():
        page.click("text=Rechnung 2024-117.pdf")
    preview = page.wait_for_selector("iframe.preview").content_frame()
    for _ in range(100):  # Chromium's PDF viewer is an extension frame inside the preview frame
        if any(f.url.startswith("chrome-extension://") for f in page.frames):
            break
        page.wait_for_timeout(50)
    assert any(f.url.startswith("chrome-extension://") for f in page.frames), [f.url for f in page.frames]
    assert preview.url.endswith("/preview") and preview.evaluate("document.contentType") == "application/pdf"

    page.goto(f"{webadmin}/documents?q=newsletter")
    with page.expect_navigation():
        page.click("text=Our spring newsletter")
    body = page.wait_for_selector("iframe.body").content_frame()
    body.wait_for_selector("img")
    assert "Spring offers" in body.inner_text("body")
    body.wait_for_function("document.images[0].complete")
    assert body.evaluate("document.images[0].naturalWidth") > 0  # the inline logo, from a data: URI

    page.goto(f"{webadmin}/documents?q=gpj")
    with page.expect_navigation():
        page.click("table.results a")
    assert page.inner_text("#doc-title").endswith("Rechnung ⟨U+202E⟩gpj.exe")
    assert "invoice⟨U+202E⟩txt.exe" in page.inner_text("#attachments")
    context.close()


# -- 4. characters that hide or reorder text ------------------------------------------------------

@pytest.mark.parametrize("text, shown", [
    ("invoice\u202etxt.exe", "invoice⟨U+202E⟩txt.exe"),
    ("a\u200eb\u200fc\u2066d\u2067e\u2068f\u2069g\u061ch", "a⟨U+200E⟩b⟨U+200F⟩c⟨U+2066⟩d⟨U+2067⟩e⟨U+2068⟩f⟨U+2069⟩g⟨U+061C⟩h"),
    ("\u202a\u202b\u202c\u202d", "⟨U+202A⟩⟨U+202B⟩⟨U+202C⟩⟨U+202D⟩"),
    ("bell\x07 nul\x00 esc\x1b[31m del\x7f c1\x85\x9b", "bell⟨U+0007⟩ nul⟨U+0000⟩ esc⟨U+001B⟩[31m del⟨U+007F⟩ c1⟨U+0085⟩⟨U+009B⟩"),
    ("zero\u200bwidth\ufeff tag\U000e0041", "zero⟨U+200B⟩width⟨U+FEFF⟩ tag⟨U+E0041⟩"),
    ("line\u2028para\u2029", "line⟨U+2028⟩para⟨U+2029⟩"),
    ("Grüße – Ärger.pdf", "Grüße – Ärger.pdf"),  # letters and punctuation of any script stay
    ("חשבונית.pdf", "חשבונית.pdf"),
    ("👩\u200d💻 and می\u200cخواهم", "👩\u200d💻 and می\u200cخواهم"),  # ZWJ and ZWNJ join letters and emoji
    ("broken \udce4 byte", "broken ⟨U+DCE4⟩ byte"),
    ("", ""), (None, ""),
])
def test_characters_that_hide_or_reorder_text_are_shown_as_markers(text, shown):
    assert reveal_controls(text) == shown


def test_download_names_lose_hiding_characters_slashes_and_quotes():
    assert neutral_filename("invoice\u202etxt.exe") == "invoice_txt.exe"
    assert neutral_filename('..\\a/b"c\r\n\x00d.pdf') == ".._a_b_c___d.pdf"
    assert neutral_filename("Grüße.pdf") == "Grüße.pdf"


HIDING_CHARACTERS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\x00-\x08\x0b\x0c\x0e-\x1f\x85]")


def test_names_and_subjects_show_their_hiding_characters_in_lists_and_views(client, archive):
    mail = archive[RLO_SUBJECT]
    pages = {"list": client.get("/documents"), "search": client.get("/documents?q=gpj"),
             "mail": client.get(f"/documents/{mail}"), "file": client.get(f"/documents/{mail + 1}")}
    for name, response in pages.items():
        html = response.get_data(as_text=True)
        assert response.status_code == 200
        assert not HIDING_CHARACTERS.search(html), name
    assert "Rechnung ⟨U+202E⟩gpj.exe" in pages["search"].get_data(as_text=True)
    view = pages["mail"].get_data(as_text=True)
    assert "<title>%d: Rechnung ⟨U+202E⟩gpj.exe</title>" % mail in view
    assert '<bdi dir="ltr">Bank⟨U+202E⟩ gro.elpmaxe &lt;evil@example.org&gt;</bdi>' in view
    assert '<bdi dir="ltr">invoice⟨U+202E⟩txt.exe</bdi>' in view  # the attachment list
    assert "a⟨U+0007⟩b⟨U+2066⟩c⟨U+200E⟩d⟨U+0085⟩.pdf" in view
    assert "invoice⟨U+202E⟩txt.exe" in pages["file"].get_data(as_text=True)


def test_download_names_are_neutralised(client, archive):
    mail = archive[RLO_SUBJECT]
    names = [client.get(f"/documents/{n}/download").headers["Content-Disposition"] for n in (mail + 1, mail + 2)]
    assert names[0] == "attachment; filename=\"invoice_txt.exe\"; filename*=UTF-8''invoice_txt.exe"
    assert names[1] == "attachment; filename=\"a_b_c_d_.pdf\"; filename*=UTF-8''a_b_c_d_.pdf"
