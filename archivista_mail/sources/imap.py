"""IMAP through imapclient: login, folders, new UIDs above the cursor, BODY.PEEK[], actions."""

from __future__ import annotations

import imaplib
from datetime import datetime
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from ..errors import ConfigError, FolderError
from ..model import SpooledData
from ..spool import SpoolWriter
from . import FolderInfo, Session, tls_context

SEEN = b"\\Seen"
DELETED = b"\\Deleted"
# Servers cap a command's length (Dovecot: "Too long argument" near 64 KB); imapclient sends
# UID lists as they are, so long lists go in slices.
UIDS_PER_COMMAND = 2000
PROTOCOL_ERRORS = (IMAPClientError, imaplib.IMAP4.error, imaplib.IMAP4.abort)


class ImapSession(Session):
    """One logged-in IMAP connection for an account. Use as a context manager."""

    auth_errors = (LoginError,)
    protocol_errors = PROTOCOL_ERRORS
    client: IMAPClient | None

    def _connect(self) -> None:
        acc = self.account
        with self._guard("connecting"):
            if acc.security == "ssl":
                self.client = IMAPClient(acc.host, port=acc.port, ssl=True, ssl_context=tls_context(acc),
                                         timeout=self.timeout)
            elif acc.security in ("starttls", "plain"):
                self.client = IMAPClient(acc.host, port=acc.port, ssl=False, timeout=self.timeout)
                if acc.security == "starttls":
                    self.client.starttls(tls_context(acc))
            else:
                raise ConfigError(f"Account {acc.name}: unknown security {acc.security!r}.")
        with self._guard("logging in"):
            self.client.login(acc.username, self._password)

    def close(self) -> None:
        """Log out; a connection that is already broken is simply dropped."""
        if self.client is None:
            return
        client, self.client = self.client, None
        try:
            client.logout()
        except Exception:  # logging out of a dead connection: nothing left to lose
            try:
                client.shutdown()
            except Exception:
                pass

    def list_folders(self) -> list[str]:
        """Names of all folders on the server (decoded from modified UTF-7)."""
        with self._guard("listing folders"):
            return [name if isinstance(name, str) else name.decode() for _, _, name in self.client.list_folders()]

    def open_folder(self, name: str) -> FolderInfo:
        """SELECT (or EXAMINE when read-only) a folder; raises FolderError if it does not exist."""
        with self._guard(f"opening folder {name!r}"):
            try:
                info = self.client.select_folder(name, readonly=self.account.readonly)
            except IMAPClientError as e:
                if not self.client.folder_exists(name):
                    folders = ", ".join(self.list_folders()[:20])
                    raise FolderError(f"Account {self.account.name}: the folder {name!r} does not exist on "
                                      f"{self.account.host}. Folders there: {folders}. Fix the account's "
                                      "folder list.") from e
                raise
        self.folder = FolderInfo(name, int(info[b"UIDVALIDITY"]), _int_or_none(info.get(b"UIDNEXT")),
                                 int(info.get(b"EXISTS", 0)))
        return self.folder

    def list_new(self, after_uid: int, unread_only: bool) -> list[tuple[int, int]]:
        """(uid, size) of messages with UID above ``after_uid``, oldest first; unread ones only if asked.

        ``UID SEARCH UID n:*`` costs what is new, not the mailbox size. It returns the last
        message even when its UID is below n (RFC 3501 6.4.8), hence the filter.
        """
        criteria = ["UID", f"{after_uid + 1}:*"] + (["UNSEEN"] if unread_only else [])
        with self._guard("listing new mail"):
            uids = [uid for uid in self.client.search(criteria) if uid > after_uid]
        return self.sizes(uids)

    def sizes(self, uids: list[int]) -> list[tuple[int, int]]:
        """(uid, size) for given UIDs that still exist."""
        out = []
        for i in range(0, len(uids), UIDS_PER_COMMAND):
            with self._guard("listing mail"):
                found = self.client.fetch(uids[i:i + UIDS_PER_COMMAND], [b"RFC822.SIZE"])
            out += [(uid, int(item.get(b"RFC822.SIZE", 0))) for uid, item in found.items()]
        return sorted(out)

    def fetch(self, uids: list[int]) -> dict[int, tuple[bytes, str | None]]:
        """Original bytes (BODY.PEEK[]: does not set \\Seen) and INTERNALDATE of each UID still there."""
        wanted = set(uids)
        with self._guard("fetching mail"):
            found = self.client.fetch(uids, [b"BODY.PEEK[]", b"INTERNALDATE"])
        out = {}
        for uid, item in found.items():
            body = item.get(b"BODY[]")
            if uid in wanted and body is not None:
                when = item.get(b"INTERNALDATE")
                out[uid] = (bytes(body), when.isoformat() if isinstance(when, datetime) else None)
        return out

    def fetch_to_spool(self, uid: int, spool_dir: Path, chunk: int = 8 << 20) -> SpooledData | None:
        """Fetch one large message in pieces (``BODY.PEEK[]<offset.length>``) into a spool file.

        Memory stays at one piece whatever the size. Returns None if the message is gone.
        """
        writer = SpoolWriter(spool_dir)
        try:
            offset = 0
            while True:
                key = f"BODY[]<{offset}>".encode()
                with self._guard("fetching a large mail"):
                    found = self.client.fetch([uid], [f"BODY.PEEK[]<{offset}.{chunk}>".encode()])
                if uid not in found:
                    writer.discard()
                    return None
                piece = found[uid].get(key) or b""
                writer.write(piece)
                offset += len(piece)
                if len(piece) < chunk:
                    return writer.close()
        except BaseException:
            writer.discard()
            raise

    def apply(self, action: str, uids: list[int]) -> None:
        """Carry out an after-archive action on UIDs of the open folder (idempotent)."""
        if action == "none":
            return
        for i in range(0, len(uids), UIDS_PER_COMMAND):
            self._apply_slice(action, uids[i:i + UIDS_PER_COMMAND])

    def _apply_slice(self, action: str, uids: list[int]) -> None:
        with self._guard(f"applying the after-archive action {action!r}"):
            client = self.client
            if action == "read":
                client.add_flags(uids, [SEEN], silent=True)
            elif action == "delete":
                client.add_flags(uids, [DELETED], silent=True)
                self._expunge(uids)
            elif action.startswith("move:"):
                target = action[5:]
                if not client.folder_exists(target):
                    client.create_folder(target)
                if client.has_capability("MOVE"):
                    client.move(uids, target)
                else:
                    client.copy(uids, target)
                    client.add_flags(uids, [DELETED], silent=True)
                    self._expunge(uids)
            else:
                raise ConfigError(f"Account {self.account.name}: unknown after-archive action {action!r}.")

    def _expunge(self, uids: list[int]) -> None:
        if self.client.has_capability("UIDPLUS"):
            self.client.uid_expunge(uids)
        else:  # without UIDPLUS this also expunges messages others flagged \Deleted
            self.client.expunge()

    def first_subject(self) -> str | None:
        """Subject of the oldest message in the open folder (for connection tests), None if empty."""
        with self._guard("reading the first message"):
            uids = self.client.search(["ALL"])
            if not uids:
                return None
            found = self.client.fetch([min(uids)], [b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        header = next(iter(found.values()), {}).get(b"BODY[HEADER.FIELDS (SUBJECT)]", b"")
        return header.decode("ascii", "surrogateescape")

    def count(self, folder: str) -> int:
        """How many messages a folder holds (for connection tests)."""
        with self._guard(f"counting messages in {folder!r}"):
            return int(self.client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])


def _int_or_none(value) -> int | None:
    return int(value) if value is not None else None
