"""Mail sources. Each delivers original RFC 5322 bytes and translates its library's errors."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..accounts import Account
from ..errors import ArchivistaMailError, AuthError, ConnectError, FetchError


@dataclass(frozen=True)
class FolderInfo:
    """What selecting a folder told us. ``name`` is the folder as configured, ``server_name`` the server's."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int
    server_name: str = ""
    permanent_flags: frozenset[bytes] | None = None  # upper case; None: the server did not say (all are kept)


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
        self.client = None

    def _guard(self, doing: str):
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
        advice = "Give a PEM file with the certificate of the CA that signed the server's certificate."
        raise ConnectError(f"Account {account.name}: the CA file {account.ca_file} cannot be read ({e}). {advice}",
                           public=f"Account {account.name}: the account's CA certificate cannot be used. {advice}") \
            from e


@contextmanager
def translated(account: Account, doing: str, timeout: int, auth_errors: tuple[type[BaseException], ...] = (),
               protocol_errors: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn socket, TLS and library errors into our errors, each a sentence naming the account.

    ``doing`` says what was under way ("connecting", "fetching mail") for the message.
    """
    where = f"{account.host}:{account.port}"
    try:
        yield
    except ArchivistaMailError:
        raise
    except auth_errors as e:
        advice = "Check the user name and password, and that the mailbox allows this kind of access."
        raise AuthError(f"Account {account.name}: the server {account.host} rejected the login of user "
                        f"{account.username!r} ({reason_of(e)}). {advice}",
                        public=f"Account {account.name}: the server {account.host} rejected the login of user "
                               f"{account.username!r}. {advice}") from e
    except ssl.SSLCertVerificationError as e:
        raise ConnectError(f"Account {account.name}: the TLS certificate of {where} is not trusted "
                           f"({e.verify_message or reason_of(e)}). Check that the host name matches the certificate; "
                           "if the server uses its own CA, give its certificate with --ca-file.") from e
    except ssl.CertificateError as e:  # not a subclass of SSLError on every Python
        raise ConnectError(f"Account {account.name}: the TLS certificate of {where} does not fit ({e}). "
                           "Check the host name, or give the server's CA with --ca-file.") from e
    except ssl.SSLError as e:
        if account.security == "ssl" and _plain_text_answer(e):
            raise ConnectError(f"Account {account.name}: {where} answered in plain text, not TLS. Use --security "
                               "starttls on this port, or --security ssl on the server's TLS port (993 for IMAP, "
                               "995 for POP3).") from e
        raise ConnectError(f"Account {account.name}: the TLS handshake with {where} failed ({reason_of(e)}). "
                           "Check that the port and the security setting (ssl or starttls) fit the server.") from e
    except socket.gaierror as e:
        raise ConnectError(f"Account {account.name}: the server name {account.host!r} cannot be resolved "
                           f"({e.strerror}). Check the host name and the machine's DNS settings.") from e
    except ConnectionRefusedError as e:
        raise ConnectError(f"Account {account.name}: {where} refused the connection. Check the port and that "
                           "the mail server is running.") from e
    except (TimeoutError, socket.timeout) as e:
        if doing == "connecting" and account.security != "ssl":
            raise ConnectError(f"Account {account.name}: {where} accepted the connection but sent no greeting within "
                               f"{timeout} seconds. If this port expects TLS from the first byte (993 for IMAP, 995 "
                               "for POP3), use --security ssl; otherwise check the server.") from e
        raise ConnectError(f"Account {account.name}: {where} did not answer within {timeout} seconds while "
                           f"{doing}. Check the network and the server; the next run continues where this one "
                           "stopped.") from e
    except (OSError, EOFError, *protocol_errors) as e:
        raise FetchError(f"Account {account.name}: the connection to {where} failed while {doing} "
                         f"({reason_of(e)}). The next run continues where this one stopped.",
                         public=f"Account {account.name}: the connection to {where} failed while {doing}. Check "
                                "that server, port and security belong to the account's mail server.") from e


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
