"""Connection tests: log in and report what is there, without changing anything."""

from __future__ import annotations

from .accounts import Account


def probe_account(acc: Account, password: str, timeout: int) -> dict[str, int]:
    """Log in and return {folder: message count} for the account's folders; raises SourceError."""
    if acc.kind == "o365":
        from .sources.graph import GraphSession

        with GraphSession(acc, password, timeout) as session:
            return {f"{mailbox}/{folder}": int(session.folder_info(mailbox, folder).get("totalItemCount", 0))
                    for mailbox in acc.mailboxes for folder in acc.folders}
    if acc.kind == "pop3":
        from .sources.pop3 import Pop3Session

        with Pop3Session(acc, password, timeout) as session:
            return {"INBOX": session.count()}
    from .sources.imap import ImapSession

    with ImapSession(acc, password, timeout) as session:
        return {folder: _count(session, folder) for folder in acc.folders}


def _count(session, folder: str) -> int:
    session.open_folder(folder)  # raises FolderError naming the folders that exist
    return session.count(folder)
