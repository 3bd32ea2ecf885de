"""Connections to mail servers (IMAP, POP3, SMTP): a logged-in session base, verifying TLS, and socket,
TLS and library errors translated into sentences that name the account and what to check."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..accounts import Account
from ..errors import ArchivistaMailError, AuthError, ConnectError, FetchError, Text, escaped, t
from .base import Lang, Setting


class Session:
    """A logged-in connection for one account; subclasses set the error types and ``_connect``.

    Use as a context manager: a connection that fails half-way (TLS, login) is closed again.
    """

    auth_errors: tuple[type[BaseException], ...] = ()
    protocol_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, account: Account, password: str, timeout: int = 60) -> None:
        self.account = account
        self._password = password
        self.timeout = timeout
        self.client: Any = None  # the library's connection (imapclient, poplib: untyped)

    def _guard(self, doing: str | Text):
        return translated(self.account, doing, self.timeout, auth_errors=self.auth_errors,
                          protocol_errors=self.protocol_errors)

    def __enter__(self):
        try:
            self._connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Drop the connection (subclasses log out politely first)."""
        raise NotImplementedError


def tls_context(account: Account) -> ssl.SSLContext:
    """A verifying TLS context: the system CAs, or only the account's CA file if it has one."""
    try:
        return ssl.create_default_context(cafile=account.ca_file or None)
    except (OSError, ssl.SSLError) as e:
        advice = t("Give a PEM file with the certificate of the CA that signed the server's certificate.")
        raise ConnectError(t("Account %(name)s: the CA file %(path)s cannot be read (%(reason)s). %(advice)s",
                             name=account.name, path=account.ca_file, reason=str(e), advice=advice),
                           public=t("Account %(name)s: the account's CA certificate cannot be used. %(advice)s",
                                    name=account.name, advice=advice)) from e


@contextmanager
def translated(account: Account, doing: str | Text, timeout: int, auth_errors: tuple[type[BaseException], ...] = (),
               protocol_errors: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn socket, TLS and library errors into our errors, each a sentence naming the account.

    ``doing`` says what was under way (``t("connecting")``, ``t("fetching mail")``) for the message; it
    completes "while ...", so it is a Text to be translated with the sentence.
    """
    where = f"{account.host}:{account.port}"
    broken: tuple[type[BaseException], ...] = (OSError, EOFError, *protocol_errors)
    try:
        yield
    except ArchivistaMailError:
        raise
    except auth_errors as e:
        advice = t("Check the user name and password, and that the mailbox allows this kind of access.")
        raise AuthError(t("Account %(name)s: the server %(host)s rejected the login of user '%(user)s' (%(reason)s). "
                          "%(advice)s", name=account.name, host=account.host, user=escaped(account.user),
                          reason=reason_of(e), advice=advice),
                        public=t("Account %(name)s: the server %(host)s rejected the login of user '%(user)s'. "
                                 "%(advice)s", name=account.name, host=account.host, user=escaped(account.user),
                                 advice=advice)) from e
    except ssl.SSLCertVerificationError as e:
        raise ConnectError(t("Account %(name)s: the TLS certificate of %(where)s is not trusted (%(reason)s). Check "
                             "that the host name matches the certificate; if the server uses its own CA, give its "
                             "certificate with --ca-file.", name=account.name, where=where,
                             reason=e.verify_message or reason_of(e))) from e
    except ssl.CertificateError as e:  # not a subclass of SSLError on every Python
        raise ConnectError(t("Account %(name)s: the TLS certificate of %(where)s does not fit (%(reason)s). Check the "
                             "host name, or give the server's CA with --ca-file.", name=account.name, where=where,
                             reason=str(e))) from e
    except ssl.SSLError as e:
        if account.security == "ssl" and _plain_text_answer(e):
            raise ConnectError(t("Account %(name)s: %(where)s answered in plain text, not TLS. Use --security "
                                 "starttls on this port, or --security ssl on the server's TLS port (993 for IMAP, "
                                 "995 for POP3).", name=account.name, where=where)) from e
        raise ConnectError(t("Account %(name)s: the TLS handshake with %(where)s failed (%(reason)s). Check that the "
                             "port and the security setting (ssl or starttls) fit the server.", name=account.name,
                             where=where, reason=reason_of(e))) from e
    except socket.gaierror as e:
        raise ConnectError(t("Account %(name)s: the server name '%(host)s' cannot be resolved (%(reason)s). Check the "
                             "host name and the machine's DNS settings.", name=account.name,
                             host=escaped(account.host), reason=e.strerror)) from e
    except ConnectionRefusedError as e:
        raise ConnectError(t("Account %(name)s: %(where)s refused the connection. Check the port and that the mail "
                             "server is running.", name=account.name, where=where)) from e
    except (TimeoutError, socket.timeout) as e:
        if str(doing) == "connecting" and account.security != "ssl":
            raise ConnectError(t("Account %(name)s: %(where)s accepted the connection but sent no greeting within "
                                 "%(timeout)s seconds. If this port expects TLS from the first byte (993 for IMAP, "
                                 "995 for POP3), use --security ssl; otherwise check the server.", name=account.name,
                                 where=where, timeout=timeout)) from e
        # Translators: %(doing)s is what was under way, e.g. "fetching mail".
        raise ConnectError(t("Account %(name)s: %(where)s did not answer within %(timeout)s seconds while %(doing)s. "
                             "Check the network and the server; the next run continues where this one stopped.",
                             name=account.name, where=where, timeout=timeout, doing=doing)) from e
    except broken as e:
        # Translators: %(doing)s is what was under way, e.g. "fetching mail".
        raise FetchError(t("Account %(name)s: the connection to %(where)s failed while %(doing)s (%(reason)s). The "
                           "next run continues where this one stopped.", name=account.name, where=where, doing=doing,
                           reason=reason_of(e)),
                         # Translators: %(doing)s is what was under way, e.g. "fetching mail".
                         public=t("Account %(name)s: the connection to %(where)s failed while %(doing)s. Check that "
                                  "server, port and security belong to the account's mail server.",
                                  name=account.name, where=where, doing=doing)) from e


def _plain_text_answer(e: ssl.SSLError) -> bool:
    """True when a TLS handshake got a plain-text greeting ("* OK ...", "+OK ...") instead of a TLS record."""
    text = str(e).upper()
    return any(mark in text for mark in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "RECORD LAYER FAILURE",
                                         "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"))


def reason_of(e: BaseException) -> str:
    """A foreign exception's text for our sentences: decoded, without b'' quoting, at most 200 characters."""
    text = str(e)
    if isinstance(e, bytes):  # pragma: no cover
        text = e.decode("utf-8", "replace")
    text = text.strip() or type(e).__name__
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text[:200]


SECURITY = ("ssl", "starttls", "plain")


def server_settings(protocol: str, ports: dict[str, int]) -> tuple[Setting, ...]:
    """The settings of an account on a mail server: host, port, security, user, password, CA file.

    ``ports``: the default port of each security (e.g. IMAP: ssl 993, starttls and plain 143).
    The secret is bound to host, port, security and user (vault): change one, enter it again.
    """
    return (
        Setting("host", "text", Lang("Server", "Server"),
                Lang(f"{protocol}: mail server name or address.", f"{protocol}: Name oder Adresse des Mailservers."),
                required=True, bound=True, lower=True),
        Setting("port", "int", Lang("Port", "Port"),
                Lang(f"Server port. Default: {ports['ssl']} for ssl, {ports['starttls']} otherwise.",
                     f"Port des Servers. Standard: {ports['ssl']} für ssl, sonst {ports['starttls']}."),
                default=lambda values: ports[values.get("security") or "ssl"], bound=True, minimum=1,
                maximum=65535),
        Setting("security", "choice", Lang("Security", "Sicherheit"),
                Lang("ssl: TLS from the start; starttls: upgrade a plain connection; plain: no encryption (insecure).",
                     "ssl: TLS von Anfang an; starttls: Verbindung nachträglich verschlüsseln; plain: unverschlüsselt "
                     "(unsicher)."), default="ssl", choices=SECURITY, bound=True),
        Setting("user", "text", Lang("User", "Benutzer"), Lang("Login name on the server.", "Anmeldename am Server."),
                required=True, bound=True),
        Setting("password", "secret", Lang("Password", "Passwort"),
                Lang("Read the password from the first line of standard input (or asked for on a terminal).",
                     "Das Passwort aus der ersten Zeile der Standardeingabe lesen (oder am Terminal fragen)."),
                option="--password-stdin"),
        Setting("ca_file", "pem", Lang("CA certificate (PEM, optional)", "CA-Zertifikat (PEM, optional)"),
                Lang("PEM file of the CA to trust for this server instead of the system's CAs.",
                     "PEM-Datei der CA, der für diesen Server statt den System-CAs vertraut wird.")),
    )


def plain_warning(account: Account) -> str | None:
    """The warning an unencrypted account gets when it is saved."""
    if account.settings.get("security") == "plain":
        return f"Warning: account {account.name} sends its password and mail unencrypted."
    return None
