"""Archive link settings and the direct document links themselves (/doc/<number>)."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from archivista_mail.errors import ArchivistaMailError
from archivista_mail.links import (BASE_URL_SETTING, TITLE_FIELD_SETTING, TITLE_FIELDS, check_base_url, link_title,
                                   link_url)

from .auth import admin_required, login_required
from .i18n import translate

bp = Blueprint("links", __name__)


@bp.route("/settings/links", methods=["GET", "POST"])
@admin_required
def settings():
    error = None
    if request.method == "POST":
        try:
            base = request.form.get("base_url", "")
            field = request.form.get("title_field", "")
            if field and field not in TITLE_FIELDS:
                raise ArchivistaMailError(f"The title field {field!r} is not a document field.")
            g.state.save_setting(BASE_URL_SETTING, check_base_url(base) if base.strip() else "", g.user["name"])
            g.state.save_setting(TITLE_FIELD_SETTING, field, g.user["name"])
            flash(translate("Saved.", g.lang))
            return redirect(url_for("links.settings"))
        except ArchivistaMailError as e:
            error = str(e)
    return render_template("links/settings.html", base_url=g.state.setting(BASE_URL_SETTING),
                           title_field=g.state.setting(TITLE_FIELD_SETTING), fields=TITLE_FIELDS, error=error), \
        400 if error else 200


@bp.get("/doc/<int:number>")
@login_required
def direct(number: int):
    """A direct link opens the document view (after the login page, if need be)."""
    return redirect(url_for("documents.view", number=number))


def direct_link(document: dict) -> tuple[str | None, str]:
    """The configured direct link of a document (None without a DNS name) and its title."""
    base = g.state.setting(BASE_URL_SETTING)
    title = link_title(document, g.state.setting(TITLE_FIELD_SETTING))
    return (link_url(base, document["number"]) if base else None), title
