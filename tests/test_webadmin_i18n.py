"""WebAdmin in German and English: complete catalogues, no German in English pages, option labels and dates
per language, error pages (a failed CSRF check too) in the user's language and the site's layout, the core's
sentences (t()) in the user's language in WebAdmin and in English in the CLI."""

from __future__ import annotations

import ast
import html
import io
import re
import socket
import sqlite3
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from conftest import PASSWORD
from test_webadmin import ADMIN_PAGES, DOCUMENT_PAGES, SAMPLES, csrf, login

from archivista_mail.accounts import Account
from archivista_mail.config import Config
from archivista_mail.errors import ConfigError, t
from archivista_mail.sources.graph import _login_failure
from archivista_mail.sources.mailserver import translated
from archivista_mail.state import State
from webadmin import create_app
from webadmin.i18n import LANGUAGES, check_timezone

ROOT = Path(__file__).parent.parent
TRANSLATIONS = ROOT / "webadmin" / "translations"
# What 'make messages' extracts: -k lazy_gettext, and t() for the core's sentences (archivista_mail/errors.py).
KEYWORDS = {**DEFAULT_KEYWORDS, "lazy_gettext": None, "t": None}
CATALOGUES = [lang for lang in LANGUAGES if lang != "en"]  # English is the source language: the ids themselves

MOMENT = "2026-11-24T10:03:00Z"  # stored in UTC; 11:03 in Zurich


def used_message_ids() -> dict:
    """Every message id in WebAdmin's code and templates and in the core's t() sentences, extracted as
    'make messages' does (babel.cfg)."""
    with open(ROOT / "babel.cfg") as f:
        method_map, options_map = parse_mapping_cfg(f)
    found = {}
    for top in ("webadmin", "archivista_mail"):
        for filename, lineno, message, _comments, context in extract_from_dir(
                ROOT / top, method_map, options_map, keywords=KEYWORDS):
            found.setdefault((message, context), f"{top}/{filename}:{lineno}")
    assert len(found) > 100, "the extraction found too little: check babel.cfg"
    return found


def catalogue(lang: str):
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f)


@pytest.mark.parametrize("lang", CATALOGUES)
def test_every_message_id_in_code_and_templates_has_a_translation(lang):
    cat = catalogue(lang)
    assert not cat.fuzzy, "the catalogue's header is marked fuzzy: pybabel compile would skip it"
    missing = []
    for (message, context), where in used_message_ids().items():
        entry = cat.get(message, context)
        strings = entry.string if entry is not None and isinstance(entry.string, tuple) else (
            entry.string if entry is not None else "",)
        if entry is None or entry.fuzzy or not all(strings):
            missing.append(f"{where}: {message!r}")
    assert not missing, (f"{len(missing)} message ids without a {lang} translation (fuzzy or empty counts as "
                         "missing); run 'make messages', translate, 'make messages-compile':\n" + "\n".join(missing))


@pytest.mark.parametrize("lang", CATALOGUES)
def test_translations_keep_their_placeholders(lang):
    problems = [f"{message.id!r}: {errors}" for message, errors in catalogue(lang).check()]
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize("lang", CATALOGUES)
def test_the_committed_mo_file_is_compiled_from_its_po_file(lang):
    fresh = io.BytesIO()
    write_mo(fresh, catalogue(lang))  # what 'make messages-compile' writes (fuzzy entries left out)
    fresh.seek(0)
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / "messages.mo", "rb") as f:
        committed = read_mo(f)
    assert entries(committed) == entries(read_mo(fresh)), \
        f"webadmin/translations/{lang}/LC_MESSAGES/messages.mo is out of date: run 'make messages-compile'"


def entries(cat) -> dict:
    """id and context -> translation (plural ids and strings as tuples), the header included."""
    def frozen(value):
        return tuple(value) if isinstance(value, (list, tuple)) else value

    return {(frozen(m.id), m.context): frozen(m.string) for m in cat}


def test_the_time_zone_is_the_machines_unless_one_is_configured():
    assert check_timezone("Europe/Zurich") == "Europe/Zurich"
    assert check_timezone("")  # the machine's, or UTC
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        check_timezone("Mars/Olympus")


@pytest.fixture
def app(data_dir, run):
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    assert run("admin", "create", "victor", "--password-stdin", "--role", "viewer",
               input="victor-password\n").exit_code == 0
    assert run("import", "--from", str(SAMPLES)).exit_code == 0
    assert run("account", "add", "imap", "box", "--host", "mail.example.org", "--user", "u", "--password-stdin",
               input="imap-secret-123\n").exit_code == 0
    assert run("account", "add", "imap", "mover", "--host", "mail.example.org", "--user", "u", "--security",
               "starttls", "--after", "move:Archiv", "--password-stdin", input="imap-secret-123\n").exit_code == 0
    assert run("account", "add", "o365", "m365", "--tenant", "t", "--client-id", "c", "--client-secret-stdin",
               "--mailbox", "a@example.org", input="graph-secret-456\n").exit_code == 0
    state = State(data_dir)
    for status in ("ok", "partial", "unreachable"):
        state.save_run({"started": MOMENT, "finished": MOMENT, "account": None, "source": "all accounts",
                        "status": status, "fetched": 1234, "archived": 2, "duplicates": 0, "failed": 0,
                        "exit_code": 0, "errors": []})
    state.db.execute("UPDATE audit SET at=?", [MOMENT])
    state.close()
    with sqlite3.connect(data_dir / "archive.db") as db:
        db.execute("UPDATE documents SET archived_at=?", [MOMENT])
    return create_app(Config(data_dir=data_dir, webadmin_timezone="Europe/Zurich"))


def client_in(app, lang: str, user: str = "anna", password: str = "anna-password"):
    client = app.test_client()
    assert login(client, user, password).status_code == 302
    if lang != "de":
        token = csrf(client.get("/documents").data)
        assert client.post("/language", data={"csrf_token": token, "lang": lang, "next": "/"}).status_code == 302
    return client


# WebAdmin's own German words: none of them is in the sample mails, so an English page must show none.
GERMAN = ["Abmelden", "Dokumente", "Suchen", "Speichern", "Bearbeiten", "Löschen", "Konten", "Protokoll",
          "Sprache", "DNS-Name für API-Aufruf", "Titelfeld für API-Link", "Anzahl Mails", "Aktennummer",
          "Titelinhalt", "Unverändert lassen", "Verschieben", "verschieben", "Unverschlüsselt", "Anhänge",
          "Betreff", "Datum", "Archiviert", "Teilweise", "Nicht erreichbar", "alle Konten", "Nachrichten",
          "Mail-Archivierung", "Verbindung testen", "Jetzt ausführen", "Ordner", "Benutzer", "Passwort",
          "Leer lassen", "Gestartet", "Zeit", "Aktion", "Herunterladen", "Nummer", "Typ", "Zielordner", "Leser"]


@pytest.mark.parametrize("path", [p for p in DOCUMENT_PAGES + ADMIN_PAGES if "/body" not in p and
                                  "/preview" not in p and "/download" not in p])
def test_english_pages_show_no_german(app, path):
    page = client_in(app, "en").get(path, follow_redirects=True).get_data(as_text=True)
    assert '<html lang="en">' in page
    found = [word for word in GERMAN if re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", page)]
    assert not found, f"German on the English page {path}: {found}"


@pytest.mark.parametrize("path,words", [
    ("/settings/links", ["DNS name for API calls", "Title field for API links", "(number: title)", ">Subject<",
                         ">File name<"]),
    ("/accounts/new?kind=o365", ["Mails per request (Office 365)", "Leave as it is", "Move to a folder",
                                 "Mark as read"]),
    ("/accounts/", ["Leave as it is", "Move to Archiv", "Security: SSL/TLS", "Security: STARTTLS", "Administrator"]),
    ("/accounts/new", ["Unencrypted", "Folder to move to"]),
    ("/documents", [">Mail<", ">Attachment<"]),
    ("/imports/", [">OK<", ">Partly failed<", ">Unreachable<", ">all accounts<", ">1,234<"]),
])
def test_english_pages_show_english_labels_for_stored_values(app, path, words):
    page = client_in(app, "en").get(path).get_data(as_text=True)
    for word in words:
        assert word in page, (path, word)


@pytest.mark.parametrize("path,words", [
    ("/settings/links", ["DNS-Name für API-Aufruf", "Titelfeld für API-Link", "Aktennummer: Titelinhalt",
                         ">Betreff<", ">Dateiname<"]),
    ("/accounts/new?kind=o365", ["Anzahl Mails (Office 365)", "Unverändert lassen", "In einen Ordner verschieben",
                                 "Als gelesen markieren"]),
    ("/accounts/", ["Unverändert lassen", "In Archiv verschieben", "Sicherheit: SSL/TLS", "Sicherheit: STARTTLS"]),
    ("/accounts/new", ["Unverschlüsselt", "Zielordner"]),
    ("/documents", [">Mail<", ">Anhang<"]),
    ("/imports/", [">OK<", ">Teilweise fehlgeschlagen<", ">Nicht erreichbar<", ">alle Konten<", ">1.234<"]),
])
def test_german_pages_show_the_german_labels(app, path, words):
    page = client_in(app, "de").get(path).get_data(as_text=True)
    assert '<html lang="de">' in page
    for word in words:
        assert word in page, (path, word)


def test_stored_option_values_stay_as_they_are_in_the_forms(app):
    page = client_in(app, "de").get("/accounts/mover/edit").get_data(as_text=True)
    assert '<option value="move" selected>In einen Ordner verschieben</option>' in page
    assert '<option value="starttls" selected>STARTTLS</option>' in page
    assert 'name="move_to" placeholder="Zielordner" aria-label="Zielordner" value="Archiv"' in page


TIME = f'<time datetime="{MOMENT}" title="{MOMENT}">'


@pytest.mark.parametrize("path", ["/imports/", "/audit", "/documents/1"])
def test_dates_are_shown_in_german_in_the_appliances_time_zone_with_the_stored_value_kept(app, path):
    page = client_in(app, "de").get(path).get_data(as_text=True)
    assert f"{TIME}24.11.2026 11:03</time>" in page
    assert "2026-11-24T10:03:00Z<" not in page  # never the raw value as text


@pytest.mark.parametrize("path", ["/imports/", "/audit", "/documents/1"])
def test_dates_are_shown_in_babels_medium_english_format(app, path):
    page = client_in(app, "en").get(path).get_data(as_text=True)
    assert re.search(rf"{re.escape(TIME)}Nov 24, 2026, 11:03:00\sAM</time>", page), page


def test_a_mails_date_is_shown_in_the_appliances_time_zone(app):
    # samples/01: "Date: Tue, 02 Apr 2024 09:15:00 +0200", in Zurich's summer time too
    de = client_in(app, "de")
    assert ('<time datetime="2024-04-02T09:15:00+02:00" title="2024-04-02T09:15:00+02:00">02.04.2024 09:15</time>'
            in de.get("/documents/1").get_data(as_text=True))
    assert ">02.04.2024 09:15</time>" in de.get("/documents").get_data(as_text=True)
    en = client_in(app, "en").get("/documents/1").get_data(as_text=True)
    assert re.search(r">Apr 2, 2024, 9:15:00\sAM</time>", en)


def test_numbers_are_formatted_per_language(app):
    assert re.search(r"\(\d{1,3}(\.\d{3})* Bytes?\)", client_in(app, "de").get("/documents/2").get_data(as_text=True))
    assert re.search(r"\(\d{1,3}(,\d{3})* bytes?\)", client_in(app, "en").get("/documents/2").get_data(as_text=True))


@pytest.mark.parametrize("lang,title,text", [
    ("de", "Das Formular ist abgelaufen", "Seite war zu lange geöffnet"),
    ("en", "The form has expired", "page was open too long"),
])
@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_failed_csrf_check_explains_itself_in_the_users_language(app, lang, title, text, token):
    client = client_in(app, lang)
    data = {"base_url": "https://evil.example"} | ({"csrf_token": token} if token else {})
    response = client.post("/settings/links", data=data, headers={"Referer": "http://localhost/settings/links"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert f"<h1>{title}</h1>" in page and text in page
    assert f'<html lang="{lang}">' in page and 'id="logout"' in page  # the site's layout, still logged in
    assert '<a href="/settings/links" id="back">' in page
    assert "CSRF" not in page
    assert "evil.example" not in client.get("/settings/links").get_data(as_text=True)  # nothing was saved


def test_the_language_can_be_switched_from_the_csrf_page(app):
    client = client_in(app, "de")
    page = client.post("/settings/links", data={}, headers={"Referer": "http://localhost/audit"})
    assert page.status_code == 400
    assert '<input type="hidden" name="next" value="/audit">' in page.get_data(as_text=True)


@pytest.mark.parametrize("lang,words", [
    ("de", {404: "Nicht gefunden", 403: "Diese Seite ist Administratoren vorbehalten.", 405: "Hier nicht möglich",
            413: "Zu viele Daten"}),
    ("en", {404: "Not found", 403: "This page is for administrators.", 405: "Not possible here",
            413: "Too much data"}),
])
def test_error_pages_use_the_layout_and_the_users_language_and_keep_their_status(app, lang, words):
    viewer = client_in(app, lang, "victor", "victor-password")
    responses = {404: viewer.get("/no-such-page"), 403: viewer.get("/accounts/"), 405: viewer.get("/logout"),
                 413: viewer.post("/language", data={"x": "y" * (2 * 1024 * 1024)})}
    for code, response in responses.items():
        page = response.get_data(as_text=True)
        assert response.status_code == code, code
        assert words[code] in page, (code, page)
        assert f'<html lang="{lang}">' in page and 'id="logout"' in page, code
    assert "POST" in responses[405].headers["Allow"]


@pytest.mark.parametrize("lang,words", [("de", ["Ungültige Anfrage", "Interner Fehler"]),
                                        ("en", ["Bad request", "Internal error"])])
def test_bad_requests_and_internal_errors_get_a_page_in_the_users_language(data_dir, run, lang, words):
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    app = create_app(Config(data_dir=data_dir))

    def broken():
        raise RuntimeError("a bug")

    def bad():
        from flask import abort

        abort(400)

    app.add_url_rule("/broken", view_func=broken)
    app.add_url_rule("/bad", view_func=bad)
    client = client_in(app, lang)
    for path, code, word in [("/bad", 400, words[0]), ("/broken", 500, words[1])]:
        response = client.get(path)
        assert response.status_code == code and word in response.get_data(as_text=True)
        assert "a bug" not in response.get_data(as_text=True)


def test_an_unknown_time_zone_stops_webadmin_with_a_sentence(data_dir):
    with pytest.raises(ConfigError, match="webadmin_timezone"):
        create_app(Config(data_dir=data_dir, webadmin_timezone="Europe/Atlantis"))


# -- the core's sentences (archivista_mail, written with t()) ----------------------------------------------------
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def core_templates() -> list[tuple[str, str, set[str]]]:
    """Every t("...") call in archivista_mail: where it is, its template, the names of the values it passes."""
    found = []
    for path in sorted((ROOT / "archivista_mail").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "t"):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            first = node.args[0] if len(node.args) == 1 else None
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), \
                f"{where}: t() takes one string literal ('make messages' extracts nothing else) and named values"
            assert all(k.arg for k in node.keywords), f"{where}: name each value (no **values): the test checks them"
            found.append((where, first.value, {k.arg for k in node.keywords}))
    assert len(found) > 80, "too few t() sentences found in archivista_mail"
    return found


def german():
    return Translations.load(TRANSLATIONS, ["de"])


def test_every_core_sentence_is_given_exactly_the_values_its_template_names():
    wrong = [f"{where}: {template!r} is given {sorted(names)}" for where, template, names in core_templates()
             if names != set(PLACEHOLDER.findall(template))]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("lang", CATALOGUES)
def test_every_core_sentences_translation_has_exactly_its_placeholders(lang):
    # Babel's catalogue check (above) misses a placeholder the translation leaves out; Text.translated() falls
    # back to English on a broken one, so a mistake here would only show as an untranslated sentence.
    cat = catalogue(lang)
    wrong = []
    for where, template, names in core_templates():
        entry = cat.get(template)
        values = {name: f"<{name}>" for name in names}
        try:
            shown = entry.string % values if values else entry.string
        except (AttributeError, KeyError, ValueError, TypeError) as e:
            wrong.append(f"{where}: {template!r}: {type(e).__name__} {e}")
            continue
        missing = [name for name, value in values.items() if value not in shown]
        if missing or set(PLACEHOLDER.findall(entry.string)) != names:
            wrong.append(f"{where}: {template!r} -> {entry.string!r} (missing {missing})")
    assert not wrong, "\n".join(wrong)


def test_a_sentence_with_a_sentence_inside_is_translated_whole_and_stays_english_for_the_cli():
    acc = Account("box", "imap", {"host": "mail.example.org", "port": 143, "security": "plain", "user": "u"})
    with pytest.raises(Exception) as caught:
        with translated(acc, t("connecting"), 5):
            raise EOFError("b'* BYE server says goodbye'")
    e = caught.value
    assert str(e) == ("Account box: the connection to mail.example.org:143 failed while connecting (* BYE server "
                      "says goodbye). The next run continues where this one stopped.")
    assert e.localized(german().gettext, public=True) == (
        "Konto box: Die Verbindung zu mail.example.org:143 ist beim Verbinden fehlgeschlagen. Prüfen Sie, ob "
        "Server, Port und Sicherheit zum Mailserver des Kontos gehören.")
    assert "BYE" in e.localized(german().gettext) and "BYE" not in e.localized(german().gettext, public=True)
    login = _login_failure(Account("m365", "o365", {"tenant": "t", "client_id": "c"}),
                           "AADSTS7000215: Invalid client secret provided.")
    assert str(login) == ("Account m365: Microsoft 365 refused the app's login (AADSTS7000215): the client secret "
                          "is wrong. Enter the secret's Value (not its Secret ID) from the app registration.")
    assert login.translated(german().gettext) == (
        "Konto m365: Microsoft 365 hat die Anmeldung der App abgelehnt (AADSTS7000215): Das Client-Secret ist "
        "falsch. Geben Sie den Wert des Secrets (Value, nicht die Secret ID) aus der App-Registrierung ein.")


def alert(page: str) -> str:
    """The error paragraph of a page, as the reader sees it (entities such as &#39; decoded)."""
    found = re.search(r'<p class="error"[^>]*role="alert">(.*?)</p>', page, re.S)
    assert found, page
    return html.unescape(found.group(1))


def new_imap_account(client, **fields):
    token = csrf(client.get("/accounts/new").data)
    form = {"csrf_token": token, "name": "neu", "host": "mail.example.org", "port": "993",
            "security": "ssl", "user": "u", "password": "secret-1", "folders": "INBOX", "after": "none", **fields}
    return client.post("/accounts/new", data=form)


@pytest.mark.parametrize("fields,de,en", [
    ({"port": "0"}, "Konto neu: Port muss zwischen 1 und 65535 liegen, nicht 0.",
     "Account neu: Port must be between 1 and 65535, not 0."),
    ({"folders": "INBOX\nArchiv//Alt"},
     "Der Ordnername «Archiv//Alt» hat eine leere Ebene. Schreiben Sie die Ebenen mit je einem «/» dazwischen, "
     "z. B. Archiv/Alt.",
     "The folder name 'Archiv//Alt' has an empty level. Write levels with one '/' between them, e.g. Archiv/Alt."),
    ({"after": "move", "move_to": "Archiv//Alt"}, "Der Ordnername «Archiv//Alt» hat eine leere Ebene.",
     "The folder name 'Archiv//Alt' has an empty level."),
    ({"after": "move", "move_to": "INBOX"}, "Konto neu: Mails würden nach «INBOX» verschoben, der selbst archiviert "
     "wird", "Account neu: mail would be moved into 'INBOX', which is archived itself"),
])
def test_the_account_forms_core_sentences_are_in_the_users_language(app, fields, de, en):
    for lang, sentence in [("de", de), ("en", en)]:
        response = new_imap_account(client_in(app, lang), **fields)
        assert response.status_code == 400, lang
        assert sentence in alert(response.get_data(as_text=True)), lang
    assert "neu" not in [a.name for a in State(app.config["ARCHIVISTA"].data_dir).accounts()]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed again): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_reported_in_the_users_language(app, run):
    port = closed_port()
    assert run("account", "add", "imap", "closed", "--host", "127.0.0.1", "--port", str(port), "--security",
               "plain", "--user", "u", "--password-stdin", input="secret-1\n").exit_code == 0
    pages = {}
    for lang in ("de", "en"):
        client = client_in(app, lang)
        pages[lang] = alert(client.post("/accounts/closed/test", data={"csrf_token": csrf(
            client.get("/accounts/").data)}).get_data(as_text=True))
    assert pages["de"] == (f"Konto closed: 127.0.0.1:{port} hat die Verbindung abgelehnt. Prüfen Sie den Port und "
                           "ob der Mailserver läuft.")
    assert pages["en"] == (f"Account closed: 127.0.0.1:{port} refused the connection. Check the port and that the "
                           "mail server is running.")
    cli = run("account", "test", "closed")
    assert f"127.0.0.1:{port} refused the connection. Check the port" in cli.output


def test_the_connection_tests_folder_report_is_in_the_users_language(app, run, mailbox):
    assert run("account", "add", "imap", "dove", "--host", "127.0.0.1", "--port", str(mailbox.server.ports["imap"]),
               "--security", "plain", "--user", mailbox.user, "--password-stdin", "--folder", "INBOX", "--folder",
               "Nope", "--after", "move:Archiv/Alt", input=PASSWORD + "\n").exit_code == 0
    pages = {}
    for lang in ("de", "en"):
        client = client_in(app, lang)
        page = client.post("/accounts/dove/test", data={"csrf_token": csrf(client.get("/accounts/").data)})
        pages[lang] = html.unescape(page.get_data(as_text=True))
    assert "Konto dove: Den Ordner «Nope» gibt es auf 127.0.0.1 nicht. Ordner dort: INBOX." in pages["de"]
    assert ("Nach dem Archivieren: Den Ordner «Archiv/Alt» gibt es noch nicht; er kann erstellt werden und wird es "
            "beim ersten Verschieben") in pages["de"]
    assert "Account dove: the folder 'Nope' does not exist on 127.0.0.1. Folders there: INBOX." in pages["en"]
    assert ("After archiving: the folder 'Archiv/Alt' does not exist yet; it can be created and will be at the "
            "first move") in pages["en"]


def test_the_cli_says_the_core_sentences_in_english(run):
    result = run("account", "add", "imap", "box", "--host", "mail.example.org", "--port", "70000", "--user", "u",
                 "--password-stdin", input="secret-1\n")
    assert result.exit_code == 2, result.output
    assert "Error: Account box: Port must be between 1 and 65535, not 70000.\n" in result.output
    result = run("account", "add", "imap", "box", "--host", "mail.example.org", "--user", "u", "--folder",
                 "Archiv//Alt", "--password-stdin", input="secret-1\n")
    assert result.exit_code == 2, result.output
    assert ("Error: The folder name 'Archiv//Alt' has an empty level. Write levels with one '/' between them, e.g. "
            "Archiv/Alt.\n") in result.output
