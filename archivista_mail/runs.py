"""What an import run is: its summary, its progress display, and the lock that keeps runs apart."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .db import now_iso
from .model import SaveResult

RUN_STATUS = {0: "ok", 1: "partial", 3: "unreachable"}


class Progress:
    """Told how much there is to do and how much is done; the CLI draws it, cron gets nothing."""

    def add_total(self, n: int) -> None:
        """More messages were found to import."""

    def advance(self, n: int) -> None:
        """``n`` more messages were handled."""


class SharedProgress(Progress):
    """A progress display told from several threads (mailboxes imported side by side)."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self.lock = threading.Lock()

    def add_total(self, n: int) -> None:
        with self.lock:
            self.inner.add_total(n)

    def advance(self, n: int) -> None:
        with self.lock:
            self.inner.advance(n)


@dataclass
class RunSummary:
    """What one import run did, saved in the database and printed by the CLI."""

    started: str = field(default_factory=now_iso)
    fetched: int = 0
    archived: int = 0
    duplicates: int = 0
    failed: int = 0
    accounts_ok: int = 0
    accounts_failed: int = 0
    folders_failed: int = 0
    skipped_by_rules: int = 0  # mails a rule said not to archive (left on the server as they are)
    sent: int = 0  # mails from the outbox the server accepted (automatic replies, retries)
    sends_failed: int = 0  # outgoing mails refused for good, or handed over without an answer
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # recorded and shown on a terminal; no effect on the exit code

    @property
    def exit_code(self) -> int:
        """0 ok, 1 some messages, folders or accounts failed, 3 no account reachable."""
        if self.accounts_failed and not self.accounts_ok:
            return 3
        if self.failed or self.accounts_failed or self.folders_failed or self.sends_failed:
            return 1
        return 0

    def folder_failed(self, error: Exception) -> None:
        """A folder (or mailbox) could not be read or acted on; the account's other folders still run."""
        self.folders_failed += 1
        self.errors.append(str(error))

    def count(self, results: list[SaveResult], failed: int) -> None:
        """A committed batch: archived, duplicates (same content archived before) and failures."""
        self.duplicates += sum(r.duplicate for r in results)
        self.archived += sum(not r.duplicate for r in results)
        self.failed += failed

    def merge(self, other: RunSummary) -> None:
        """Add the counts, errors and warnings of a part of this run (a mailbox imported on its own thread)."""
        for name in ("fetched", "archived", "duplicates", "failed", "folders_failed", "skipped_by_rules"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)

    def line(self) -> str:
        """One line for people and logs."""
        return (f"fetched {self.fetched}, archived {self.archived}, duplicates skipped {self.duplicates}, "
                f"failed {self.failed}" + (f", skipped by rules {self.skipped_by_rules}" if self.skipped_by_rules
                                           else "") + (f", sent {self.sent}" if self.sent else ""))


@contextmanager
def import_lock(data_dir: Path, name: str = "import.lock", wait: float = 0.0) -> Iterator[bool]:
    """Hold the import lock (or another, ``name``) of a data directory, waiting up to ``wait`` seconds;
    yields False if another process holds it."""
    path = Path(data_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)  # closing releases the lock
