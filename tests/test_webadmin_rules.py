"""WebAdmin's rules pages, the document view's fields and tags, and metadata fields as the direct link's title."""

from __future__ import annotations

import json

from test_webadmin import csrf, login

from archivista_mail.config import Config
from webadmin import create_app

INVOICE = (b"From: Lieferant AG <rechnung@lieferant.ch>\r\nSubject: Rechnung 2024-117\r\nMessage-ID: <inv@x>\r\n\r\n"
           b"Bitte bezahlen.\r\n")
NESTED = {"name": "Verschachtelt", "when": {"any": [{"all": [{"field": "size", "op": "gt", "value": 1}]}]},
          "then": [{"tag": "x"}]}


def admin(run, data_dir):
    assert run("admin", "create", "anna", "--password-stdin", input="anna-password\n").exit_code == 0
    client = create_app(Config(data_dir=data_dir)).test_client()
    assert login(client, "anna", "anna-password").status_code == 302
    return client


def form(name, value="@lieferant.ch", **extra):
    data = {"name": name, "mode": "all", "cond_field_0": "from", "cond_op_0": "ends_with", "cond_value_0": value,
            "cond_field_1": "subject", "cond_op_1": "regex", "cond_value_1": r"Rechnung (?P<nr>\d{4}-\d+)",
            "title": "Rechnung {nr}", "field_name_0": "Aktennummer", "field_value_0": "{nr}", "tags": "A, B",
            "archive": "all", "after": "", "do": "save"}
    data.update(extra)
    return data


def test_rules_are_added_ordered_edited_removed_and_audited(run, data_dir, tmp_path):
    client = admin(run, data_dir)
    page = client.get("/rules/new").data
    assert client.post("/rules/new", data={**form("Erste"), "csrf_token": csrf(page)}).status_code == 302
    assert client.post("/rules/new", data={**form("Zweite", stop="1"), "csrf_token": csrf(page)}).status_code == 302
    bad = client.post("/rules/new", data={**form("Dritte", cond_op_1="like"), "csrf_token": csrf(page)})
    assert bad.status_code == 400 and "Der Operator «like» ist unbekannt" in bad.data.decode()
    twice = client.post("/rules/new", data={**form("Erste"), "csrf_token": csrf(page)})
    assert twice.status_code == 400 and "zweimal" in twice.data.decode()
    stored = json.loads(run("rules", "list", "--json").output)
    assert [r["name"] for r in stored] == ["Erste", "Zweite"] and stored[1]["stop"] is True
    assert stored[0]["then"] == [{"set": "title", "value": "Rechnung {nr}"},
                                 {"set": "field:Aktennummer", "value": "{nr}"}, {"tag": "A"}, {"tag": "B"}]
    index = client.get("/rules/").data
    assert client.post("/rules/Zweite/move", data={"direction": "up", "csrf_token": csrf(index)}).status_code == 302
    assert [r["name"] for r in json.loads(run("rules", "list", "--json").output)] == ["Zweite", "Erste"]
    edit = client.get("/rules/Erste/edit").data.decode()
    assert 'value="Aktennummer"' in edit and 'value="@lieferant.ch"' in edit
    assert client.post("/rules/Erste/edit", data={**form("Erste", "@andere.ch"),
                                                  "csrf_token": csrf(edit.encode())}).status_code == 302
    assert json.loads(run("rules", "list", "--json").output)[1]["when"]["all"][0]["value"] == "@andere.ch"
    assert client.post("/rules/Zweite/delete", data={"csrf_token": csrf(index)}).status_code == 302
    assert [r["name"] for r in json.loads(run("rules", "list", "--json").output)] == ["Erste"]
    assert client.get("/rules/Nirgends/edit").status_code == 404
    audit = run("audit", "--action", "rules.change", "--json").output
    assert "moved Zweite up" in audit and "removed Zweite in WebAdmin" in audit and '"actor": "anna"' in audit
    (tmp_path / "nested.json").write_text(json.dumps([NESTED]))
    assert run("rules", "load", str(tmp_path / "nested.json")).exit_code == 0
    shown = client.get("/rules/Verschachtelt/edit", follow_redirects=True).data.decode()
    assert "verschachtelte Bedingungsgruppen" in shown


def test_the_form_previews_on_recent_mail_without_saving(run, data_dir, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "invoice.eml").write_bytes(INVOICE)
    assert run("import", "--from", str(source)).exit_code == 0
    client = admin(run, data_dir)
    page = client.get("/rules/new").data
    preview = client.post("/rules/new", data={**form("Neu"), "do": "preview", "csrf_token": csrf(page)}).data.decode()
    assert "Neu: <strong class=\"matched\">trifft zu</strong>" in preview
    assert "Aktennummer = 2024-117" in preview and "Rechnung 2024-117</bdi>»" in preview
    assert json.loads(run("rules", "list", "--json").output) == []
    tested = client.get("/rules/test?last=5").data.decode()
    assert "Rechnung 2024-117" in tested  # the stored rules (none) over the archived mail


def test_fields_show_in_the_document_view_can_be_set_by_hand_and_title_direct_links(run, data_dir, tmp_path):
    (tmp_path / "rules.json").write_text(json.dumps([{
        "name": "Akte", "when": {"all": [{"field": "subject", "op": "regex", "value": r"(?P<nr>\d{4}-\d+)"}]},
        "then": [{"set": "field:Aktennummer", "value": "A-{nr}"}, {"tag": "Kreditoren"}]}]))
    assert run("rules", "load", str(tmp_path / "rules.json")).exit_code == 0
    source = tmp_path / "in"
    source.mkdir()
    (source / "invoice.eml").write_bytes(INVOICE)
    assert run("import", "--from", str(source)).exit_code == 0
    number = json.loads(run("docs", "list", "--json").output)[0]["number"]
    client = admin(run, data_dir)
    view = client.get(f"/documents/{number}").data.decode()
    assert "A-2024-117" in view and "Kreditoren" in view
    assert client.post(f"/documents/{number}/fields", data={"name": "Kunde", "value": "Müller AG",
                                                            "csrf_token": csrf(view.encode())}).status_code == 302
    assert json.loads(run("docs", "show", str(number), "--json").output)["fields"] == {
        "Aktennummer": "A-2024-117", "Kunde": "Müller AG"}
    found = json.loads(run("docs", "search", 'Kunde:"Müller AG"', "--json").output)
    assert [d["number"] for d in found] == [number]
    links = client.get("/settings/links").data.decode()
    assert 'value="field:Aktennummer"' in links
    assert client.post("/settings/links", data={"base_url": "archiv.example.ch", "title_field": "field:Aktennummer",
                                                 "csrf_token": csrf(links.encode())}).status_code == 302
    assert f"{number}: A-2024-117" in run("link", str(number)).output
    assert "docs.field" in run("audit", "--action", "docs.field", "--json").output
