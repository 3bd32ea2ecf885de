"""Incoming rules in WebAdmin (admins): the ordered list, a form for people (not JSON), the simulator.

The form edits a rule with one condition group (all or any of up to CONDITIONS conditions) and
up to FIELDS field templates; rules with nested groups are loaded as JSON (``rules load``) and
shown here, but not edited. Before saving, "Test" runs the simulator with the rule as entered
over recent archived mail.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext

from archivista_mail.errors import ArchivistaMailError, ConfigError
from archivista_mail.rules import ARCHIVE_MODES, FLAG_FIELDS, NUMBER_FIELDS, OPS, TEXT_FIELDS, dump_rules, load_rules
from archivista_mail.simulate import simulate_archived

from . import get_archive
from .auth import admin_required
from .i18n import localized

bp = Blueprint("rules", __name__)
CONDITIONS = 5
FIELDS = 3
PREVIEW_MAILS = 20


def _stored() -> list[dict[str, Any]]:
    return g.state.rules()


def _find(name: str) -> tuple[int, dict[str, Any]]:
    for n, rule in enumerate(_stored()):
        if rule["name"] == name:
            return n, rule
    abort(404)


@bp.get("/rules/")
@admin_required
def index():
    rules = load_rules(_stored())
    return render_template("rules/index.html", rules=rules)


def _editable(rule: dict[str, Any]) -> bool:
    """True when the form can show the rule: one group of plain conditions, actions the form has."""
    when = next(iter(rule["when"].values()))
    sets = [a for a in rule["then"] if "set" in a and a["set"] != "title"]
    return all("field" in c for c in when) and len(when) <= CONDITIONS and len(sets) <= FIELDS


def _form_of(rule: dict[str, Any] | None) -> dict[str, Any]:
    """The form's values for a stored rule (or an empty form)."""
    form: dict[str, Any] = {"name": "", "accounts": "", "mode": "all", "title": "", "tags": "", "archive": "all",
                            "after": "", "stop": False}
    if rule is None:
        return form
    mode, conditions = next(iter(rule["when"].items()))
    form.update(name=rule["name"], accounts=", ".join(rule.get("accounts") or []), mode=mode,
                stop=rule.get("stop", False))
    for n, c in enumerate(conditions):
        form[f"cond_field_{n}"], form[f"cond_op_{n}"] = c["field"], c["op"]
        form[f"cond_value_{n}"] = str(c["value"]).lower() if isinstance(c["value"], bool) else str(c["value"])
    fields = 0
    tags = []
    for action in rule["then"]:
        if action.get("set") == "title":
            form["title"] = action["value"]
        elif "set" in action:
            form[f"field_name_{fields}"], form[f"field_value_{fields}"] = action["set"][6:], action["value"]
            fields += 1
        elif "tag" in action:
            tags.append(action["tag"])
        elif "archive" in action:
            form["archive"] = action["archive"]
        elif "after" in action:
            form["after"] = action["after"]
    form["tags"] = ", ".join(tags)
    return form


def _rule_of(form) -> dict[str, Any]:
    """A rule in its JSON form from the submitted form; load_rules checks it."""
    conditions = []
    for n in range(CONDITIONS):
        name, op, value = (form.get(f"cond_{k}_{n}", "").strip() for k in ("field", "op", "value"))
        if not name:
            continue
        if name == "header":
            name = f"header:{form.get(f'cond_header_{n}', '').strip()}"
        typed: Any = value
        if name in NUMBER_FIELDS:
            try:
                typed = int(value)
            except ValueError:
                raise ConfigError(gettext("Condition %(n)s: %(field)s is compared with a whole number.", n=n + 1,
                                          field=name)) from None
        elif name in FLAG_FIELDS:
            typed = value.lower() in ("1", "true", "yes", "ja", "on")
        conditions.append({"field": name, "op": op, "value": typed})
    if not conditions:
        raise ConfigError(gettext("Give at least one condition."))
    then: list[dict[str, Any]] = []
    if form.get("title", "").strip():
        then.append({"set": "title", "value": form["title"].strip()})
    for n in range(FIELDS):
        name, value = form.get(f"field_name_{n}", "").strip(), form.get(f"field_value_{n}", "").strip()
        if name:
            then.append({"set": f"field:{name}", "value": value})
    then += [{"tag": tag.strip()} for tag in form.get("tags", "").split(",") if tag.strip()]
    if form.get("archive", "all") != "all":
        then.append({"archive": form["archive"]})
    if form.get("after", "").strip():
        then.append({"after": form["after"].strip()})
    if not then:
        raise ConfigError(gettext("Give at least one action: a title, a field, a tag, what is archived or the "
                                  "after-archive action."))
    rule: dict[str, Any] = {"name": form.get("name", "").strip()}
    accounts = [a.strip() for a in form.get("accounts", "").split(",") if a.strip()]
    if accounts:
        rule["accounts"] = accounts
    rule.update({"when": {form.get("mode", "all"): conditions}, "then": then, "stop": bool(form.get("stop"))})
    return rule


def _edit(old_name: str | None):
    stored = _stored()
    old = next((r for r in stored if r["name"] == old_name), None) if old_name else None
    if old_name and old is None:
        abort(404)
    if old is not None and not _editable(old):
        flash(gettext("This rule has nested condition groups; change it with 'archivista-mail rules load'."))
        return redirect(url_for("rules.index"))
    error, preview = None, None
    form = _form_of(old)
    if request.method == "POST":
        form = request.form.to_dict()
        try:
            rule = _rule_of(request.form)
            position = next((n for n, r in enumerate(stored) if r["name"] == old_name), len(stored))
            others = [r for r in stored if r["name"] != old_name]
            new_set = dump_rules(load_rules([*others[:position], rule, *others[position:]]))  # checked as a whole
            if request.form.get("do") == "save":
                g.state.save_rules(new_set, g.user["name"], f"{'edited' if old else 'added'} {rule['name']} in "
                                                            "WebAdmin")
                flash(gettext("Saved."))
                return redirect(url_for("rules.index"))
            preview = simulate_archived(load_rules([rule]), get_archive(), PREVIEW_MAILS, None)
        except ArchivistaMailError as e:
            error = localized(e)
    return render_template("rules/form.html", form=form, old=old, error=error, preview=preview,
                           conditions=CONDITIONS, field_rows=FIELDS, fields=(*TEXT_FIELDS, *NUMBER_FIELDS,
                                                                             *FLAG_FIELDS, "header"),
                           ops=OPS, modes=ARCHIVE_MODES), 400 if error else 200


@bp.route("/rules/new", methods=["GET", "POST"])
@admin_required
def new():
    return _edit(None)


@bp.route("/rules/<name>/edit", methods=["GET", "POST"])
@admin_required
def edit(name: str):
    return _edit(name)


@bp.post("/rules/<name>/move")
@admin_required
def move(name: str):
    n, rule = _find(name)
    stored = _stored()
    to = n - 1 if request.form.get("direction") == "up" else n + 1
    if 0 <= to < len(stored):
        stored[n], stored[to] = stored[to], stored[n]
        g.state.save_rules(stored, g.user["name"], f"moved {name} {'up' if to < n else 'down'}")
    return redirect(url_for("rules.index"))


@bp.post("/rules/<name>/delete")
@admin_required
def delete(name: str):
    _find(name)
    g.state.save_rules([r for r in _stored() if r["name"] != name], g.user["name"], f"removed {name} in WebAdmin")
    flash(gettext("Rule %(name)s removed.", name=name))
    return redirect(url_for("rules.index"))


@bp.get("/rules/test")
@admin_required
def test():
    try:
        last = max(1, min(500, int(request.args.get("last", PREVIEW_MAILS))))
    except ValueError:
        last = PREVIEW_MAILS
    account = request.args.get("account") or None
    results = simulate_archived(load_rules(_stored()), get_archive(), last, account)
    return render_template("rules/test.html", results=results, last=last, account=account or "")
