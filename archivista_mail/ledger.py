"""The import ledger of one folder as the import loop uses it: owed after-archive actions carried out
after each commit, and the folder's cursor, known keys and restarts as a source sees them."""

from __future__ import annotations

from collections.abc import Callable

from .accounts import AfterAction
from .archive import Archive
from .errors import ActionRefusedError, Text
from .runs import Progress, RunSummary
from .sources.base import Folder, Ledger


class FolderActions:
    """One folder's after-archive action, carried out only for mail whose archive commit returned.

    The server refusing it is a failure of this folder, recorded once per run: the mails stay
    archived, their actions stay owed in the ledger and are tried again on the next run, and
    the folder's new mail is still archived.
    """

    def __init__(self, action: AfterAction, apply: Callable[[AfterAction, list], None], summary: RunSummary) -> None:
        self.action = action
        self.apply = apply
        self.summary = summary
        self.refused = False

    def carry_out(self, refs: list, action: AfterAction | None = None) -> bool:
        """Apply the action (or a rule's ``action`` for these mails) to ``refs``; True when done, so the caller
        forgets the owed actions."""
        action = action or self.action
        if action.kind == "none" or self.refused or not refs:
            return False
        try:
            self.apply(action, refs)
        except ActionRefusedError as e:
            self.refused = True
            self.summary.folder_failed(e)
            return False
        return True


class FolderLedger(Ledger):
    """The archive's import ledger for one folder, as a source sees it (see sources/base.py)."""

    def __init__(self, archive: Archive, account: str, folder: Folder, summary: RunSummary,
                 progress: Progress) -> None:
        self.archive, self.account, self.folder, self.summary, self.progress = archive, account, folder, summary, progress
        self.cursor = archive.get_state(folder.state_key) if folder.state_key else None
        self.expected = False

    def known(self, keys: list[str]) -> set[str]:
        return self.archive.known_keys(keys)

    def expect(self, count: int) -> None:
        self.expected = True
        self.progress.add_total(count)

    def restart(self, note: str | Text, forget_pending: bool) -> None:
        self.summary.errors.append(str(note))
        self.archive.reset_folder(self.account, self.folder.label, self.folder.state_key, forget_pending)
        self.cursor = None
