"""Incoming rules: reading, checking and evaluating them (pure; the mails are parsed and planned for real)."""

from __future__ import annotations

import time

import pytest
from mailfactory import make_mail

from archivista_mail.errors import ConfigError
from archivista_mail.mime import parse_mail
from archivista_mail.model import RawMail
from archivista_mail.plan import plan_documents
from archivista_mail.rules import dump_rules, evaluate, facts_of, load_rules

INVOICE = (b"From: Lieferant AG <Rechnung@Lieferant.ch>\r\nTo: buchhaltung@kanzlei.example, hr@kanzlei.example\r\n"
           b"Subject: Rechnung 2024-117 f\xc3\xbcr Beratung\r\nDate: Tue, 05 Mar 2024 10:00:00 +0100\r\n"
           b"X-Priority: 1 (Highest)\r\nMessage-ID: <inv-117@lieferant.ch>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           b"Bitte bezahlen Sie bis Ende Monat.\r\n--b\r\nContent-Type: application/pdf\r\n"
           b"Content-Disposition: attachment; filename=\"R-2024-117.pdf\"\r\n\r\n%PDF-1.4 fake\r\n--b--\r\n")


def facts(raw_bytes: bytes = INVOICE, account: str = "buchhaltung", folder: str = "INBOX"):
    raw = RawMail(raw_bytes, account, folder, f"test:{account}:{folder}:1")
    return facts_of(raw, plan_documents(raw, parse_mail(raw_bytes)))


def rule(when, then, **extra):
    return {"name": extra.pop("name", "r"), "when": when, "then": then, **extra}


def one(field, op, value):
    return {"all": [{"field": field, "op": op, "value": value}]}


@pytest.mark.parametrize("field,op,value,expected", [
    ("from", "ends_with", "@lieferant.ch", True),  # an address of the field, case-insensitive
    ("from", "contains", "Lieferant AG", True),
    ("from", "equals", "rechnung@lieferant.ch", True),
    ("from", "starts_with", "kunde", False),
    ("to", "equals", "hr@kanzlei.example", True),  # one of several addresses
    ("cc", "contains", "@", False),
    ("subject", "starts_with", "rechnung 2024", True),
    ("subject", "contains", "für", True),
    ("body", "contains", "ende monat", True),
    ("header:X-Priority", "starts_with", "1", True),
    ("header:X-Mailer", "contains", "Outlook", False),
    ("folder", "equals", "INBOX", True),
    ("account", "equals", "buchhaltung", True),
    ("size", "gt", 300, True),
    ("size", "lt", 300, False),
    ("has_attachment", "equals", True, True),
    ("attachment_name", "ends_with", ".pdf", True),
    ("attachment_type", "equals", "application/pdf", True),
    ("subject", "regex", r"rechnung \d{4}-\d+", True),
    ("subject", "regex", r"^Mahnung", False),
])
def test_each_field_and_operator(field, op, value, expected):
    outcome = evaluate(load_rules([rule(one(field, op, value), [{"tag": "hit"}])]), facts())
    assert (outcome.tags == ["hit"]) is expected
    check = outcome.trace[0].checks[0]
    assert check.result is expected and check.condition.startswith(field)


def test_groups_nest_and_any_of_stops_at_the_first_true():
    when = {"all": [{"field": "from", "op": "ends_with", "value": "@lieferant.ch"},
                    {"any": [{"field": "subject", "op": "contains", "value": "Mahnung"},
                             {"field": "subject", "op": "contains", "value": "Rechnung"},
                             {"field": "body", "op": "contains", "value": "never looked at"}]}]}
    outcome = evaluate(load_rules([rule(when, [{"tag": "Kreditoren"}])]), facts())
    assert outcome.tags == ["Kreditoren"]
    assert [c.result for c in outcome.trace[0].checks] == [True, False, True]


def test_regex_groups_fill_title_and_fields_and_dates_format():
    rules = load_rules([rule(one("subject", "regex", r"Rechnung (?P<nr>\d{4}-\d+)"), [
        {"set": "title", "value": "Rechnung {nr} von {from_name} ({date:%Y-%m})"},
        {"set": "field:Rechnungsnummer", "value": "{1}"}, {"set": "field:Lieferant", "value": "{from_address}"},
        {"tag": "Kreditoren"}, {"after": "move:Buchhaltung"}])])
    outcome = evaluate(rules, facts())
    assert outcome.title == "Rechnung 2024-117 von Lieferant AG (2024-03)"
    assert outcome.fields == {"Rechnungsnummer": "2024-117", "Lieferant": "Rechnung@Lieferant.ch"}
    assert outcome.after == "move:Buchhaltung" and outcome.matched == ["r"]


def test_rules_run_in_order_later_ones_override_and_stop_ends_evaluation():
    rules = load_rules([
        rule(one("subject", "contains", "Rechnung"), [{"set": "title", "value": "first"}, {"tag": "a"}], name="1"),
        rule(one("subject", "contains", "Rechnung"), [{"set": "title", "value": "second"}, {"tag": "b"}],
             name="2", stop=True),
        rule(one("subject", "contains", "Rechnung"), [{"archive": "skip"}], name="3")])
    outcome = evaluate(rules, facts())
    assert (outcome.title, outcome.tags, outcome.archive, outcome.matched) == ("second", ["a", "b"], "all",
                                                                                ["1", "2"])
    assert [t.rule for t in outcome.trace] == ["1", "2"]


def test_a_rule_for_other_accounts_is_passed_over():
    rules = load_rules([rule(one("subject", "contains", "Rechnung"), [{"archive": "skip"}], accounts=["hr"])])
    outcome = evaluate(rules, facts(account="buchhaltung"))
    assert outcome.archive == "all" and outcome.trace[0].skipped_for_account
    assert evaluate(rules, facts(account="hr")).archive == "skip"


@pytest.mark.parametrize("then,reason", [
    ([{"set": "title", "value": "{nr}"}], "the placeholder {nr} is not known"),
    ([{"set": "title", "value": "{subject.__class__}"}], "is not a plain name"),
    ([{"set": "title", "value": "{2}"}], "no regular expression group 2"),
])
def test_a_failing_template_files_the_mail_as_if_no_rule_had_matched(then, reason):
    rules = load_rules([rule(one("subject", "contains", "Rechnung"), [{"tag": "early"}], name="ok"),
                        rule(one("subject", "regex", "(Rechnung)"), then, name="bad")])
    outcome = evaluate(rules, facts())
    assert not outcome.changed and outcome.tags == []
    assert outcome.errors and "rule bad" in outcome.errors[0] and reason in outcome.errors[0]
    assert outcome.trace[-1].error


def test_a_catastrophic_regular_expression_runs_out_of_time_and_loses_nothing():
    hostile = b"Subject: " + b"x" * 4000 + b"!\r\nFrom: a@example.com\r\n\r\nbody\r\n"
    rules = load_rules([rule(one("subject", "regex", r"(x+x+)+y"), [{"archive": "skip"}])])
    start = time.perf_counter()
    outcome = evaluate(rules, facts(hostile), timeout=0.05)
    assert time.perf_counter() - start < 1.0
    assert outcome.archive == "all" and "took longer than 0.05 s" in outcome.errors[0]


@pytest.mark.parametrize("data,words", [
    ({"name": "x"}, "JSON list"),
    ([{"when": {"all": []}, "then": [{"tag": "a"}]}], "Rule 1: each rule is an object with a \"name\""),
    ([rule(one("subjekt", "contains", "x"), [{"tag": "a"}], name="Tippfehler")],
     "Rule Tippfehler: the field 'subjekt' is not known"),
    ([rule(one("subject", "like", "x"), [{"tag": "a"}])], "the operator 'like' is not known"),
    ([rule(one("size", "contains", "x"), [{"tag": "a"}])], "size is compared with equals, gt or lt"),
    ([rule(one("subject", "regex", "(unclosed"), [{"tag": "a"}])], "is not valid"),
    ([rule(one("subject", "contains", "x"), [{"archive": "later"}])], "the action"),
    ([rule(one("subject", "contains", "x"), [{"after": "shred"}])], "is not known"),
    ([rule(one("subject", "contains", "x"), [{"tag": "a"}], name="d"),
      rule(one("subject", "contains", "x"), [{"tag": "a"}], name="d")], "the name is used twice"),
    ([rule(one("subject", "contains", "x"), [{"set": "title", "value": "{unclosed"}])], "template"),
])
def test_an_invalid_rule_is_refused_naming_the_rule_and_the_part_at_fault(data, words):
    with pytest.raises(ConfigError) as refused:
        load_rules(data)
    assert words in str(refused.value)


def test_dump_and_load_give_the_same_rules():
    data = [rule({"any": [{"field": "from", "op": "ends_with", "value": "@x.ch"},
                          {"all": [{"field": "size", "op": "gt", "value": 10},
                                   {"field": "has_attachment", "op": "equals", "value": True}]}]},
                 [{"set": "field:Kategorie", "value": "HR"}, {"tag": "t"}, {"archive": "attachments-only"},
                  {"after": "read"}], accounts=["hr"], stop=True)]
    assert dump_rules(load_rules(data)) == data


def test_newsletter_rule_on_generated_mail():
    rules = load_rules([rule(one("header:Message-ID", "contains", "gen-"), [{"archive": "skip"}])])
    raw = make_mail(5)
    assert evaluate(rules, facts(raw)).archive == "skip"
