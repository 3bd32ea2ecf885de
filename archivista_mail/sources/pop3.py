"""POP3 through poplib: UIDL listing, RETR, DELE after archive (committed by QUIT)."""

from __future__ import annotations

import poplib
import ssl
from collections.abc import Iterator
from pathlib import Path

from ..accounts import Account, AfterAction
from ..errors import ConfigError, ConnectError, escaped, t
from ..model import RawMail, SpooledData
from ..spool import SpoolWriter
from . import base
from .base import (
    Batch,
    Folder,
    FolderReport,
    InboxReport,
    Item,
    Lang,
    Ledger,
    ProbeReport,
    Source,
    after_setting,
    batches_of,
)
from .imap import subject_of
from .mailserver import Session, plain_warning, server_settings, tls_context

# poplib refuses lines over 2,048 bytes (its _MAXLINE guard); real HTML mail has longer ones.
# RFC 1939 allows 512 octets a line but servers pass long message lines through unchanged.
poplib._MAXLINE = 64 * 1024 * 1024  # type: ignore[attr-defined]


class _Pop3(poplib.POP3):
    """poplib.POP3 with TLS from the start when given a context, that closes its socket if connecting fails.

    poplib's own classes leave the socket open when the greeting never comes or the TLS handshake
    fails (e.g. the wrong --security for the port).
    """

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext | None = None) -> None:
        self._tls = context
        try:
            super().__init__(host, port, timeout)
        except BaseException:
            for opened in (getattr(self, "file", None), getattr(self, "sock", None)):  # the file holds the socket
                if opened is not None:
                    opened.close()
            raise

    def _create_socket(self, timeout):
        sock = super()._create_socket(timeout)
        if self._tls is None:
            return sock
        try:
            return self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class _PopAuthError(Exception):
    """poplib raises error_proto for everything; we split off the login failures."""


class Pop3Session(Session):
    """One logged-in POP3 connection for an account. Use as a context manager."""

    auth_errors = (_PopAuthError,)
    protocol_errors = (poplib.error_proto,)

    def _connect(self) -> None:
        acc = self.account
        with self._guard(t("connecting")):
            if acc.security == "ssl":
                self.client = _Pop3(acc.host, acc.port, self.timeout, tls_context(acc))
            elif acc.security in ("starttls", "plain"):
                self.client = _Pop3(acc.host, acc.port, self.timeout)
                if acc.security == "starttls":
                    self.client.stls(tls_context(acc))
            else:
                raise ConfigError(t("Account %(name)s: unknown security '%(security)s'.", name=acc.name,
                                    security=escaped(acc.security)))
        with self._guard(t("logging in")):
            capabilities = self._capabilities()
            if acc.security == "plain" and "STLS" in capabilities and "USER" not in capabilities:
                raise self._plaintext_refused()
            if "UTF8" in capabilities:
                # RFC 6856: without UTF8 a server may hand out a substitute for mail with raw 8-bit
                # headers (Courier: "Cannot display Unicode content"); with it, the mail as sent.
                try:
                    self.client.utf8()
                except poplib.error_proto:
                    pass  # offered, then refused: read as before
            try:
                self.client.user(acc.user)
                self.client.pass_(self._password)
            except poplib.error_proto as e:
                text = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
                if acc.security == "plain" and "plaintext" in text.lower():
                    raise self._plaintext_refused() from e
                raise _PopAuthError(text) from e

    def _capabilities(self) -> dict[str, list[str]]:
        """CAPA (RFC 2449); an old server without it has none of the extensions."""
        try:
            return self.client.capa()
        except poplib.error_proto:
            return {}

    def _plaintext_refused(self) -> ConnectError:
        acc = self.account
        return ConnectError(t("Account %(name)s: %(host)s:%(port)s refuses passwords on an unencrypted connection. "
                              "Use --security starttls on this port, or --security ssl on the server's TLS port "
                              "(usually 995).", name=acc.name, host=acc.host, port=acc.port))

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.quit()
        else:
            self.close()

    def quit(self) -> None:
        """QUIT: this is what makes DELE take effect (RFC 1939 section 6)."""
        if self.client is None:
            return
        client, self.client = self.client, None
        with self._guard(t("closing the session")):
            client.quit()

    def close(self) -> None:
        """Drop the connection without QUIT: deletions marked in this session are undone by the server."""
        if self.client is None:
            return
        client, self.client = self.client, None
        try:
            client.close()
        except Exception:
            pass

    def uidl(self) -> dict[str, int]:
        """UIDL -> message number for every message in the maildrop."""
        with self._guard(t("listing mail")):
            _, lines, _ = self.client.uidl()
        return {value: num for num, value in _pairs(lines)}

    def retr(self, number: int) -> bytes:
        """The message's bytes as the server sent them (CRLF lines, dot-stuffing undone)."""
        with self._guard(t("fetching mail")):
            _, lines, _ = self.client.retr(number)
        return b"\r\n".join(lines) + b"\r\n"

    def sizes(self) -> dict[int, int]:
        """Message number -> size in octets (LIST)."""
        with self._guard(t("listing mail")):
            _, lines, _ = self.client.list()
        return {num: int(value) if value.isdigit() else 0 for num, value in _pairs(lines)}

    def retr_to_spool(self, number: int, spool_dir: Path) -> SpooledData:
        """RETR one large message line by line into a spool file (poplib's retr keeps every line in a list).

        Reads the multi-line response as poplib's own ``_getlongresp`` does, without collecting it.
        """
        with SpoolWriter(spool_dir) as writer:
            with self._guard(t("fetching a large mail")):
                self.client._putcmd(f"RETR {number}")
                self.client._getresp()
                while True:
                    line, _ = self.client._getline()
                    if line == b".":
                        break
                    if line.startswith(b".."):  # RFC 1939 3: byte-stuffing
                        line = line[1:]
                    writer.write(line + b"\r\n")
            return writer.close()

    def delete(self, numbers: list[int]) -> None:
        """Mark messages for deletion; they go when quit() succeeds."""
        with self._guard(t("deleting archived mail")):
            for n in numbers:
                self.client.dele(n)

    def first_headers(self) -> bytes | None:
        """The header of message 1 (TOP 1 0), for connection tests; None if the maildrop is empty."""
        with self._guard(t("reading the first message")):
            if self.client.stat()[0] == 0:
                return None
            _, lines, _ = self.client.top(1, 0)
        return b"\r\n".join(lines)

    def count(self) -> int:
        """How many messages the maildrop holds."""
        with self._guard(t("counting messages")):
            return self.client.stat()[0]


def _pairs(lines: list[bytes]) -> list[tuple[int, str]]:
    """'N value' lines of a UIDL or LIST answer -> [(N, value)]."""
    out = []
    for line in lines:
        num, _, value = line.decode("ascii", "replace").partition(" ")
        out.append((int(num), value.strip().split(" ")[0]))
    return out


class Pop3Source(Source):
    """POP3 (poplib): one maildrop, every UIDL not yet archived; DELE after the commit, made real by QUIT."""

    kind = "pop3"
    title = Lang("POP3", "POP3")
    page = "mail"
    page_title = Lang("Mail archiving (IMAP/POP3)", "Mail-Archivierung (IMAP/POP3)")
    actions = ("none", "delete")
    actions_at_close = True  # RFC 1939 6: DELE takes effect with QUIT, when the session ends well
    settings = (*server_settings("POP3", {"ssl": 995, "starttls": 110, "plain": 110}), after_setting(actions))

    def __enter__(self) -> Pop3Source:
        self.session = Pop3Session(self.account, self.secret, self.timeout).__enter__()
        self.numbers: dict[str, int] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.__exit__(*exc)  # QUIT only when all went well; else the deletions are undone

    @classmethod
    def warnings(cls, account: Account) -> list[str]:
        return [w for w in [plain_warning(account)] if w]

    def folders(self) -> list[Folder]:
        return [Folder("INBOX")]

    def open(self, folder: Folder, ledger: Ledger) -> None:
        self.numbers = self.session.uidl()

    def key(self, folder: Folder, ref: object) -> str:
        return f"pop3:{self.account.name}:{ref}"

    def ref_of(self, folder: Folder, key: str) -> str:
        return key[len(self.key(folder, "")):]

    def batches(self, folder: Folder, ledger: Ledger) -> Iterator[Batch]:
        keys = {self.key(folder, uid): uid for uid in self.numbers}
        known = ledger.known(list(keys))
        new = sorted((self.numbers[uid], key) for key, uid in keys.items() if key not in known)
        if not new:
            return
        sizes = self.session.sizes()
        items = [Item(key, keys[key], sizes.get(number, 0)) for number, key in new]
        ledger.expect(len(items))
        for run in batches_of(items, self.config.fetch_batch_size, self.config.fetch_batch_bytes):
            yield Batch(run)

    def fetch(self, folder: Folder, items: list[Item], spool_dir: Path) -> list[RawMail]:
        sizes = self.session.sizes() if any(i.size is None for i in items) else {}  # retried failures
        raws = []
        for item in items:
            number = self.numbers.get(item.ref)
            if number is None:  # gone from the maildrop
                continue
            if (item.size if item.size is not None else sizes.get(number, 0)) > base.SPOOL_FROM:
                raws.append(RawMail(b"", self.account.name, folder.label, item.key, number,
                                    spool=self.session.retr_to_spool(number, spool_dir)))
            else:
                raws.append(RawMail(self.session.retr(number), self.account.name, folder.label, item.key, number))
        return raws

    def apply(self, folder: Folder, action: AfterAction, refs: list) -> None:
        """DELE for the UIDLs still in the maildrop; QUIT makes it real (``actions_at_close``)."""
        if action.kind == "delete":
            self.session.delete([self.numbers[uid] for uid in refs if uid in self.numbers])

    def probe(self) -> ProbeReport:
        return ProbeReport(folders=[FolderReport("INBOX", self.session.count())])

    def inbox(self) -> list[InboxReport]:
        acc = self.account
        return [InboxReport(f"{acc.user}@{acc.host}", "INBOX", self.session.count(),
                            first_subject=subject_of(self.session.first_headers()))]
