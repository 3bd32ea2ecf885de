"""Archive link settings and the direct document links themselves (/doc/<number>)."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext

from archivista_mail.errors import ArchivistaMailError
from archivista_mail.links import (
    BASE_URL_SETTING,
    TITLE_FIELD_SETTING,
    TITLE_FIELDS,
    link_title,
    link_url,
)
from archivista_mail.settings import STORED_SETTINGS, save_setting

from . import get_archive
from .auth import admin_required, login_required
from .i18n import localized

bp = Blueprint("links", __name__)


@bp.route("/settings/links", methods=["GET", "POST"])
@admin_required
def settings():
    error = None
    if request.method == "POST":
        try:
            STORED_SETTINGS[BASE_URL_SETTING].parse(request.form.get("base_url", ""))  # both checked before either is saved
            STORED_SETTINGS[TITLE_FIELD_SETTING].parse(request.form.get("title_field", ""))
            save_setting(g.state, BASE_URL_SETTING, request.form.get("base_url", ""), g.user["name"])
            save_setting(g.state, TITLE_FIELD_SETTING, request.form.get("title_field", ""), g.user["name"])
            flash(gettext("Saved."))
            return redirect(url_for("links.settings"))
        except ArchivistaMailError as e:
            error = localized(e)
    archive = get_archive()
    metadata = archive.field_names() if hasattr(archive, "field_names") else []
    return render_template("links/settings.html", base_url=g.state.setting(BASE_URL_SETTING),
                           title_field=g.state.setting(TITLE_FIELD_SETTING), fields=TITLE_FIELDS, metadata=metadata,
                           error=error), \
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
