"""Import: the last runs with their summaries, failed messages, and 'run now' under the importer's lock."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from archivista_mail.importer import Importer, import_lock
from archivista_mail.schedule import INTERVAL_SETTING, interval_minutes

from . import get_archive
from .auth import admin_required
from .i18n import translate

bp = Blueprint("imports", __name__, url_prefix="/imports")


@bp.get("/")
@admin_required
def index():
    return render_template("imports/index.html", runs=g.state.runs(20), failures=get_archive().failures(),
                           interval=interval_minutes(current_app.config["ARCHIVISTA"], g.state))


@bp.post("/interval")
@admin_required
def interval():
    """The minutes between scheduled imports (cron starts 'import --scheduled' every minute)."""
    value = request.form.get("minutes", "").strip()
    if not value.isdigit() or not 1 <= int(value) <= 1440:
        flash(translate("The interval must be a whole number of minutes from 1 to 1440.", g.lang))
    else:
        g.state.save_setting(INTERVAL_SETTING, value, g.user["name"])
        flash(translate("Saved.", g.lang))
    return redirect(url_for("imports.index"))


@bp.post("/run")
@admin_required
def run():
    """Run the import now (one account with ?account=, e.g. to retry its failed messages)."""
    config = current_app.config["ARCHIVISTA"]
    account = request.form.get("account") or None
    with import_lock(config.data_dir) as locked:
        if not locked:
            flash(translate("Another import is running; try again in a moment.", g.lang))
            return redirect(url_for("imports.index"))
        importer = Importer(config, get_archive(), g.state)
        summary = importer.run(account, actor=g.user["name"])
        importer.extract_pending(workers=1)
    flash(f"Import: {summary.line()}")
    for error in summary.errors:
        flash(error)
    return redirect(url_for("imports.index"))
