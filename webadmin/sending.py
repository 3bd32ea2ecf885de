"""Sending a document by mail from its page ("Senden"): for administrators and the role sender, who may send
but not configure. The work is archivista_mail.sender's; this is the form."""

from __future__ import annotations

import secrets

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext

from archivista_mail.compose import LANGS, template_names
from archivista_mail.errors import ArchivistaMailError
from archivista_mail.sender import Sender

from . import _config, get_archive
from .auth import sender_required
from .documents import _document
from .i18n import current_language, localized, option_label

bp = Blueprint("sending", __name__)
FIELDS = ("via", "to", "cc", "subject", "template", "lang", "text")


def _smtp_accounts() -> list:
    return [a for a in g.state.accounts() if a.enabled and a.source.outgoing]


@bp.route("/documents/<int:number>/send", methods=["GET", "POST"])
@sender_required
def send(number: int):
    doc = _document(number)
    accounts = _smtp_accounts()
    config = _config()
    form = {k: request.form.get(k, "") for k in FIELDS}
    form["request"] = request.form.get("request") or secrets.token_urlsafe(16)  # one send per form, however often posted
    form["lang"] = form["lang"] or current_language()
    form["template"] = form["template"] or "document"
    error, status = None, 200
    if request.method == "POST":
        try:
            result = Sender(config, g.state, get_archive(), g.user["name"]).send_document(
                number, form["via"], _addresses(form["to"]), _addresses(form["cc"]), form["subject"] or None,
                form["template"], form["text"], form["lang"] if form["lang"] in LANGS else "de",
                sender_name=g.user["name"], request=form["request"][:64])
        except ArchivistaMailError as e:  # the server's own words only for administrators
            error, status = localized(e, public=g.user["role"] != "admin"), 400
        else:
            if result.status == "sent":
                flash(gettext("Sent: the mail is archived as document %(number)s on this record.",
                              number=result.number))
            else:  # the server's reply is on the document's page (for administrators)
                flash(gettext("Not sent yet (%(status)s). The mail is archived as document %(number)s.",
                              status=option_label(result.status, "sending"), number=result.number))
            return redirect(url_for("documents.view", number=result.record or number))
    return render_template("documents/send.html", doc=doc, accounts=accounts, form=form, error=error,
                           templates=template_names(config.data_dir / "mail-templates"), langs=LANGS), status


def _addresses(text: str) -> list[str]:
    """Addresses as typed: separated by commas, semicolons or new lines (each one then checked on its own)."""
    return [a.strip() for a in text.replace(";", ",").replace("\n", ",").split(",") if a.strip()]
