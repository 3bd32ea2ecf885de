"""The pure parts of sending: the message, templates, tokens, which record a reply joins, loop protection."""

from __future__ import annotations

import email
import email.policy

import pytest

from archivista_mail.compose import (
    Outgoing,
    auto_reply_refusal,
    build_message,
    check_address,
    in_allowed_domains,
    load_template,
    render,
)
from archivista_mail.conversation import choose_record, token_in, with_token
from archivista_mail.errors import ConfigError
from archivista_mail.mime import parse_mail

ORIGINAL = b"From: a@b.ch\nTo: c@d.ch\nSubject: Rechnung\nMessage-ID: <m1@b.ch>\n\nBetrag f\xc3\xa4llig\n\n"


def outgoing(**changes) -> Outgoing:
    values = dict(from_addr="archiv@example.ch", from_name="Müller AG", to=["k@kunde.ch"], cc=[],
                  subject="Rechnung [Akte 5]", text="Guten Tag\n", html="<p>Guten Tag</p>",
                  message_id="20261201.abc@example.ch", reference=5)
    values.update(changes)
    return Outgoing(**values)


def test_a_mail_document_travels_as_message_rfc822_with_its_bytes_unchanged():
    data = build_message(outgoing(attachment=("Rechnung.eml", "message/rfc822", ORIGINAL)))
    assert b"\n" not in data.replace(b"\r\n", b"")  # SMTP line ends throughout
    parsed = parse_mail(data)
    assert parsed.defects == []
    [part] = parsed.parts
    assert part.content_type == "message/rfc822" and part.data == ORIGINAL.replace(b"\n", b"\r\n")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["Message-ID"] == "<20261201.abc@example.ch>" and msg["X-Archivista-Reference"] == "5"
    assert str(msg["From"]) == "Müller AG <archiv@example.ch>" and msg["Auto-Submitted"] is None
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Guten Tag\n"


def test_an_automatic_reply_says_so_and_answers_the_mail():
    msg = email.message_from_bytes(build_message(outgoing(auto=True, in_reply_to="m1@b.ch")))
    assert msg["Auto-Submitted"] == "auto-replied" and msg["In-Reply-To"] == "<m1@b.ch>"
    assert msg["References"] == "<m1@b.ch>"


def test_templates_fill_placeholders_escape_html_and_drop_the_link_line_without_a_link(tmp_path):
    values = {"number": "7", "title": "<Rechnung>", "link": "", "sender_name": "Anna", "field:Kunde": "Meier & Co"}
    assert render("Nr {number}: {title}\nLink: {link}\nKunde {field:Kunde} {field:Fehlt}\n", values) == \
        "Nr 7: <Rechnung>\nKunde Meier & Co \n"
    assert render("<b>{title}</b>", values, escape=True) == "<b>&lt;Rechnung&gt;</b>"
    (tmp_path / "mahnung.de.txt").write_text("Subject: Mahnung {number}\n\nBitte zahlen: {field:Kunde}\n")
    tmpl = load_template("mahnung", "de", tmp_path)
    assert (tmpl.subject, tmpl.text, tmpl.html) == ("Mahnung {number}", "Bitte zahlen: {field:Kunde}\n", None)
    assert load_template("document", "en", tmp_path).subject == "{title}"
    for name, lang in (("../etc/passwd", "de"), ("fehlt", "de"), ("document", "fr")):
        with pytest.raises(ConfigError):
            load_template(name, lang, tmp_path)


def test_subject_tokens():
    assert token_in("Re: Rechnung [Akte 1234]", "Akte") == 1234
    assert token_in("Re: [akte:77] x", "Akte") == 77
    assert token_in("Re: [Dossier 5]", "Akte") is None and token_in("[Akte 5]", "") is None
    assert with_token("Rechnung", "Akte", 9) == "Rechnung [Akte 9]"
    assert with_token("Re: Rechnung [Akte 9]", "Akte", 9) == "Re: Rechnung [Akte 9]"
    assert with_token("Rechnung", "", 9) == "Rechnung"


def test_addresses_and_domains():
    assert check_address(" anna@example.ch ") == "anna@example.ch"
    for bad in ("a@b.ch\r\nBcc: x@y", "a@b.ch, c@d.ch", "<a@b.ch>", "a@b@c", "a..b@c.ch", ""):
        with pytest.raises(ConfigError):
            check_address(bad)
    assert in_allowed_domains("x@Example.CH", ("example.ch",))
    assert not in_allowed_domains("x@mail.example.ch", ("example.ch",))
    assert not in_allowed_domains("x@example.ch.evil.test", ("example.ch",))
    assert in_allowed_domains("x@bücher.ch", ("xn--bcher-kva.ch",))


def test_a_reference_wins_over_a_token_and_a_token_needs_a_participant():
    records = {"sent@x": 10, "other@x": 20}

    def records_of(ids):
        return {i: records[i] for i in ids if i in records}

    def participants(n):
        return {"kunde@k.ch"} if n == 10 else set()

    assert choose_record(["nothing@x", "sent@x"], 30, "m@evil.test", records_of, participants) == (10, "reference")
    assert choose_record([], 10, "Kunde <KUNDE@k.ch>", records_of, participants) == (10, "token")
    assert choose_record([], 10, "m@evil.test", records_of, participants) == (None, "")
    assert choose_record([], 99, "kunde@k.ch", records_of, participants) == (None, "")
    assert choose_record([], 10, "", records_of, participants) == (None, "")


@pytest.mark.parametrize("headers, sender, refused", [
    ({}, "Kunde <k@kunde.ch>", None),
    ({"auto-submitted": ["no"]}, "k@kunde.ch", None),
    ({"auto-submitted": ["auto-generated"]}, "k@kunde.ch", "auto-submitted"),
    ({"precedence": ["bulk"]}, "k@kunde.ch", "Precedence: bulk"),
    ({"precedence": ["list"]}, "k@kunde.ch", "Precedence: list"),
    ({"list-id": ["<l.x>"]}, "k@kunde.ch", "list-id"),
    ({"list-unsubscribe": ["<mailto:u@x>"]}, "k@kunde.ch", "list-unsubscribe"),
    ({"return-path": ["<>"]}, "k@kunde.ch", "empty return path"),
    ({}, "no-reply@shop.ch", "no-reply"),
    ({}, "MAILER-DAEMON@mx.ch", "no-reply or system"),
    ({}, "news-bounces@x.ch", "no-reply or system"),
    ({}, "a@x.ch, b@y.ch", "not one address"),
    ({}, "", "not one address"),
])
def test_loop_protection(headers, sender, refused):
    reason = auto_reply_refusal(headers, sender)
    assert (reason is None) if refused is None else (refused in reason)
