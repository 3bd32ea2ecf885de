"""Mail archiving (IMAP/POP3): list, add, edit, disable, delete and test accounts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext

from archivista_mail.accounts import (
    DEFAULT_PORTS,
    Account,
    check_secret_kept,
    parse_after,
    validate,
)
from archivista_mail.errors import ArchivistaMailError, ConfigError
from archivista_mail.vault import Vault

from .auth import admin_required
from .i18n import localized

bp = Blueprint("accounts", __name__, url_prefix="/accounts")


def account_or_404(name: str) -> Account:
    """The stored account of that name, or a 404 page."""
    try:
        return g.state.account(name)
    except ConfigError:
        abort(404)


def _vault() -> Vault:
    return Vault(current_app.config["ARCHIVISTA"].key_path)


def lines_of(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def after_from_form(form) -> str:
    """The after-archive action from the form's select and its move target."""
    after = form.get("after", "none")
    return f"move:{form.get('move_to', '').strip()}" if after == "move" else after


def account_from_form(form, old: Account | None) -> Account:
    """An Account from the submitted form; an empty password keeps the stored one. Raises ConfigError."""
    kind = form.get("kind", old.kind if old else "imap")
    security = form.get("security", "ssl")
    password = form.get("password", "")
    if not password and old is None:
        raise ConfigError(gettext("A password is needed for a new account."))
    after = after_from_form(form)
    try:
        port = int(form.get("port") or DEFAULT_PORTS[(kind, security)])
    except (ValueError, KeyError):
        raise ConfigError(gettext("The port must be a number between 1 and 65535.")) from None
    acc = validate(Account(
        name=old.name if old else form.get("name", "").strip(), kind=kind, host=form.get("host", "").strip(),
        port=port, security=security, username=form.get("username", "").strip(), secret=old.secret if old else "",
        folders=lines_of(form.get("folders", "")) or ("INBOX",), unread_only=form.get("mode") == "unread",
        after=parse_after(after, kind), ca_file=_ca_file(form, old),
        enabled=old.enabled if old else True))
    return with_secret(acc, password, old)


def with_secret(acc: Account, secret: str, old: Account | None) -> Account:
    """The account with a newly entered secret sealed in, or its stored one if it may keep it (same endpoint)."""
    if secret:
        return _vault().seal(acc, secret)
    if old is not None:
        check_secret_kept(old, acc)
    return acc


def _ca_file(form, old: Account | None) -> str | None:
    """The account's CA certificate file: a pasted PEM stored in the data directory, the old one, or none.

    WebAdmin takes the certificate itself, never a path: a path would let it tell which files
    exist on the appliance. (The CLI's --ca-file takes a path: its user is on the machine.)
    """
    if form.get("ca_remove"):
        return None
    pem = form.get("ca_pem", "").strip()
    if not pem:
        return old.ca_file if old else None
    return save_ca_certificate(pem)


def save_ca_certificate(pem: str) -> str:
    """Check a pasted PEM certificate (chain) and store it under ``ca/`` by its hash; returns the file's path."""
    import hashlib

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


def ca_description(account: Account | None) -> str | None:
    """What the form says about the stored CA certificate: its subject, or the path the CLI set."""
    if account is None or not account.ca_file:
        return None
    ca_dir = current_app.config["ARCHIVISTA"].data_dir / "ca"
    path = Path(account.ca_file)
    if path.parent != ca_dir:
        return gettext("Set with the command line: %(path)s", path=account.ca_file)
    try:
        from cryptography import x509

        first = x509.load_pem_x509_certificates(path.read_bytes())[0]
        return first.subject.rfc4514_string()
    except (OSError, ValueError):
        return gettext("stored, but it cannot be read")


@bp.get("/")
@admin_required
def index():
    accounts = [a for a in g.state.accounts() if a.kind in ("imap", "pop3")]
    return render_template("accounts/index.html", accounts=accounts)


@bp.route("/new", methods=["GET", "POST"])
@admin_required
def new():
    error = None
    if request.method == "POST":
        try:
            acc = account_from_form(request.form, None)
            g.state.save_account(acc, g.user["name"], new=True)
            flash(gettext("Saved."))
            if acc.security == "plain":
                flash(gettext("Plain connections send the password unencrypted."))
            return redirect(url_for("accounts.index"))
        except ArchivistaMailError as e:
            error = localized(e)
    return render_template("accounts/form.html", account=None, form=request.form, error=error, ca=None), \
        400 if error else 200


@bp.route("/<name>/edit", methods=["GET", "POST"])
@admin_required
def edit(name: str):
    old = account_or_404(name)
    error = None
    if request.method == "POST":
        try:
            g.state.save_account(account_from_form(request.form, old), g.user["name"], new=False)
            flash(gettext("Saved."))
            return redirect(url_for("accounts.index"))
        except ArchivistaMailError as e:
            error = localized(e)
    return render_template("accounts/form.html", account=old, form=request.form, error=error,
                           ca=ca_description(old)), 400 if error else 200


@bp.post("/<name>/delete")
@admin_required
def delete(name: str):
    kind = account_or_404(name).kind
    g.state.remove_account(name, g.user["name"])
    flash(gettext("Deleted."))
    return redirect(url_for("o365.index" if kind == "o365" else "accounts.index"))


@bp.post("/<name>/toggle")
@admin_required
def toggle(name: str):
    acc = account_or_404(name)
    g.state.set_enabled(name, not acc.enabled, g.user["name"])
    return redirect(url_for("accounts.index"))


@bp.post("/<name>/test")
@admin_required
def test(name: str):
    """Log in, report each folder and the after-archive action, list the server's folders; or the exact failure.

    The page says what happened in our words only (never what the server sent), the test ends
    within the configured network timeout, and WebAdmin's own address and port are refused.
    """
    from archivista_mail.probe import probe_account

    acc = account_or_404(name)
    timeout = current_app.config["ARCHIVISTA"].network_timeout
    report, error = None, None
    try:
        refuse_own_address(acc)
        secret = _vault().secret_of(acc)
        report = within(timeout, lambda: probe_account(acc, secret, timeout, public=True))
    except ArchivistaMailError as e:
        error = localized(e, public=True)
    outcome = error or ("ok" if report.ok else "problems found")
    g.state.audit(g.user["name"], "account.test", name, outcome)
    return render_template("accounts/test.html", account=acc, report=report, error=error)


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
        raise ConfigError(gettext("The server did not finish the test within %(seconds)s seconds.", seconds=seconds)) from None
    finally:
        pool.shutdown(wait=False)


def refuse_own_address(acc: Account) -> None:
    """WebAdmin must not be made to connect to itself (a test of its own port would tie up its workers)."""
    import ipaddress
    import socket

    own_ports = {int(p) for p in (request.environ.get("SERVER_PORT"), request.host.rpartition(":")[2])
                 if p and str(p).isdigit()}
    if acc.port not in own_ports:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(acc.host, acc.port, proto=socket.IPPROTO_TCP)}
        mine = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return  # not resolvable: the test itself will say so
    if any(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in mine for a in addresses):
        raise ConfigError(gettext("That is WebAdmin's own address and port; a mail account cannot be there."))


@bp.post("/<name>/folders")
@admin_required
def folders(name: str):
    """Save the folders picked from the server's list after a connection test."""
    picked = tuple(request.form.getlist("folder"))
    acc = account_or_404(name)
    try:
        g.state.save_account(validate(replace(acc, folders=picked)), g.user["name"], new=False)
        flash(gettext("Saved."))
    except ArchivistaMailError as e:
        flash(localized(e))
    return redirect(url_for("accounts.index"))
