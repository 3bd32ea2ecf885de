"""Office 365: tenant, client ID, client secret (write-only), mailboxes, batch size, connection test."""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext

from archivista_mail.accounts import GRAPH_HOST, Account, parse_after, validate
from archivista_mail.errors import ArchivistaMailError, ConfigError
from archivista_mail.vault import Vault

from .accounts import account_or_404, after_from_form, lines_of, with_secret
from .auth import admin_required
from .i18n import localized

bp = Blueprint("o365", __name__, url_prefix="/o365")


def _from_form(form, old: Account | None) -> Account:
    secret = form.get("client_secret", "")
    if not secret and old is None:
        raise ConfigError(gettext("A client secret is needed for a new Office 365 account."))
    try:
        batch = int(form.get("batch_size") or 25)
    except ValueError:
        raise ConfigError(gettext("Mails per request (Office 365) must be a number between 1 and 1000.")) from None
    after = after_from_form(form)
    acc = validate(Account(
        name=old.name if old else form.get("name", "").strip(), kind="o365", host=GRAPH_HOST, port=443,
        security="ssl", username=form.get("client_id", "").strip(), secret=old.secret if old else "",
        folders=lines_of(form.get("folders", "")) or ("inbox",),
        unread_only=form.get("mode") == "unread", after=parse_after(after, "o365"),
        enabled=old.enabled if old else True, tenant=form.get("tenant", "").strip(),
        mailboxes=lines_of(form.get("mailboxes", "")), batch_size=batch))
    return with_secret(acc, secret, old)


@bp.route("/", methods=["GET", "POST"])
@admin_required
def index():
    accounts = [a for a in g.state.accounts() if a.kind == "o365"]
    edit = request.values.get("edit")
    old = next((a for a in accounts if a.name == edit), None)
    error = None
    if request.method == "POST":
        try:
            acc = _from_form(request.form, old)
            g.state.save_account(acc, g.user["name"], new=old is None)
            flash(gettext("Saved."))
            return redirect(url_for("o365.index"))
        except ArchivistaMailError as e:
            error = localized(e)
    return render_template("o365/index.html", accounts=accounts, account=old, form=request.form, error=error), \
        400 if error else 200


@bp.post("/<name>/test")
@admin_required
def test(name: str):
    from archivista_mail.probe import mailtest

    acc = account_or_404(name)
    try:
        lines = mailtest(acc, Vault(current_app.config["ARCHIVISTA"].key_path).secret_of(acc),
                         current_app.config["ARCHIVISTA"].network_timeout)
        error = None
    except ArchivistaMailError as e:
        lines, error = [], localized(e, public=True)
    g.state.audit(g.user["name"], "account.test", name, "ok" if error is None else error)
    return render_template("o365/test.html", account=acc, lines=lines, error=error)
