"""Error pages in the site's layout and the user's language, with the status code of the error."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, render_template, request, url_for
from flask_babel import lazy_gettext
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from .auth import load_user

bp = Blueprint("errors", __name__)

# Title and explanation per status code; a description given to abort() by our own code (already
# translated) replaces the explanation.
PAGES = {
    400: (lazy_gettext("Bad request"),
          lazy_gettext("The server could not understand what the browser sent. Go back and try again.")),
    403: (lazy_gettext("Access denied"), lazy_gettext("You may not open this page.")),
    404: (lazy_gettext("Not found"),
          lazy_gettext("There is nothing at this address. The link may be incomplete, or what it pointed to "
                       "no longer exists.")),
    405: (lazy_gettext("Not possible here"),
          lazy_gettext("This address cannot be used this way. Use the links and buttons on the pages.")),
    413: (lazy_gettext("Too much data"),
          lazy_gettext("What the browser sent is larger than WebAdmin accepts.")),
    500: (lazy_gettext("Internal error"),
          lazy_gettext("Something went wrong on the server; it has been logged. Try again, and tell the "
                       "administrator if it happens again.")),
}


def _back() -> str:
    """Where "back" leads: the page the form came from (same site only), else the document search."""
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc == request.host and referrer.path.startswith("/") and not referrer.path.startswith("//"):
        return referrer.path + (f"?{referrer.query}" if referrer.query else "")
    return url_for("documents.search")


def _render(template: str, code: int, headers=(), **context):
    back = _back()
    try:
        if g.get("user") is None and "state" in g:
            g.user = load_user()  # the layout shows the menu of whoever is logged in
    except Exception:  # an error page must show even when the state database does not answer
        current_app.logger.exception("no user for the error page")
    # After a refused POST the language switch returns to the page the form came from, not to the POST's address.
    language_next = request.full_path.rstrip("?") if request.method == "GET" else back
    try:
        return render_template(template, code=code, back=back, language_next=language_next, **context), code, headers
    except Exception:  # the error page must not fail in turn (e.g. the error came from the layout itself)
        current_app.logger.exception("error page %s could not be rendered", code)
        title, text = PAGES.get(code, PAGES[500])
        return f"{code} {title}\n\n{text}\n", code, {"Content-Type": "text/plain; charset=utf-8"}


@bp.app_errorhandler(CSRFError)
def csrf_error(e: CSRFError):
    """A form whose CSRF token is missing, wrong or from an earlier session: the page was open too long."""
    current_app.logger.info("CSRF check failed for %s %s: %s", request.method, request.path, e.description)
    return _render("errors/csrf.html", 400)


def http_error(e: HTTPException):
    """400, 403, 404, 405, 413 and 500 (an unhandled exception arrives here as InternalServerError)."""
    code = e.code or 500
    title, text = PAGES.get(code, PAGES[500])
    if e.description and e.description != type(e).description and not isinstance(e, InternalServerError):
        text = e.description
    headers = [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"]  # 405 keeps its Allow
    return _render("errors/error.html", code, headers, title=title, text=text)


for _code in PAGES:
    bp.app_errorhandler(_code)(http_error)
