"""Real-world MIME quirks, one mail each in tests/mail/quirks/: the same body text, parts and
defects whether the mail is parsed in memory or spooled to a file with every body spilled."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from archivista_mail import spool
from archivista_mail.mime import decode_bytes, parse_mail, parse_spooled
from archivista_mail.model import ParsedMail, SpooledData
from archivista_mail.plan import mail_text
from archivista_mail.spool import build_skeleton, read_head

QUIRKS = Path(__file__).parent / "mail" / "quirks"
CSV_HEAD, CSV_TAIL = b"Artikel;Menge;Preis\n", b"Position 30;30;90,50\n"  # the CSV the test mails attach
FOLDED = "mime: boundary of multipart/mixed folded inside its quotes; read without the folding whitespace"


def parse_both(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[ParsedMail]:
    """The mail parsed in memory and spooled, with a spill threshold so small every body stays in the file."""
    monkeypatch.setattr(spool, "SPILL_AT", 16)
    raw = (QUIRKS / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(raw)
    assert build_skeleton(path).regions, "the spooled path must really read bodies from the file"
    return [parse_mail(raw), parse_spooled(SpooledData(path, len(raw), hashlib.sha256(raw).hexdigest()), tmp_path)]


def data(content) -> bytes:
    return read_head(content, 1 << 20)


def parts(mail: ParsedMail) -> list[tuple]:
    return [(p.filename, p.content_type, len(data(p.data)), p.inline, p.content_id) for p in mail.parts]


def defects(mail: ParsedMail) -> list[str]:
    """The defects, without the spooled path's note that a spilled text body is read from the file."""
    return [d for d in mail.defects if "bytes are indexed" not in d]


@pytest.mark.parametrize("name,text,attachment", [
    ("outlook-2000-boundary-folded-inside-quotes.eml",
     "Hallo,\r\n\r\nanbei die Bestellung fuer August als Tabelle.\r\n\r\nGruss\r\nKlaus Berger\r\n",
     ("bestellung-august.csv", "application/octet-stream", 629, False, None)),
    ("outlook-2000-boundary-folded-with-a-space.eml",
     "Hier das Bild vom Sommerfest, viele Grüße\r\nAnna\r\n",
     ("sommerfest.gif", "image/gif", 43, False, None)),
], ids=["folded-at-tab", "folded-at-space"])
def test_a_boundary_folded_inside_its_quotes_matches_delimiter_lines_without_the_folding_whitespace(
        name, text, attachment, tmp_path, monkeypatch):
    for mail in parse_both(name, tmp_path, monkeypatch):
        assert mail_text(mail) == text
        assert parts(mail) == [attachment]
        assert defects(mail) == [FOLDED]


def test_a_boundary_folded_at_its_own_space_keeps_the_space_as_rfc_5322_unfolding_says(tmp_path, monkeypatch):
    for mail in parse_both("ibm-notes-boundary-with-a-space-folded-at-the-space.eml", tmp_path, monkeypatch):
        assert mail_text(mail) == "Hallo zusammen,\r\n\r\nanbei das Protokoll der Sitzung.\r\n\r\nHeinz Kramer"
        assert parts(mail) == [("protokoll.csv", "text/csv", 629, False, None)]
        assert data(mail.parts[0].data).startswith(CSV_HEAD) and data(mail.parts[0].data).endswith(CSV_TAIL)
        assert defects(mail) == []  # folding inside a quoted string is allowed (RFC 5322 3.2.4)


def test_text_declared_utf8_but_written_in_windows_1252_is_decoded_as_windows_1252(tmp_path, monkeypatch):
    for mail in parse_both("charset-declared-utf8-but-body-is-windows-1252.eml", tmp_path, monkeypatch):
        assert mail_text(mail) == ("Sehr geehrte Damen und Herren,\r\n\r\nanbei die Rechnung für März – Betrag "
                                   "1.250 €.\r\n\r\nFreundliche Grüße\r\nJürgen Müller\r\n")
        assert mail.subject == "Rechnung für März"  # an encoded word that says utf-8, too
        assert mail.from_ == "Jürgen Müller <j.mueller@example.de>"
        assert mail.to == "Büro Müller <buchhaltung@example.com>"  # raw 8-bit header bytes
        assert defects(mail) == [
            "subject: bytes not valid in utf-8, decoded as Windows-1252",
            "from: bytes not valid in utf-8, decoded as Windows-1252",
            "to: raw 8-bit bytes in header",
            "text body: bytes not valid in utf-8, decoded as Windows-1252",
        ]


def test_utf8_text_stays_utf8_when_it_quotes_a_latin_1_line(tmp_path, monkeypatch):
    for mail in parse_both("charset-utf8-body-quoting-a-latin-1-line.eml", tmp_path, monkeypatch):
        assert mail_text(mail) == (
            "Danke, die Rechnung für März ist angekommen – wir überweisen diese Woche.\r\n\r\n"
            "Am 03.04.2023 schrieb Jürgen Müller:\r\n> Freundliche Grüße\r\n\r\nSchöne Grüße\r\nPetra\r\n")
        assert mail.subject == "Re: Rechnung für März"
        assert defects(mail) == ["text body: bytes not valid in utf-8, decoded as Windows-1252"]


def test_other_declared_charsets_decode_as_before():
    found: list[str] = []
    assert decode_bytes("Grüße – 5 €".encode(), "utf-8", found, "text body") == "Grüße – 5 €"
    assert decode_bytes(b"Gr\xfc\xdfe", None, found, "text body") == "Grüße"
    assert decode_bytes(b"\xa3\xf3d\xbc", "iso-8859-2", found, "text body") == "Łódź"
    assert decode_bytes(b"Gr\xfc\xdfe", "iso-8859-1", found, "text body") == "Grüße"
    assert decode_bytes(b"5 \x80 \x81", "windows-1252", found, "text body") == "5 € \ufffd"
    # Outlook's CP50220 extension (NUMERO SIGN, row 13) under the iso-2022-jp label
    assert decode_bytes(b"\x1b$B-b\x1b(B1", "iso-2022-jp", found, "text body") == "№1"
    assert found == ["text body: 8-bit text without charset, decoded as Windows-1252",
                     "text body: bytes not valid in windows-1252, decoded with replacements"]


def test_nested_boundaries_that_begin_with_the_outer_boundary_are_told_apart(tmp_path, monkeypatch):
    for mail in parse_both("boundary-is-prefix-of-nested-boundaries.eml", tmp_path, monkeypatch):
        assert mail_text(mail) == ("Plain text of the newsletter.\r\nA line that merely starts like a boundary:\r\n"
                                   "--abc--1x is not one.\r\n")
        assert mail.html == ('<html><body><p>HTML of the newsletter.</p><img src="cid:logo@example.org">'
                             "</body></html>")
        assert parts(mail) == [(None, "image/gif", 43, True, "logo@example.org"),
                               ("subscribers.csv", "text/csv", 629, False, None)]
        assert data(mail.parts[1].data).startswith(CSV_HEAD) and data(mail.parts[1].data).endswith(CSV_TAIL)
        assert defects(mail) == []


def test_a_multipart_cut_off_before_its_close_delimiter_keeps_its_last_part_as_the_text(tmp_path, monkeypatch):
    for mail in parse_both("multipart-truncated-last-part-is-text.eml", tmp_path, monkeypatch):
        assert mail_text(mail) == ("The plain text version of a mail whose end was cut off.\r\n"
                                   "It continues on a second line.")
        assert parts(mail) == []
        assert defects(mail) == ["mime: CloseBoundaryNotFoundDefect in multipart/alternative"]


def test_an_attachment_running_to_the_end_of_a_cut_off_multipart_is_found_whole(tmp_path, monkeypatch):
    for mail in parse_both("multipart-truncated-last-part-is-attachment.eml", tmp_path, monkeypatch):
        assert mail_text(mail) == "Please find the order list attached.\r\n"
        assert mail.html == "<p>Please find the order list attached.</p>\r\n"
        # the line break before the missing delimiter belongs to it (RFC 2046 5.1.1), in both paths
        assert parts(mail) == [("orders.csv", "text/csv", 658, False, None)]
        assert data(mail.parts[0].data).startswith(b"Artikel;Menge;Preis\r\n")
        assert data(mail.parts[0].data).endswith(b"Position 30;30;90,50")
        assert defects(mail) == ["mime: CloseBoundaryNotFoundDefect in multipart/mixed"]
