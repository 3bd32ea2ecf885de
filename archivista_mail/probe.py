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


def messages(n: int) -> str:
    """'1 message', '2 messages'."""
    return f"{n} message{'' if n == 1 else 's'}"


def mailtest(acc: Account, password: str, timeout: int) -> list[str]:
    """What ``mailtest.py`` prints: 'Authenticated!', the mailbox, the inbox, the first message's subject.

    Raises SourceError subclasses with a sentence when something fails. Never returns a secret.
    """
    from .mime import decode_header_text

    def subject_line(raw_header: str | bytes | None) -> str:
        if raw_header is None:
            return "First message: (the inbox is empty)"
        text = raw_header.decode("ascii", "surrogateescape") if isinstance(raw_header, bytes) else raw_header
        value = ""
        for line in text.splitlines():
            if line.lower().startswith("subject:"):
                value = line[8:]
            elif value and line[:1] in (" ", "\t"):
                value += line
        return f"First message: {decode_header_text(value, [], 'subject') or '(no subject)'}"

    if acc.kind == "o365":
        from .sources.graph import GraphSession

        with GraphSession(acc, password, timeout) as session:
            lines = ["Authenticated!"]
            for mailbox in acc.mailboxes:
                inbox = session.folder_info(mailbox, "inbox")
                first = session.first_message(mailbox, "inbox")
                lines += [f"Mailbox: {mailbox}",
                          f"Inbox: {inbox.get('displayName', 'Inbox')} ({messages(inbox.get('totalItemCount', 0))}, "
                          f"{inbox.get('unreadItemCount', 0)} unread)",
                          f"First message: {first.get('subject') or '(no subject)'}" if first
                          else "First message: (the inbox is empty)"]
            return lines
    if acc.kind == "pop3":
        from .sources.pop3 import Pop3Session

        with Pop3Session(acc, password, timeout) as session:
            return ["Authenticated!", f"Mailbox: {acc.username}@{acc.host}", f"Inbox: {messages(session.count())}",
                    subject_line(session.first_headers())]
    from .sources.imap import ImapSession

    with ImapSession(acc, password, timeout) as session:
        info = session.open_folder("INBOX")
        return ["Authenticated!", f"Mailbox: {acc.username}@{acc.host}", f"Inbox: INBOX ({messages(info.exists)})",
                subject_line(session.first_subject())]
