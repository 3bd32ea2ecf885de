"""WebAdmin: the Flask application for partners (accounts, imports, settings) and archive users.

    gunicorn 'webadmin:create_app()'

``create_app`` reads the same data directory as the CLI (``ARCHIVISTA_MAIL_DATA``, or the
configuration file) when it is called, never at import time.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

from flask import Flask, g
from flask_wtf.csrf import CSRFProtect

from archivista_mail.archive import open_archive
from archivista_mail.config import Config, load_config
from archivista_mail.errors import ConfigError
from archivista_mail.state import State
from archivista_mail.vault import Vault, secret_file

from .i18n import (
    LANGUAGES,
    babel,
    check_timezone,
    current_language,
    localize,
    option_label,
    select_locale,
    time_element,
)

csrf = CSRFProtect()


def _secret_key(data_dir: Path) -> bytes:
    """The session signing key: created 0600 beside the archive on first start, kept across upgrades."""
    return secret_file(data_dir / "webadmin.key", lambda: secrets.token_bytes(32))


def create_app(config: Config | None = None, test_config: dict | None = None) -> Flask:
    """The WebAdmin application for one data directory."""
    if config is None:
        config = load_config(os.environ.get("ARCHIVISTA_MAIL_DATA"), os.environ.get("ARCHIVISTA_MAIL_CONFIG"))
    os.umask(0o027)  # what WebAdmin creates is for its user and group only
    if not State.exists(config.data_dir):
        raise ConfigError(f"There is no archive in {config.data_dir}. Create one with 'archivista-mail --data-dir "
                          f"{config.data_dir} init', or set ARCHIVISTA_MAIL_DATA.")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=_secret_key(config.data_dir),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.webadmin_secure_cookies,
        SESSION_COOKIE_NAME="archivista_mail_session",
        PERMANENT_SESSION_LIFETIME=8 * 3600,
        MAX_CONTENT_LENGTH=1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        BABEL_DEFAULT_LOCALE="de",
        # Dates are stored in UTC and shown in the appliance's time zone.
        BABEL_DEFAULT_TIMEZONE=check_timezone(config.webadmin_timezone),
        ARCHIVISTA=config,
    )
    if test_config:
        app.config.update(test_config)
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.filters.update(label=option_label, localtime=time_element, localize=localize)
    state = State(config.data_dir)
    state.ensure_schema()
    state.bind_legacy_secrets(Vault(config.key_path))
    state.close()

    @app.before_request
    def _open() -> None:
        g.state = _per_worker(("state", str(config.data_dir)), lambda: State(config.data_dir))

    csrf.init_app(app)  # after _open: a page explaining a failed check can still show who is logged in

    @app.after_request
    def _headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html" and "Content-Security-Policy" not in response.headers:
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
        return response

    @app.context_processor
    def _template_helpers():
        return {"languages": LANGUAGES, "current_language": current_language(), "current_user": g.get("user")}

    @app.get("/healthz")
    def healthz():
        """For the service manager: the state database answers."""
        g.state.db.execute("SELECT 1").fetchone()
        return {"status": "ok"}

    from . import accounts, audit, auth, documents, errors, graph_notify, imports, links, rules, sending

    for module in (auth, accounts, imports, rules, links, documents, sending, graph_notify, audit, errors):
        app.register_blueprint(module.bp)
    return app


_connections: dict = {}


def _per_worker(key, factory):
    """One database connection per worker thread, reused by its requests (a gunicorn thread serves one
    request at a time); a forked worker or another thread opens its own instead of sharing one."""
    key = (os.getpid(), threading.get_ident(), *key)
    if key not in _connections:
        _connections[key] = factory()
    return _connections[key]


def get_archive():
    """The archive (one connection per worker process)."""
    config = _config()

    def open_() -> object:
        archive = open_archive(config.data_dir, config.archive_backend)
        archive.ensure_schema()
        return archive

    return _per_worker(("archive", str(config.data_dir), config.archive_backend), open_)


def _config() -> Config:
    from flask import current_app

    return current_app.config["ARCHIVISTA"]
