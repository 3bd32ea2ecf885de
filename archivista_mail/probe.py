"""Connection tests: log in and report what is there, without changing anything."""

from __future__ import annotations

from dataclasses import dataclass, field

from .accounts import Account
from .errors import (
    ActionRefusedError,
    ArchivistaMailError,
    FolderError,
    FolderSkippedError,
    Text,
)


@dataclass
class FolderReport:
    """One configured folder in a connection test: its message count, or why it cannot be archived."""

    name: str
    count: int | None = None
    problem: str | Text | None = None  # a sentence; None when the folder is fine
    skipped: bool = False  # it holds only other folders: the importer skips it with a warning


@dataclass
class ProbeReport:
    """What a connection test found: each folder, the after-archive action's target, the server's folders."""

    folders: list[FolderReport] = field(default_factory=list)
    action: str | Text | None = None  # e.g. "the folder 'Archiv/Alt' exists"
    action_problem: str | Text | None = None
    available: list[str] = field(default_factory=list)  # folders that can hold mail (IMAP), as a client shows them

    @property
    def ok(self) -> bool:
        """True when every folder can be archived and the after-archive action can be carried out."""
        return not self.action_problem and not any(f.problem and not f.skipped for f in self.folders)


def probe_account(acc: Account, password: str, timeout: int, public: bool = False) -> ProbeReport:
    """Log in and report each folder's message count (or problem); raises SourceError if the login fails.

    ``public``: problems in our own words only, without what the server said (for WebAdmin).
    """
    report = ProbeReport()

    def said(e: ArchivistaMailError) -> str | Text:
        return e.public_text if public else e.text

    if acc.kind == "o365":
        from .sources.graph import GraphSession

        with GraphSession(acc, password, timeout) as session:
            for mailbox in acc.mailboxes:
                for folder in acc.folders:
                    label = f"{mailbox}/{folder}"
                    try:
                        count = int(session.folder_info(mailbox, folder).get("totalItemCount", 0))
                        report.folders.append(FolderReport(label, count))
                    except FolderError as e:
                        report.folders.append(FolderReport(label, problem=said(e)))
        return report
    if acc.kind == "pop3":
        from .sources.pop3 import Pop3Session

        with Pop3Session(acc, password, timeout) as session:
            report.folders.append(FolderReport("INBOX", session.count()))
        return report
    from .sources.imap import ImapSession

    with ImapSession(acc, password, timeout) as session:
        report.available = session.list_folders()
        for folder in acc.folders:
            try:
                entry = FolderReport(folder, session.open_folder(folder).exists)
            except FolderSkippedError as e:
                entry = FolderReport(folder, problem=said(e), skipped=True)
            except FolderError as e:
                entry = FolderReport(folder, problem=said(e))
            else:
                try:
                    session.check_rights(acc.action)
                except ActionRefusedError as e:
                    entry.problem = said(e)
            report.folders.append(entry)
        if acc.action.kind == "move":
            try:
                report.action = session.check_move_target(acc.action)
            except ActionRefusedError as e:
                report.action_problem = said(e)
    return report


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
