"""Mail archiving (IMAP/POP3): list, add, edit, disable, delete and test accounts."""

from __future__ import annotations

import os
from dataclasses import replace

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from archivista_mail.accounts import DEFAULT_PORTS, Account, check_secret_kept, parse_after, validate
from archivista_mail.errors import ArchivistaMailError, ConfigError
from archivista_mail.vault import Vault

from .auth import admin_required
from .i18n import translate

bp = Blueprint("accounts", __name__, url_prefix="/accounts")


def _vault() -> Vault:
    return Vault(current_app.config["ARCHIVISTA"].key_path)


def lines_of(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def after_from_form(form) -> str:
    """The after-archive action from the form's select and its move target."""
    after = form.get("after", "none")
    return f"move:{form.get('move_to', '').strip()}" if after == "move" else after


def account_from_form(form, old: Account | None) -> Account:
    """An Account from the submitted form; an empty password keeps the stored one. Raises ConfigError."""
    kind = form.get("kind", old.kind if old else "imap")
    security = form.get("security", "ssl")
    password = form.get("password", "")
    if not password and old is None:
        raise ConfigError("A password is needed for a new account.")
    after = after_from_form(form)
    try:
        port = int(form.get("port") or DEFAULT_PORTS[(kind, security)])
    except (ValueError, KeyError):
        raise ConfigError("The port must be a number between 1 and 65535.") from None
    acc = validate(Account(
        name=old.name if old else form.get("name", "").strip(), kind=kind, host=form.get("host", "").strip(),
        port=port, security=security, username=form.get("username", "").strip(), secret=old.secret if old else "",
        folders=lines_of(form.get("folders", "")) or ("INBOX",), unread_only=form.get("mode") == "unread",
        after=parse_after(after, kind), ca_file=_ca_file(form.get("ca_file", "").strip()),
        enabled=old.enabled if old else True))
    return with_secret(acc, password, old)


def with_secret(acc: Account, secret: str, old: Account | None) -> Account:
    """The account with a newly entered secret sealed in, or its stored one if it may keep it (same endpoint)."""
    if secret:
        return _vault().seal(acc, secret)
    if old is not None:
        check_secret_kept(old, acc)
    return acc


def _ca_file(path: str) -> str | None:
    if not path:
        return None
    if not os.path.isfile(path):
        raise ConfigError(f"The CA file {path} does not exist on this machine. Give the full path of a PEM file.")
    return path


@bp.get("/")
@admin_required
def index():
    accounts = [a for a in g.state.accounts() if a.kind in ("imap", "pop3")]
    return render_template("accounts/index.html", accounts=accounts)


@bp.route("/new", methods=["GET", "POST"])
@admin_required
def new():
    error = None
    if request.method == "POST":
        try:
            acc = account_from_form(request.form, None)
            g.state.save_account(acc, g.user["name"], new=True)
            flash(translate("Saved.", g.lang))
            if acc.security == "plain":
                flash(translate("Plain connections send the password unencrypted.", g.lang))
            return redirect(url_for("accounts.index"))
        except ArchivistaMailError as e:
            error = str(e)
    return render_template("accounts/form.html", account=None, form=request.form, error=error), 400 if error else 200


@bp.route("/<name>/edit", methods=["GET", "POST"])
@admin_required
def edit(name: str):
    old = g.state.account(name)
    error = None
    if request.method == "POST":
        try:
            g.state.save_account(account_from_form(request.form, old), g.user["name"], new=False)
            flash(translate("Saved.", g.lang))
            return redirect(url_for("accounts.index"))
        except ArchivistaMailError as e:
            error = str(e)
    return render_template("accounts/form.html", account=old, form=request.form, error=error), 400 if error else 200


@bp.post("/<name>/delete")
@admin_required
def delete(name: str):
    kind = g.state.account(name).kind
    g.state.remove_account(name, g.user["name"])
    flash(translate("Deleted.", g.lang))
    return redirect(url_for("o365.index" if kind == "o365" else "accounts.index"))


@bp.post("/<name>/toggle")
@admin_required
def toggle(name: str):
    acc = g.state.account(name)
    g.state.set_enabled(name, not acc.enabled, g.user["name"])
    return redirect(url_for("accounts.index"))


@bp.post("/<name>/test")
@admin_required
def test(name: str):
    """Log in, report each folder and the after-archive action, list the server's folders; or the exact failure."""
    from archivista_mail.probe import probe_account

    acc = g.state.account(name)
    report, error = None, None
    try:
        report = probe_account(acc, _vault().secret_of(acc), current_app.config["ARCHIVISTA"].network_timeout)
    except ArchivistaMailError as e:
        error = str(e)
    outcome = error or ("ok" if report.ok else "problems found")
    g.state.audit(g.user["name"], "account.test", name, outcome)
    return render_template("accounts/test.html", account=acc, report=report, error=error)


@bp.post("/<name>/folders")
@admin_required
def folders(name: str):
    """Save the folders picked from the server's list after a connection test."""
    picked = tuple(request.form.getlist("folder"))
    acc = g.state.account(name)
    try:
        g.state.save_account(validate(replace(acc, folders=picked)), g.user["name"], new=False)
        flash(translate("Saved.", g.lang))
    except ArchivistaMailError as e:
        flash(str(e))
    return redirect(url_for("accounts.index"))
