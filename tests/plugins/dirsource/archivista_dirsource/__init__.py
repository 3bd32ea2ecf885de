"""A mail source outside archivista_mail, registered only through its entry point (see the .dist-info
beside it): .eml files in a directory, taken in name order, with a cursor (the last name archived),
a secret (a token that must match the directory's .token file) and after-archive actions (delete, or
move into a subdirectory). Nothing in archivista_mail names it; tests/test_source_plugin.py checks that
the CLI, WebAdmin, account test, mailtest.py and the import loop all work with it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from archivista_mail.errors import ActionRefusedError, AuthError, FolderError
from archivista_mail.model import RawMail
from archivista_mail.sources.base import (
    Batch,
    Folder,
    FolderReport,
    InboxReport,
    Item,
    Lang,
    Ledger,
    ProbeReport,
    Setting,
    Source,
    after_setting,
)


class DirSource(Source):
    """A directory of .eml files as a mailbox."""

    kind = "dirsource"
    title = Lang("Directory", "Verzeichnis")
    page = "directories"
    page_title = Lang("Mail directories", "Mail-Verzeichnisse")
    actions = ("none", "move", "delete")
    settings = (
        Setting("directory", "text", Lang("Directory", "Verzeichnis"),
                Lang("The directory holding the .eml files.", "Das Verzeichnis mit den .eml-Dateien."),
                required=True, bound=True),
        Setting("token", "secret", Lang("Token", "Token"),
                Lang("Read the directory's token from standard input.", "Das Token aus der Standardeingabe lesen."),
                option="--token-stdin"),
        Setting("batch", "int", Lang("Files per batch", "Dateien pro Stapel"),
                Lang("Files archived per transaction.", "Dateien pro Transaktion."), default=3, minimum=1,
                maximum=100),
        after_setting(actions),
    )

    def __enter__(self) -> DirSource:
        self.path = Path(self.account.directory)
        try:
            expected = (self.path / ".token").read_text().strip()
        except OSError as e:
            raise FolderError(f"Account {self.account.name}: the directory {self.path} cannot be read ({e}).") from e
        if self.secret != expected:
            raise AuthError(f"Account {self.account.name}: the token is wrong.")
        return self

    def folders(self) -> list[Folder]:
        return [Folder("inbox", f"dirsource:{self.account.name}:inbox")]

    def _names(self) -> list[str]:
        return sorted(p.name for p in self.path.glob("*.eml"))

    def batches(self, folder: Folder, ledger: Ledger) -> Iterator[Batch]:
        new = [name for name in self._names() if ledger.cursor is None or name > ledger.cursor]
        ledger.expect(len(new))
        size = self.account.batch
        for i in range(0, len(new), size):
            run = new[i:i + size]
            yield Batch([Item(self.key(folder, name), name) for name in run], cursor=run[-1])

    def fetch(self, folder: Folder, items: list[Item], spool_dir: Path) -> list[RawMail]:
        delay = float(os.environ.get("DIRSOURCE_DELAY", "0"))  # lets a test kill the import mid-run
        raws = []
        for item in items:
            time.sleep(delay)
            try:
                raw = (self.path / item.ref).read_bytes()
            except FileNotFoundError:
                continue  # gone meanwhile
            raws.append(RawMail(raw, self.account.name, folder.label, item.key))
        return raws

    def apply(self, folder, action, refs) -> None:
        if action.kind == "delete":
            for name in refs:
                (self.path / name).unlink(missing_ok=True)
        elif action.kind == "move":
            target = self.path / action.target
            try:
                target.mkdir(exist_ok=True)
            except OSError as e:
                raise ActionRefusedError(f"Account {self.account.name}: cannot create {target} ({e}).") from e
            for name in refs:
                if (self.path / name).exists():
                    os.replace(self.path / name, target / name)

    def probe(self) -> ProbeReport:
        return ProbeReport(folders=[FolderReport("inbox", len(self._names()))])

    def inbox(self) -> list[InboxReport]:
        names = self._names()
        first = None
        if names:
            for line in (self.path / names[0]).read_text(errors="replace").splitlines():
                if line.lower().startswith("subject:"):
                    first = line[8:].strip()
                    break
        return [InboxReport(str(self.path), "inbox", len(names), first_subject=first)]
