"""A writer thread for the import loop: disk writes overlap with fetching and parsing.

Saving a batch is mostly time in SQLite (FTS indexing) and in file system calls, both of which
release the GIL; fetching and parsing are Python. Running the two on separate threads keeps both
cores busy. All archive writes of a folder's import go through this one thread, in order, so the
single SQLite connection never sees two transactions at once. The importer applies server
actions only for batches the writer reports committed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from typing import Any

from .archive import Archive
from .model import DocumentPlan, RawMail, SaveResult

Committed = tuple[list[tuple[RawMail, list[DocumentPlan]]], list[SaveResult], int]


class ArchiveWriter:
    """Queue of archive writes run on a background thread. Use as a context manager.

    ``depth`` bounds how many batches wait in memory. If a write fails, later writes are
    skipped and the error is raised in the importer's thread at its next call.
    """

    def __init__(self, archive: Archive, depth: int = 2) -> None:
        self.archive = archive
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._committed: queue.Queue[Committed] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)

    def __enter__(self) -> ArchiveWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        # Batches already handed over are committed even when fetching failed: they are complete.
        self._jobs.put(None)
        self._thread.join()
        if exc[0] is None:
            self._raise()

    def save(self, mails: list[tuple[RawMail, list[DocumentPlan]]], **kwargs: Any) -> None:
        """Hand a batch over to be saved (blocks while ``depth`` batches are waiting)."""
        self._raise()
        self._jobs.put(("save", mails, kwargs))

    def actions_done(self, keys: Iterable[str]) -> None:
        """Forget pending server actions, in order after the saves before it."""
        self._raise()
        self._jobs.put(("done", list(keys), None))

    def committed(self) -> list[Committed]:
        """Batches committed since the last call: (mails, results, failed count)."""
        self._raise()
        out = []
        while True:
            try:
                out.append(self._committed.get_nowait())
            except queue.Empty:
                return out

    def flush(self) -> None:
        """Wait until every write handed over so far is done."""
        self._jobs.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is not None:
                    continue  # after a failed write nothing later may be committed out of order
                kind, payload, kwargs = job
                if kind == "save":
                    results = self.archive.save_batch(payload, **kwargs)
                    self._committed.put((payload, results, len(kwargs.get("failed", ()))))
                else:
                    self.archive.actions_done(payload)
            except BaseException as e:  # noqa: BLE001 - handed to the importer's thread
                self._error = e
            finally:
                self._jobs.task_done()
