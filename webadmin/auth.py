"""Login, logout, language, and the access rules every other page uses."""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from .i18n import LANGUAGES, translate

bp = Blueprint("auth", __name__)

# A hash to compare against when the user does not exist, so both cases take the same time.
_DUMMY_HASH = generate_password_hash("not a password")


def _load_user() -> dict | None:
    name = session.get("user")
    if not name:
        return None
    return g.state.user(name)


def login_required(view):
    """Pages for any logged-in user (viewer or admin); anonymous visitors go to the login page and back."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        g.user = _load_user()
        if g.user is None:
            flash(translate("Please log in to see this page.", g.lang))
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)
    return wrapped


def admin_required(view):
    """Pages for administrators only; viewers get 403."""
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if g.user["role"] != "admin":
            abort(403, translate("This page is for administrators.", g.lang))
        return view(*args, **kwargs)
    return wrapped


def _safe_next(target: str | None) -> str:
    """Only local paths: a login page must not send people to other sites."""
    if not target:
        return url_for("documents.search")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("documents.search")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    g.user = None
    error = None
    if request.method == "POST":
        name = request.form.get("username", "").strip()
        user = g.state.user(name)
        if check_password_hash(user["password_hash"] if user else _DUMMY_HASH, request.form.get("password", "")) \
                and user is not None:
            lang = session.get("lang", "de")
            session.clear()
            session.permanent = True
            session["user"], session["lang"] = user["name"], lang
            g.state.audit(user["name"], "webadmin.login", user["name"], request.remote_addr or "")
            return redirect(_safe_next(request.form.get("next")))
        g.state.audit(name or "?", "webadmin.login_failed", name, request.remote_addr or "")
        error = translate("Wrong user name or password.", g.lang)
    return render_template("auth/login.html", error=error, next=request.values.get("next", "")), 401 if error else 200


@bp.post("/logout")
def logout():
    lang = session.get("lang", "de")
    session.clear()
    session["lang"] = lang
    return redirect(url_for("auth.login"))


@bp.post("/language")
def language():
    lang = request.form.get("lang", "de")
    session["lang"] = lang if lang in LANGUAGES else "de"
    return redirect(_safe_next(request.form.get("next")))
