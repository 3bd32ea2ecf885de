"""Import: the last runs with their summaries, failed messages, and 'run now' under the importer's lock."""

from __future__ import annotations

import os
import subprocess
import sys

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext

from archivista_mail.errors import ConfigError
from archivista_mail.runs import import_lock
from archivista_mail.schedule import interval_minutes
from archivista_mail.settings import INTERVAL_SETTING, save_setting
from archivista_mail.watch import WATCH_SETTING

from . import get_archive
from .auth import admin_required

bp = Blueprint("imports", __name__, url_prefix="/imports")
_started: list[subprocess.Popen] = []  # imports this worker started and has not reaped yet


@bp.get("/")
@admin_required
def index():
    return render_template("imports/index.html", runs=g.state.runs(20), failures=get_archive().failures(),
                           interval=interval_minutes(current_app.config["ARCHIVISTA"], g.state),
                           watch_enabled=g.state.setting(WATCH_SETTING, "") == "1", watches=g.state.watch_status())


@bp.post("/watch")
@admin_required
def watch():
    """"Sofort archivieren (Push)": the watch service archives new mail within seconds while this is on."""
    on = request.form.get("watch") == "1"
    save_setting(g.state, WATCH_SETTING, "1" if on else "", g.user["name"])
    flash(gettext("Saved."))
    return redirect(url_for("imports.index"))


@bp.post("/interval")
@admin_required
def interval():
    """The minutes between scheduled imports (cron starts 'import --scheduled' every minute)."""
    value = request.form.get("minutes", "").strip()
    try:
        if not value:
            raise ConfigError("empty")
        save_setting(g.state, INTERVAL_SETTING, value, g.user["name"])
        flash(gettext("Saved."))
    except ConfigError:
        flash(gettext("The interval must be a whole number of minutes from 1 to 1440."))
    return redirect(url_for("imports.index"))


@bp.post("/run")
@admin_required
def run():
    """Start the import now, in the background (one account with ?account=, e.g. to retry its failures).

    It runs as its own process under the importer's lock, so a long import neither holds a
    WebAdmin worker nor dies with it; the page lists the run when it has finished.
    """
    config = current_app.config["ARCHIVISTA"]
    with import_lock(config.data_dir) as free:
        busy = not free
    if busy:
        flash(gettext("Another import is running; try again in a moment."))
        return redirect(url_for("imports.index"))
    account = request.form.get("account") or None
    command = [sys.executable, "-m", "archivista_mail", "--data-dir", str(config.data_dir), "import"]
    if account:
        command += ["--account", account]
    env = dict(os.environ, SUDO_USER=g.user["name"])  # the audit trail names the WebAdmin user
    _started[:] = [p for p in _started if p.poll() is None]  # reap the finished ones
    _started.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True))
    g.state.audit(g.user["name"], "import.start", account or "all accounts", "")
    flash(gettext("The import has started; this page shows it when it has finished."))
    return redirect(url_for("imports.index"))
