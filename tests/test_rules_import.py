"""Incoming rules through real imports (the Dovecot fixture, import --from) and the simulator against them."""

from __future__ import annotations

import json
from pathlib import Path

from test_imap import add_imap

CORPUS = Path(__file__).parent / "corpus" / "mime" / "mails"
SAMPLES = Path(__file__).resolve().parent.parent / "samples"

INVOICE = (b"From: Lieferant AG <rechnung@lieferant.ch>\r\nTo: buchhaltung@kanzlei.example\r\n"
           b"Subject: Rechnung 2024-117\r\nDate: Tue, 05 Mar 2024 10:00:00 +0100\r\nMessage-ID: <inv-117@x>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/plain\r\n\r\nBitte bezahlen.\r\n--b\r\nContent-Type: application/pdf\r\n"
           b"Content-Disposition: attachment; filename=\"R-2024-117.pdf\"\r\n\r\n%PDF-1.4 fake\r\n--b--\r\n")
NEWSLETTER = (b"From: news@shop.example\r\nTo: buchhaltung@kanzlei.example\r\nSubject: Angebote der Woche\r\n"
              b"List-Unsubscribe: <mailto:off@shop.example>\r\nMessage-ID: <news-1@x>\r\n\r\nKaufen!\r\n")
SCAN = (b"From: scanner@kanzlei.example\r\nTo: archiv@kanzlei.example\r\nSubject: Scan 0815\r\n"
        b"Message-ID: <scan-1@x>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain\r\n\r\nScan attached.\r\n--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename=\"scan.pdf\"\r\n\r\n%PDF-1.4 scan\r\n--b--\r\n")
HOSTILE = b"From: x@example.com\r\nSubject: " + b"x" * 3000 + b"!\r\nMessage-ID: <hostile@x>\r\n\r\nbody\r\n"
URGENT = b"From: chef@kanzlei.example\r\nSubject: Dringend\r\nMessage-ID: <urgent@x>\r\n\r\nSofort.\r\n"

RULES = [
    {"name": "Newsletter", "when": {"any": [{"field": "header:List-Unsubscribe", "op": "contains", "value": "@"}]},
     "then": [{"archive": "skip"}], "stop": True},
    {"name": "Kreditoren", "when": {"all": [
        {"field": "from", "op": "ends_with", "value": "@lieferant.ch"},
        {"field": "subject", "op": "regex", "value": r"Rechnung (?P<nr>\d{4}-\d+)"}]},
     "then": [{"set": "title", "value": "Rechnung {nr} von {from_name}"},
              {"set": "field:Rechnungsnummer", "value": "{nr}"}, {"set": "field:Kategorie", "value": "Kreditoren"},
              {"tag": "Buchhaltung"}]},
    {"name": "Scanner", "when": {"all": [{"field": "from", "op": "starts_with", "value": "scanner@"},
                                         {"field": "has_attachment", "op": "equals", "value": True}]},
     "then": [{"archive": "attachments-only"}, {"tag": "Scan"}]},
    {"name": "Gefährlich", "when": {"all": [{"field": "subject", "op": "regex", "value": "(x+x+)+y"}]},
     "then": [{"tag": "never"}]},
    {"name": "Chef", "when": {"all": [{"field": "subject", "op": "equals", "value": "dringend"}]},
     "then": [{"after": "move:Chef"}]},
]


def load(run, tmp_path, rules=RULES):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules, ensure_ascii=False))
    result = run("rules", "load", str(path))
    assert result.exit_code == 0, result.output
    return path


def docs(run, *args):
    return json.loads(run("docs", "list", "--limit", "1000", "--json", *args).output)


def test_rules_through_a_real_imap_import_with_after_delete(run, mailbox, tmp_path):
    load(run, tmp_path)
    mailbox.append([INVOICE, NEWSLETTER, SCAN, HOSTILE, URGENT])
    add_imap(run, mailbox, extra=["--after", "delete"])
    result = run("import")
    assert result.exit_code == 0, result.output
    # The newsletter stays on the server untouched (unseen); the others were deleted, the urgent one moved.
    left = mailbox.messages()
    assert [raw for raw, _ in left.values()] == [NEWSLETTER] and b"\\Seen" not in list(left.values())[0][1]
    assert [raw for raw, _ in mailbox.messages("Chef").values()] == [URGENT]
    mails = {d["message_id"]: d for d in docs(run, "--kind", "mail")}
    assert set(mails) == {"inv-117@x", "hostile@x", "urgent@x"}  # the scan's mail is hidden; no newsletter
    invoice = mails["inv-117@x"]
    assert invoice["title"] == "Rechnung 2024-117 von Lieferant AG"
    assert invoice["fields"] == {"Kategorie": "Kreditoren", "Rechnungsnummer": "2024-117"}
    assert invoice["tags"] == ["Buchhaltung"]
    hostile = json.loads(run("docs", "show", str(mails["hostile@x"]["number"]), "--json").output)
    assert hostile["tags"] == [] and any("rule Gefährlich" in d and "took longer" in d for d in hostile["defects"])
    scans = [d for d in docs(run, "--kind", "attachment") if d["filename"] == "scan.pdf"]
    assert len(scans) == 1
    parent = json.loads(run("docs", "show", str(scans[0]["parent"]), "--json").output)
    assert parent["tags"] == ["Scan"] and parent["message_id"] == "scan-1@x"  # kept, only not listed
    found = json.loads(run("docs", "search", "Kategorie:kreditoren", "--json").output)
    assert [d["message_id"] for d in found] == ["inv-117@x"]
    found = json.loads(run("docs", "search", "bezahlen", "--field", "Rechnungsnummer=2024-117", "--json").output)
    assert [d["message_id"] for d in found] == ["inv-117@x"]
    assert json.loads(run("runs", "--json").output)["runs"][0]["skipped_by_rules"] == 1
    assert run("import").exit_code == 0  # the skipped mail is not fetched again (the cursor is past it)
    assert [raw for raw, _ in mailbox.messages().values()] == [NEWSLETTER]


def test_an_invalid_rules_file_changes_nothing_and_says_where(run, tmp_path):
    load(run, tmp_path, RULES[:2])
    bad = json.loads(json.dumps(RULES))
    bad[2]["when"]["all"][0]["field"] = "absender"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = run("rules", "load", str(path))
    assert result.exit_code != 0 and "Rule Scanner: the field 'absender' is not known" in result.output
    assert [r["name"] for r in json.loads(run("rules", "list", "--json").output)] == ["Newsletter", "Kreditoren"]
    assert run("rules", "remove", "Newsletter").exit_code == 0
    assert "1. Kreditoren" in run("rules", "list").output
    audit = run("audit", "--action", "rules.change", "--json").output
    assert "removed Newsletter" in audit and "rules.json" in audit


def test_the_simulator_predicts_exactly_what_the_import_then_does(run, tmp_path):
    rules = [
        {"name": "Anhänge", "when": {"all": [{"field": "has_attachment", "op": "equals", "value": True}]},
         "then": [{"set": "field:Anhang", "value": "ja"}, {"tag": "mit-Anhang"}]},
        {"name": "Domain", "when": {"all": [{"field": "from", "op": "regex", "value": r"@(?P<domain>[\w.-]+)"}]},
         "then": [{"set": "field:Domain", "value": "{domain}"}]},
        {"name": "Gross", "when": {"all": [{"field": "size", "op": "gt", "value": 20000}]},
         "then": [{"set": "title", "value": "Gross: {subject}"}]},
        {"name": "Kein Betreff", "when": {"all": [{"field": "subject", "op": "equals", "value": ""}]},
         "then": [{"archive": "skip"}]},
        {"name": "PDF", "when": {"any": [{"field": "attachment_type", "op": "equals", "value": "application/pdf"},
                                          {"field": "attachment_name", "op": "ends_with", "value": ".pdf"}]},
         "then": [{"archive": "attachments-only"}]},
    ]
    rules_file = load(run, tmp_path, rules)
    source = tmp_path / "mails"
    source.mkdir()
    for path in [*(p for p in CORPUS.rglob("*") if p.is_file()), *SAMPLES.glob("*.eml")]:
        name = "_".join(path.relative_to(path.parents[1] if path.parent != CORPUS else CORPUS).parts)
        (source / f"{len(list(source.iterdir())):03d}-{name}").write_bytes(path.read_bytes())
    simulated = json.loads(run("rules", "test", "--from", str(source), "--json").output)
    assert len(simulated) == len(list(source.iterdir()))
    assert any(s["archive"] == "skip" for s in simulated) and any(s["fields"] for s in simulated)
    result = run("import", "--from", str(source))
    assert result.exit_code == 0, result.output
    expected_skips = sum(s["archive"] == "skip" for s in simulated)
    assert json.loads(run("runs", "--json").output)["runs"][0]["skipped_by_rules"] == expected_skips
    # Every document the simulator promised, with its title, fields, tags and visibility, and no other (a mail
    # whose bytes came before is archived once: the import skips it as a duplicate).
    first = {}
    for s in simulated:
        first.setdefault(s["sha256"], s)
    promised = sorted((d["kind"], d["title"], json.dumps(d["fields"], sort_keys=True), tuple(d["tags"]),
                       d["hidden"]) for s in first.values() for d in s["documents"])
    archived = []
    for d in json.loads(run("docs", "list", "--limit", "10000", "--json").output):
        archived.append(d)
    hidden_parents = {d["parent"] for d in archived} - {d["number"] for d in archived}  # not listed, but there
    for number in sorted(n for n in hidden_parents if n):
        archived.append(json.loads(run("docs", "show", str(number), "--json").output) | {"hidden": True})
    made = sorted((d["kind"], d["title"], json.dumps(d["fields"], sort_keys=True), tuple(d["tags"]),
                   bool(d.get("hidden"))) for d in archived)
    assert made == promised
    # The stored rules and a file given with --rules simulate alike.
    again = json.loads(run("rules", "test", "--from", str(source), "--rules", str(rules_file), "--json").output)
    assert again == simulated


def test_the_simulator_over_archived_mail_shows_conditions_with_what_they_saw(run, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "invoice.eml").write_bytes(INVOICE)
    assert run("import", "--from", str(source)).exit_code == 0
    load(run, tmp_path, RULES[1:2])
    shown = run("rules", "test", "--last", "5").output
    assert "rule Kreditoren: matched" in shown
    assert "yes  from ends_with '@lieferant.ch'  (saw 'Lieferant AG <rechnung@lieferant.ch>')" in shown
    assert "-> mail: 'Rechnung 2024-117 von Lieferant AG'" in shown and "Rechnungsnummer" in shown
    before = docs(run)
    assert docs(run) == before and before[0]["fields"] == {}  # the simulator changed nothing


CASES = [  # every field and operator, each through a real import (import --from), each once true and once false
    ("from", "ends_with", "@lieferant.ch"), ("from", "contains", "LIEFERANT AG"), ("to", "equals",
                                                                                  "buchhaltung@kanzlei.example"),
    ("cc", "contains", "@"), ("subject", "starts_with", "rechnung"), ("subject", "regex", r"\d{4}-\d+$"),
    ("body", "contains", "bezahlen"), ("header:Message-ID", "ends_with", "@x>"), ("folder", "ends_with", "invoice.eml"),
    ("account", "equals", "files"), ("size", "gt", 200), ("size", "lt", 200), ("size", "equals", 1),
    ("has_attachment", "equals", True), ("attachment_name", "ends_with", ".pdf"),
    ("attachment_type", "equals", "application/pdf"),
]


def test_every_condition_through_a_real_import(run, tmp_path):
    from archivista_mail.mime import parse_mail
    from archivista_mail.model import RawMail
    from archivista_mail.plan import plan_documents
    from archivista_mail.rules import evaluate, facts_of, load_rules

    source = tmp_path / "in"
    source.mkdir()
    (source / "invoice.eml").write_bytes(INVOICE)
    rules = [{"name": f"r{n}", "when": {"all": [{"field": f, "op": o, "value": v}]}, "then": [{"tag": f"t{n}"}]}
             for n, (f, o, v) in enumerate(CASES)]
    load(run, tmp_path, rules)
    assert run("import", "--from", str(source)).exit_code == 0
    archived = docs(run, "--kind", "mail")[0]
    tags = set(archived["tags"])
    raw = RawMail(INVOICE, archived["account"], archived["folder"], "k")
    expected = set(evaluate(load_rules(rules), facts_of(raw, plan_documents(raw, parse_mail(INVOICE)))).tags)
    assert tags == expected
    held = {CASES[int(t[1:])][:2] for t in tags}
    assert ("from", "ends_with") in held and ("has_attachment", "equals") in held and ("size", "gt") in held
    assert ("cc", "contains") not in held and ("size", "lt") not in held  # and the false ones are false
    assert len(held) == len(CASES) - 3, (sorted(held), archived["folder"], archived["account"])
