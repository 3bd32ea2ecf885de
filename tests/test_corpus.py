"""Every real-world message of the corpus imports; subjects, addresses, bodies and attachment
names match what the upstream parsers' own tests assert.

Deliberate difference, recorded here: we keep the signature part of multipart/signed mail
(application/pgp-signature) as an attachment document -- an archive keeps everything the mail
carried -- while mail-mime-parser's getAttachmentCount() leaves it out. Counts are otherwise
compared under each upstream's rule: direct children (php-mime-mail-parser, mail-mime-parser)
or all descendants including those inside attached messages (mikel/mail).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from archivista_mail.mime import parse_mail
from archivista_mail.model import RawMail
from archivista_mail.plan import plan_documents

CORPUS = Path(__file__).parent / "corpus" / "mime"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())["messages"]
SIGNATURES = {"application/pgp-signature", "application/pkcs7-signature"}


def ws(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def cases():
    for m in EXPECTED:
        for upstream, expected in m["expected"].items():
            yield pytest.param(m, upstream, expected, id=f"{m['file'].split('/', 1)[1]}[{upstream.split('/')[0]}]")


def test_whole_corpus_imports_one_byte_identical_mail_document_per_file(run, tmp_path):
    result = run("import", "--from", str(CORPUS / "mails"))
    assert result.exit_code == 0, result.output
    top = [d for d in json.loads(run("docs", "list", "--kind", "mail", "--limit", "100000", "--json").output)
           if d["parent"] is None]
    by_sha = {d["sha256"]: d for d in top}
    assert len(top) == len(by_sha) == len({m["sha256"] for m in EXPECTED})
    for m in EXPECTED:
        doc = by_sha[m["sha256"]]
        out = tmp_path / "out.eml"
        assert run("docs", "get", str(doc["number"]), "-o", str(out)).exit_code == 0
        assert out.read_bytes() == (CORPUS / m["file"]).read_bytes(), m["file"]
    again = run("import", "--from", str(CORPUS / "mails"))
    assert again.exit_code == 0
    runs = json.loads(run("runs", "--json").output)["runs"]
    assert runs[0]["archived"] == 0 and runs[0]["duplicates"] == len(EXPECTED)


@pytest.mark.parametrize("message,upstream,expected", list(cases()))
def test_corpus_message_matches_upstream_expectations(message, upstream, expected):
    raw = (CORPUS / message["file"]).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == message["sha256"]
    parsed = parse_mail(raw)
    plans = plan_documents(RawMail(raw, "corpus", "test", "k"), parsed)

    if "subject" in expected:
        assert parsed.subject == expected["subject"]
    for field, ours in (("from", parsed.from_), ("to", parsed.to)):
        want = expected.get(field) or {}
        if want.get("address"):
            assert want["address"].lower() in ours.lower()
        if want.get("name"):
            assert want["name"] in ours
    for field, ours in (("text_body", parsed.text), ("html_body", parsed.html)):
        for key in ("snippet", "contains", "equals"):
            if key in (expected.get(field) or {}):
                assert ws(expected[field][key]) in ws(ours)

    attachments = expected.get("attachments") or {}
    all_docs = plans[1:]
    children = [p for p in plans if p.parent == 0]
    names = [p.filename for p in all_docs]
    for item in attachments.get("items", []):
        if item.get("filename"):
            assert item["filename"] in names
        if item.get("size") is not None and item.get("filename"):
            sizes = [len(p.data) for p in all_docs if p.filename == item["filename"]]
            assert item["size"] in sizes
        if item.get("sha256"):
            assert item["sha256"] in {hashlib.sha256(p.data).hexdigest() for p in all_docs}
    if attachments.get("count") is not None:
        counts = {len(all_docs), len(children)}
        if upstream == "zbateson/mail-mime-parser":
            signatures = sum(1 for p in parsed.parts if p.content_type in SIGNATURES)
            counts |= {c - signatures for c in counts}
        assert attachments["count"] in counts


def test_every_corpus_mail_records_defects_instead_of_failing():
    for m in EXPECTED:
        parsed = parse_mail((CORPUS / m["file"]).read_bytes())
        assert isinstance(parsed.defects, list)
        if "8bit-header" in m["tags"]:
            assert any("8-bit" in d for d in parsed.defects), m["file"]
