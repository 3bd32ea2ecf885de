"""Login, logout, language, and the access rules every other page uses.

A session ends at logout, at a password change, when the user is disabled or removed (each
raises the user's session epoch, which every session cookie must match), after
``SESSION_ABSOLUTE`` seconds from its login and after ``SESSION_IDLE`` seconds without a request.
Failed logins are throttled per user name and per client address (``LOGIN_POLICIES``): a lock
grows with each further failure and always ends; ``admin create`` or ``admin enable`` lifts it.
"""

from __future__ import annotations

import functools
import time
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from flask_babel import gettext
from werkzeug.security import check_password_hash, generate_password_hash

from archivista_mail.state import address_login_key, user_login_key

from .i18n import DEFAULT_LANGUAGE, LANGUAGES

bp = Blueprint("auth", __name__)

# A hash to compare against when the user does not exist, so both cases take the same time.
_DUMMY_HASH = generate_password_hash("not a password")
SESSION_ABSOLUTE = 8 * 3600
SESSION_IDLE = 3600
# (failures before a lock, first lock in seconds, longest lock in seconds): per user name, per address.
USER_POLICY, ADDRESS_POLICY = (5, 30.0, 15 * 60.0), (20, 60.0, 3600.0)
FAILURE_WINDOW = 3600.0  # failures older than this are forgotten
NAME_MAX, PASSWORD_MAX = 64, 1024


FIELD_MAX = 16 * 1024  # no form of ours takes more in one field


@bp.before_app_request
def _bounded_fields() -> None:
    """Refuse absurdly long form fields before any view (or the audit trail) sees them."""
    if request.method == "POST" and any(len(v) > FIELD_MAX for v in request.form.values()):
        abort(400, gettext("A form field is too long."))


def load_user() -> dict | None:
    """The logged-in user's row (name, role), or None for an anonymous visitor."""
    name = session.get("user")
    if not name:
        return None
    user = g.state.user(name)
    now = time.time()
    if (user is None or user["disabled"] or session.get("epoch") != user["session_epoch"]
            or now - session.get("issued", 0) > SESSION_ABSOLUTE or now - session.get("seen", 0) > SESSION_IDLE):
        lang = session.get("lang", DEFAULT_LANGUAGE)
        session.clear()
        session["lang"] = lang
        return None
    if now - session.get("seen", 0) > 60:  # renew the idle clock at most once a minute
        session["seen"] = int(now)
    return user


def login_required(view):
    """Pages for any logged-in user (viewer or admin); anonymous visitors go to the login page and back."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        g.user = load_user()
        if g.user is None:
            flash(gettext("Please log in to see this page."))
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)
    return wrapped


def admin_required(view):
    """Pages for administrators only; viewers get 403."""
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if g.user["role"] != "admin":
            abort(403, gettext("This page is for administrators."))
        return view(*args, **kwargs)
    return wrapped


def sender_required(view):
    """Pages for those who may send documents by mail: administrators and senders; others get 403."""
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if g.user["role"] not in ("admin", "sender"):
            abort(403, gettext("Only administrators and senders may send documents."))
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
    error, status = None, 200
    if request.method == "POST":
        name = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        if len(name) > NAME_MAX or len(password) > PASSWORD_MAX:
            abort(400, gettext("The user name or password is too long."))
        address = request.remote_addr or "?"
        keys = [user_login_key(name), address_login_key(address)]
        now = time.time()
        locked = g.state.login_locked_until(keys, now)
        if locked:  # the password is not even checked until the lock ends
            error, status = _locked_message(locked - now), 429
        else:
            user = g.state.user(name)
            if check_password_hash(user["password_hash"] if user else _DUMMY_HASH, password) \
                    and user is not None and not user["disabled"]:
                g.state.login_succeeded(keys)
                return _start_session(user)
            shown = name if user else _unknown_name(name)  # never the whole of what may be a password
            g.state.audit(shown or "?", "webadmin.login_failed", shown, address)
            locked = g.state.login_failed({keys[0]: USER_POLICY, keys[1]: ADDRESS_POLICY}, now, FAILURE_WINDOW)
            if locked:
                g.state.audit(shown or "?", "webadmin.login_locked", shown,
                              f"{address}: logins locked for {int(locked - now)} s after repeated failures")
                error, status = _locked_message(locked - now), 429
            else:
                error, status = gettext("Wrong user name or password."), 401
    return render_template("auth/login.html", error=error, next=request.values.get("next", "")), status


def _start_session(user: dict):
    lang = session.get("lang", DEFAULT_LANGUAGE)
    session.clear()
    session.permanent = True
    now = int(time.time())
    session.update(user=user["name"], lang=lang, epoch=user["session_epoch"], issued=now, seen=now)
    g.state.audit(user["name"], "webadmin.login", user["name"], request.remote_addr or "")
    return redirect(_safe_next(request.form.get("next")))


def _unknown_name(name: str) -> str:
    """What the audit trail keeps of a name that is no user: it may be a password typed in the wrong field."""
    return f"{name[:3]}… ({len(name)} characters, no such user)" if name else ""


def _locked_message(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return gettext("Too many failed logins for this user or from this address. Try again in %(minutes)s minutes, "
                   "or ask an administrator.", minutes=minutes)


@bp.post("/logout")
def logout():
    """Log out: every session of this user ends, on every browser (a saved cookie stops working)."""
    lang = session.get("lang", DEFAULT_LANGUAGE)
    name = session.get("user")
    user = g.state.user(name) if name else None
    if user is not None and session.get("epoch") == user["session_epoch"]:
        g.state.end_sessions(name, name, "logout")
    session.clear()
    session["lang"] = lang
    return redirect(url_for("auth.login"))


@bp.post("/language")
def language():
    """Switch the language (a plain form: it works without JavaScript) and return to the page."""
    lang = request.form.get("lang", DEFAULT_LANGUAGE)
    session["lang"] = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
    return redirect(_safe_next(request.form.get("next")))
