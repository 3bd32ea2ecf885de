"""Mail accounts of every source kind: pages, forms, connection tests, all built from the sources' declared
settings (archivista_mail/sources/base.py). A source installed as a plugin gets its page and form here
without a change to this module.

URLs: /sources/<page>/ lists a page's accounts (/accounts/ is the first page); /accounts/new?kind=KIND
adds one; /accounts/<name>/edit|delete|toggle|test|folders.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext

from archivista_mail.accounts import TARGET_ACTIONS, Account, account_from_input, check_secret_kept, validate
from archivista_mail.errors import ArchivistaMailError, ConfigError
from archivista_mail.sources import registry, source_class
from archivista_mail.vault import Vault

from .auth import admin_required
from .i18n import current_language, localized

bp = Blueprint("accounts", __name__)


def pages() -> dict[str, tuple[str, list[str]]]:
    """WebAdmin's account pages: page id -> (title in this request's language, the kinds it lists)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for kind, source in registry().items():
        title, kinds = out.get(source.page, ((source.page_title or source.title)(current_language()), []))
        out[source.page] = (title, [*kinds, kind])
    return out


@bp.app_context_processor
def _account_pages() -> dict[str, Any]:
    return {"account_pages": pages}


@bp.app_template_filter("public_error")
def _public_error(error: ArchivistaMailError | None) -> str:
    """Jinja: an error in our own words (never what a server sent), in the user's language."""
    return localized(error, public=True) if error is not None else ""


def account_or_404(name: str) -> Account:
    """The stored account of that name, or a 404 page."""
    try:
        return g.state.account(name)
    except ConfigError:
        abort(404)


def _vault() -> Vault:
    return Vault(current_app.config["ARCHIVISTA"].key_path)


# -- pages ------------------------------------------------------------------------------------
@bp.get("/sources/<page>/")
@admin_required
def page(page: str):
    if page not in pages():
        abort(404)
    title, kinds = pages()[page]
    accounts = [a for a in g.state.accounts() if a.kind in kinds]
    return render_template("accounts/index.html", page=page, title=title, kinds=kinds, accounts=accounts,
                           sources=registry(), lang=current_language())


@bp.get("/accounts/")
@admin_required
def index():
    """The first account page (IMAP and POP3, as the sources declare it)."""
    return page(next(iter(pages())))


# -- forms ------------------------------------------------------------------------------------
def account_from_form(form, kind: str, old: Account | None) -> Account:
    """An Account from a submitted form, each field as its source declares it. Raises ConfigError.

    An empty secret keeps the stored one, but only for the endpoint it was entered for (vault).
    """
    source = source_class(kind)
    name = old.name if old else form.get("name", "").strip()
    given: dict[str, Any] = {}
    for s in source.settings:
        if s.type in ("secret", "pem"):
            continue
        if s.type == "bool":
            given[s.name] = bool(form.get(s.name))
        elif s.type == "after":
            action = form.get("after", "none")
            target = form.get("move_to", "").strip()  # the folder of a move, or the label to add
            given[s.name] = f"{action}:{target}" if action in TARGET_ACTIONS else action
        else:
            given[s.name] = form.get(s.name, "")
    acc = account_from_input(kind, name, given, old)
    for s in source.settings:
        if s.type == "pem":
            acc = validate(acc.with_settings(**{s.name: _ca_file(form, s.name, old)}))
    secret_setting = source.secret_setting()
    if secret_setting is None:
        return acc
    secret = form.get(secret_setting.name, "")
    if not secret and old is None:
        raise ConfigError(gettext("Enter the %(secret)s.", secret=secret_setting.label(current_language())))
    return with_secret(acc, secret, old)


def with_secret(acc: Account, secret: str, old: Account | None) -> Account:
    """The account with a newly entered secret sealed in, or its stored one if it may keep it (same endpoint)."""
    if secret:
        return _vault().seal(acc, secret)
    if old is not None:
        check_secret_kept(old, acc)
    return acc


def _ca_file(form, name: str, old: Account | None) -> str | None:
    """A CA certificate setting: a pasted PEM stored in the data directory, the old one, or none.

    WebAdmin takes the certificate itself, never a path: a path would let it tell which files
    exist on the appliance. (The CLI's --ca-file takes a path: its user is on the machine.)
    """
    if form.get(f"{name}_remove"):
        return None
    pem = form.get(f"{name}_pem", "").strip()
    if not pem:
        return old.settings.get(name) if old else None
    return save_ca_certificate(pem)


def save_ca_certificate(pem: str) -> str:
    """Check a pasted PEM certificate (chain) and store it under ``ca/`` by its hash; returns the file's path."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        certificates = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ConfigError(gettext("The CA certificate is not a PEM certificate: paste the text from "
                                  "-----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----.")) from None
    data = b"".join(c.public_bytes(Encoding.PEM) for c in certificates)
    directory = current_app.config["ARCHIVISTA"].data_dir / "ca"
    directory.mkdir(mode=0o750, exist_ok=True)
    path = directory / f"{hashlib.sha256(data).hexdigest()[:24]}.pem"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def ca_description(path: str | None) -> str | None:
    """What the form says about a stored CA certificate: its subject, or the path the CLI set."""
    if not path:
        return None
    ca_dir = current_app.config["ARCHIVISTA"].data_dir / "ca"
    if Path(path).parent != ca_dir:
        return gettext("Set with the command line: %(path)s", path=path)
    try:
        from cryptography import x509

        return x509.load_pem_x509_certificates(Path(path).read_bytes())[0].subject.rfc4514_string()
    except (OSError, ValueError):
        return gettext("stored, but it cannot be read")


def _form(kind: str, account: Account | None, error: str | None):
    source = source_class(kind)
    values = dict(account.settings) if account else {}
    ca = {s.name: ca_description(values.get(s.name)) for s in source.settings if s.type == "pem"}
    return render_template("accounts/form.html", source=source, kind=kind, account=account, values=values,
                           form=request.form, error=error, ca=ca, lang=current_language(),
                           page_url=url_for("accounts.page", page=source.page)), 400 if error else 200


@bp.route("/accounts/new", methods=["GET", "POST"])
@admin_required
def new():
    kind = request.values.get("kind") or next(iter(registry()))
    if kind not in registry():
        abort(404)
    error = None
    if request.method == "POST":
        try:
            acc = account_from_form(request.form, kind, None)
            g.state.save_account(acc, g.user["name"], new=True)
            flash(gettext("Saved."))
            if acc.settings.get("security") == "plain":
                flash(gettext("Plain connections send the password unencrypted."))
            return redirect(url_for("accounts.page", page=acc.source.page))
        except ArchivistaMailError as e:
            error = localized(e)
    return _form(kind, None, error)


@bp.route("/accounts/<name>/edit", methods=["GET", "POST"])
@admin_required
def edit(name: str):
    old = account_or_404(name)
    error = None
    if request.method == "POST":
        try:
            g.state.save_account(account_from_form(request.form, old.kind, old), g.user["name"], new=False)
            flash(gettext("Saved."))
            return redirect(url_for("accounts.page", page=old.source.page))
        except ArchivistaMailError as e:
            error = localized(e)
    return _form(old.kind, old, error)


@bp.post("/accounts/<name>/delete")
@admin_required
def delete(name: str):
    acc = account_or_404(name)
    g.state.remove_account(name, g.user["name"])
    flash(gettext("Deleted."))
    return redirect(url_for("accounts.page", page=acc.source.page))


@bp.post("/accounts/<name>/toggle")
@admin_required
def toggle(name: str):
    acc = account_or_404(name)
    g.state.set_enabled(name, not acc.enabled, g.user["name"])
    return redirect(url_for("accounts.page", page=acc.source.page))


# -- connection test ---------------------------------------------------------------------------------
@bp.post("/accounts/<name>/test")
@admin_required
def test(name: str):
    """Log in, report each folder and the after-archive action, list the server's folders; or the exact failure.

    The page says what happened in our words only (never what the server sent), the test ends
    within the configured network timeout, and WebAdmin's own address and port are refused.
    """
    from archivista_mail.probe import probe_account

    acc = account_or_404(name)
    config = current_app.config["ARCHIVISTA"]
    report, error = None, None
    try:
        refuse_own_address(acc)
        secret = _vault().secret_of(acc) if acc.source.secret_setting() else ""
        report = within(config.network_timeout, lambda: probe_account(acc, config, secret))
    except ArchivistaMailError as e:
        error = localized(e, public=True)
    outcome = error or ("ok" if report is not None and report.ok else "problems found")
    g.state.audit(g.user["name"], "account.test", name, outcome)
    return render_template("accounts/test.html", account=acc, report=report, error=error,
                           page_url=url_for("accounts.page", page=acc.source.page))


def within(seconds: int, probe):
    """Run a connection test, giving up after ``seconds`` in all (a server may answer slowly, byte by byte).

    The test's thread ends by itself at its own socket timeouts; WebAdmin does not wait for it.
    """
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as Late

    pool = ThreadPoolExecutor(1, thread_name_prefix="connection-test")
    try:
        return pool.submit(probe).result(timeout=seconds + 1)
    except Late:
        raise ConfigError(gettext("The server did not finish the test within %(seconds)s seconds.",
                                  seconds=seconds)) from None
    finally:
        pool.shutdown(wait=False)


def refuse_own_address(acc: Account) -> None:
    """WebAdmin must not be made to connect to itself (a test of its own port would tie up its workers)."""
    import ipaddress
    import socket

    host, port = acc.settings.get("host"), acc.settings.get("port")
    own_ports = {int(p) for p in (request.environ.get("SERVER_PORT"), request.host.rpartition(":")[2])
                 if p and str(p).isdigit()}
    if not host or port not in own_ports:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
        mine = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return  # not resolvable: the test itself will say so
    if any(ipaddress.ip_address(str(a).split("%")[0]).is_loopback or a in mine for a in addresses):
        raise ConfigError(gettext("That is WebAdmin's own address and port; a mail account cannot be there."))


@bp.post("/accounts/<name>/folders")
@admin_required
def folders(name: str):
    """Save the folders picked from the server's list after a connection test."""
    acc = account_or_404(name)
    try:
        picked = tuple(request.form.getlist("folder"))
        g.state.save_account(validate(acc.with_settings(**{acc.source.folder_setting: picked})), g.user["name"],
                             new=False)
        flash(gettext("Saved."))
    except ArchivistaMailError as e:
        flash(localized(e))
    return redirect(url_for("accounts.page", page=acc.source.page))
