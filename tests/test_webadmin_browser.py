"""WebAdmin end to end in headless Chromium (Debian's, driven by Playwright), served by gunicorn."""

from __future__ import annotations

import re
import shutil
import time

import pytest
from conftest import PASSWORD
from mailfactory import make_mail
from servers import WebAdmin

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def webadmin(data_dir, run):
    """gunicorn serving webadmin:create_app() for this data directory, as the service runs it; stopped by its PID."""
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    try:
        server = WebAdmin(data_dir)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield server.base
    server.stop()


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail("Missing Debian package for the browser tests: chromium. Run 'make test', which installs it.",
                    pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


def logged_in(browser, webadmin: str, user: str, password: str):
    """A new German browser page, logged in to WebAdmin as ``user``."""
    page = browser.new_context(locale="de-DE").new_page()
    page.goto(f"{webadmin}/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("#login")
    return page


def test_partner_sets_up_imports_finds_a_pdf_word_and_follows_a_direct_link(webadmin, browser, mailbox):
    mailbox.append([make_mail(42, attachment="pdf", secret_word="okapi", secret_in_body=False), make_mail(43)])
    context = browser.new_context(locale="de-DE")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=webadmin)
    page = context.new_page()

    page.goto(f"{webadmin}/")
    assert "/login" in page.url
    page.fill("input[name=username]", "anna")
    page.fill("input[name=password]", "anna-password")
    with page.expect_navigation():
        page.click("#login")
    assert re.search(r"/(documents)?$", page.url)

    with page.expect_navigation():
        page.click("text=Mail-Archivierung (IMAP/POP3)")
    with page.expect_navigation():
        page.click("#add-account")
    page.fill("input[name=name]", "office")
    page.fill("input[name=host]", "127.0.0.1")
    page.fill("input[name=port]", str(mailbox.server.ports["imaps"]))
    page.fill("textarea[name=ca_file_pem]", mailbox.server.cert.read_text())  # the test server's own CA, pasted
    page.fill("input[name=user]", mailbox.user)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("#save")
    assert "Gespeichert." in page.content()
    assert PASSWORD not in page.content()

    with page.expect_navigation():
        page.click("button.test[data-account=office]")
    assert "Anmeldung erfolgreich" in page.inner_text("#test-result")
    assert "INBOX: 2 Nachrichten" in page.content()

    with page.expect_navigation():
        page.click("text=Import")
    with page.expect_navigation():
        page.click("#run-now")
    assert "Der Import läuft" in page.content()
    for _ in range(100):  # the import runs in the background; the page lists it when done
        if page.locator("td:text-is('alle Konten')").count():
            break
        time.sleep(0.1)
        page.reload()
    row = page.locator("tr", has=page.locator("td:text-is('alle Konten')")).first.inner_text()
    assert row.split("\t")[2:5] == ["OK", "2", "2"]  # status, fetched, archived

    with page.expect_navigation():
        page.click("text=Archiv-Links")
    page.fill("input[name=base_url]", webadmin)
    with page.expect_navigation():
        page.click("#save-links")

    with page.expect_navigation():
        page.click("text=Dokumente")
    page.fill("#q", "okapi")
    with page.expect_navigation():
        page.click("#search")
    assert page.locator("table.results tr").count() == 2  # header and the PDF: the word is only in its text
    with page.expect_navigation():
        page.click("text=report-42.pdf")
    with page.expect_navigation():  # from the attachment to its mail
        page.click("table.meta a")
    title = page.inner_text("#doc-title")
    assert re.fullmatch(r"\d+: Test mail 42 \w+", title)
    assert "report-42.pdf" in page.inner_text("main")  # the mail view lists its attachment
    number = title.split(":")[0]
    page.click("#copy-link")
    page.wait_for_selector("#copy-link:has-text('Link kopiert.')")  # our CSP forbids eval'd wait functions
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f"{title}\n{webadmin}/doc/{number}"

    with page.expect_navigation():
        page.click("#logout")
    assert "/login" in page.url
    page.goto(f"{webadmin}/doc/{number}")
    assert "/login" in page.url
    page.fill("input[name=username]", "anna")
    page.fill("input[name=password]", "anna-password")
    with page.expect_navigation(url=f"{webadmin}/documents/{number}"):
        page.click("#login")
    assert page.inner_text("#doc-title") == title
    context.close()


@pytest.mark.parametrize("javascript", [True, False], ids=["with-javascript", "without-javascript"])
def test_the_language_switch_works_with_and_without_javascript(webadmin, browser, javascript):
    context = browser.new_context(locale="en-US", java_script_enabled=javascript)
    page = context.new_page()
    page.goto(f"{webadmin}/documents?q=Rechnung")
    assert page.get_attribute("html", "lang") == "de" and page.inner_text("h1") == "Anmelden"  # German by default
    page.select_option("select[name=lang]", "en")
    with page.expect_navigation():
        page.click("#switch-language")
    assert page.get_attribute("html", "lang") == "en" and page.inner_text("h1") == "Log in"
    page.fill("input[name=username]", "anna")
    page.fill("input[name=password]", "anna-password")
    with page.expect_navigation():
        page.click("#login")
    assert page.url == f"{webadmin}/documents?q=Rechnung"  # the language outlives the login
    assert page.inner_text("h1") == "Documents" and page.get_attribute("html", "lang") == "en"
    page.select_option("select[name=lang]", "de")
    with page.expect_navigation():
        page.click("#switch-language")
    assert page.url == f"{webadmin}/documents?q=Rechnung"  # back on the same page, now in German
    assert page.inner_text("h1") == "Dokumente" and page.get_attribute("html", "lang") == "de"
    context.close()


def test_partner_adds_google_workspace_and_exchange_accounts_and_tests_them(workspace, exchange, webadmin, browser):
    """The pages built from the Gmail and EWS declarations: the key file pasted, the CA pasted, each tested."""
    from gmail_emulator import SCOPE_MODIFY

    workspace.authorize(SCOPE_MODIFY)
    workspace.deliver([make_mail(60)])
    exchange.deliver([make_mail(61), make_mail(62)])
    page = logged_in(browser, webadmin, "anna", "anna-password")

    with page.expect_navigation():
        page.click("text=Google Workspace")
    with page.expect_navigation():
        page.click("#add-account")
    page.fill("input[name=name]", "workspace")
    page.fill("textarea[name=service_account]", workspace.key_file.read_text())
    page.fill("textarea[name=mailboxes]", workspace.mailbox)
    page.select_option("select[name=after]", "label")
    page.fill("input[name=move_to]", "Archiviert")
    with page.expect_navigation():
        page.click("#save")
    assert "Gespeichert." in page.content()
    assert workspace.info["private_key_id"] not in page.content()
    with page.expect_navigation():
        page.click("button.test[data-account=workspace]")
    assert "Anmeldung erfolgreich" in page.inner_text("#test-result")
    assert f"{workspace.mailbox}/INBOX: 1 Nachricht" in page.content()

    with page.expect_navigation():
        page.click("text=Exchange (EWS)")
    with page.expect_navigation():
        page.click("#add-account")
    page.fill("input[name=name]", "exchange")
    page.fill("input[name=url]", exchange.server.url)
    page.fill("input[name=user]", exchange.SERVICE)
    page.fill("input[name=password]", exchange.PASSWORD)
    page.fill("textarea[name=mailboxes]", exchange.mailbox)
    page.fill("textarea[name=folders]", "Posteingang")
    page.fill("textarea[name=ca_file_pem]", exchange.server.ca_file.read_text())
    with page.expect_navigation():
        page.click("#save")
    assert "Gespeichert." in page.content() and exchange.PASSWORD not in page.content()
    with page.expect_navigation():
        page.click("button.test[data-account=exchange]")
    assert "Anmeldung erfolgreich" in page.inner_text("#test-result")
    assert f"{exchange.mailbox}/Posteingang: 2 Nachrichten" in page.content()


def test_partner_creates_a_rule_sees_the_simulator_saves_imports_and_finds_the_document_by_its_field(
        webadmin, browser, mailbox, run):
    """Create a rule in the form, see its verdict on recent mail before saving, save, import, find by the field."""
    from test_imap import add_imap

    old = (b"From: Lieferant AG <rechnung@lieferant.ch>\r\nSubject: Rechnung 2024-100\r\nMessage-ID: <old@x>\r\n\r\n"
           b"Alt.\r\n")
    mailbox.append([old])
    add_imap(run, mailbox)
    assert run("import").exit_code == 0
    page = logged_in(browser, webadmin, "anna", "anna-password")
    with page.expect_navigation():
        page.click("nav >> text=Regeln")
    with page.expect_navigation():
        page.click("#add-rule")
    page.fill("input[name=name]", "Kreditoren")
    page.select_option("select[name=cond_field_0]", "from")
    page.select_option("select[name=cond_op_0]", "ends_with")
    page.fill("input[name=cond_value_0]", "@lieferant.ch")
    page.select_option("select[name=cond_field_1]", "subject")
    page.select_option("select[name=cond_op_1]", "regex")
    page.fill("input[name=cond_value_1]", r"Rechnung (?P<nr>\d{4}-\d+)")
    page.fill("input[name=title]", "Rechnung {nr}")
    page.fill("input[name=field_name_0]", "Rechnungsnummer")
    page.fill("input[name=field_value_0]", "{nr}")
    page.fill("input[name=tags]", "Buchhaltung")
    with page.expect_navigation():
        page.click("#preview")
    verdict = page.inner_text("#simulation")
    assert "Kreditoren: trifft zu" in verdict and "Rechnungsnummer = 2024-100" in verdict
    assert "«Rechnung 2024-100»" in verdict
    assert run("rules", "list", "--json").output.strip() == "[]"  # not saved yet
    with page.expect_navigation():
        page.click("#save")
    assert "Gespeichert." in page.content() and "Kreditoren" in page.inner_text("#rules")

    mailbox.append([b"From: Lieferant AG <rechnung@lieferant.ch>\r\nSubject: Rechnung 2024-117\r\n"
                    b"Message-ID: <new@x>\r\n\r\nNeu.\r\n"])
    assert run("import").exit_code == 0
    page.goto(f"{webadmin}/documents?q=Rechnungsnummer:2024-117")
    with page.expect_navigation():
        page.click("text=Rechnung 2024-117")
    assert "2024-117" in page.inner_text("tr.field") and page.inner_text("#tags") == "Buchhaltung"


def test_partner_sends_a_document_sees_it_on_the_record_and_the_reply_in_the_conversation(
        webadmin, browser, run, post, tmp_path):
    """The SMTP account added on the mail page and tested, a document sent from its page through Postfix, the
    customer's reply imported and shown in the record's conversation; a sender may send, a viewer may not."""
    f = tmp_path / "rechnung.eml"
    f.write_bytes(b"From: Lieferant <rechnung@lieferant.example>\r\nTo: buchhaltung@example.test\r\nSubject: Rechnung "
                  b"4711\r\nMessage-ID: <r4711@lieferant.example>\r\n\r\nBitte bezahlen.\r\n")
    assert run("import", "--from", str(f)).exit_code == 0
    page = logged_in(browser, webadmin, "anna", "anna-password")

    with page.expect_navigation():
        page.click("text=Mail-Archivierung (IMAP/POP3)")
    with page.expect_navigation():
        page.click("#add-smtp")
    page.fill("input[name=name]", "versand")
    page.fill("input[name=host]", "127.0.0.1")
    page.select_option("select[name=security]", "starttls")
    page.fill("input[name=port]", str(post.postfix.ports["submission"]))
    page.fill("input[name=user]", post.archive_box.user)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=from_address]", post.archive_address)
    page.fill("textarea[name=ca_file_pem]", post.dovecot.cert.read_text())
    with page.expect_navigation():
        page.click("#save")
    assert "Gespeichert." in page.content() and PASSWORD not in page.content()
    with page.expect_navigation():
        page.click("button.test[data-account=versand]")
    assert "Anmeldung erfolgreich" in page.inner_text("#test-result")
    assert "Grössenbeschränkung 20.0 MB" in page.content() and "SMTPUTF8 angeboten" in page.content()

    page.goto(f"{webadmin}/documents/1")
    with page.expect_navigation():
        page.click("#send-link")
    page.fill("#to", "boese@example.test\r\nBcc: alle@evil.test")
    with page.expect_navigation():
        page.click("#send")
    assert "keine Mailadresse" in page.inner_text("#send-error")
    page.fill("#to", post.customer_address)
    page.fill("#text", "Bitte prüfen Sie die Rechnung.")
    with page.expect_navigation():
        page.click("#send")
    assert "Gesendet: Die Mail ist als Dokument 2 bei dieser Akte archiviert." in page.content()
    rows = page.locator("#conversation tr").all_inner_texts()
    assert len(rows) == 3 and "Akte" in rows[1] and "Gesendet" in rows[2] and post.customer_address in rows[2]
    got = post.received()
    assert len(got) == 1 and b"Bitte pr=C3=BCfen Sie die Rechnung." in got[0]

    post.reply(got[0], "Die Rechnung ist bezahlt.")
    result = run("account", "add", "imap", "eingang", "--host", "127.0.0.1", "--port",
                 str(post.dovecot.ports["imaps"]), "--user", post.archive_box.user, "--ca-file", post.ca,
                 "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0
    assert run("import").exit_code == 0
    page.goto(f"{webadmin}/documents/1")
    rows = page.locator("#conversation tr").all_inner_texts()
    assert len(rows) == 4 and "Empfangen" in rows[3] and post.customer_address in rows[3]
    with page.expect_navigation():
        page.click("#conversation tr:nth-child(4) a")
    assert page.inner_text("#record") == "1" and "Die Rechnung ist bezahlt." in page.inner_text("#body-text")
    page.goto(f"{webadmin}/documents?direction=out")
    assert page.locator("table.results tr.out").count() == 1 and page.locator("table.results tr.in").count() == 0

    # roles: a sender may send but not configure; a viewer may not send
    for name, role in (("sina", "sender"), ("vera", "viewer")):
        assert run("admin", "create", name, "--role", role, "--password-stdin", input=f"{name}-password\n").exit_code == 0
    for name, may_send in (("sina", True), ("vera", False)):
        other = logged_in(browser, webadmin, name, f"{name}-password")
        other.goto(f"{webadmin}/documents/1")
        assert (other.locator("#send-link").count() == 1) is may_send
        assert (other.goto(f"{webadmin}/documents/1/send").status == 200) is may_send
        assert other.goto(f"{webadmin}/sources/mail/").status == 403
