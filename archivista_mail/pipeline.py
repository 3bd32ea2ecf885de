"""The import loop's stages: prepare (parse + plan), a parse worker process, a writer thread.

Fetching happens in the importer; ``Preparer`` parses the previous batch in a worker process
meanwhile, and ``ArchiveWriter`` saves on a thread.

Saving a batch is mostly time in SQLite (FTS indexing) and in file system calls, both of which
release the GIL; fetching and parsing are Python. Running the two on separate threads keeps both
cores busy. All archive writes of a folder's import go through this one thread, in order, so the
single SQLite connection never sees two transactions at once. The importer applies server
actions only for batches the writer reports committed.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing import get_context
from typing import Any

from .archive import Archive
from .extract import extract_text
from .mime import parse_mail, parse_spooled
from .model import DocumentPlan, RawMail, SaveResult
from .plan import plan_documents
from .rules import MailFacts, Outcome, Rule, apply_outcome, evaluate, facts_of

Prepared = tuple[list[tuple[RawMail, list[DocumentPlan]]], list[tuple[RawMail, str]], list[RawMail]]
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


def prepare(raw: RawMail, rules: Sequence[Rule] = ()) -> list[DocumentPlan]:
    """Parse and plan one message, the incoming rules applied ([] when a rule says not to archive it).

    A mail whose parts cannot be planned is kept whole, with the defect. A spooled (large) mail is
    parsed from its file; its large parts are spooled beside it.
    """
    if not rules:
        return _plan(raw)
    return prepare_with_rules(raw, rules, trace=False)[0]


def prepare_with_rules(raw: RawMail, rules: Sequence[Rule], trace: bool = True
                       ) -> tuple[list[DocumentPlan], Outcome, MailFacts]:
    """Parse, plan and apply the rules; also what the rules decided and (``trace``) saw: the simulator shows it."""
    plans = _plan(raw)
    facts = facts_of(raw, plans)
    outcome = evaluate(rules, facts, trace=trace)
    if outcome.errors:
        plans[0].defects.extend(outcome.errors)  # the reason a rule did not apply is kept with the mail
    return apply_outcome(plans, outcome), outcome, facts


def _plan(raw: RawMail) -> list[DocumentPlan]:
    if raw.spool is not None:
        parsed = parse_spooled(raw.spool, raw.spool.path.parent)
    else:
        parsed = parse_mail(raw.raw)
    try:
        return plan_documents(raw, parsed)
    except Exception as e:  # a bug in planning must not lose the mail: archive it raw
        plans = plan_documents(raw, replace(parsed, parts=[]))
        plans[0].defects.append(f"attachments not split out ({type(e).__name__}: {e}); the original is archived")
        return plans


def prepare_all(raws: Iterable[RawMail], errors: list[str], rules: Sequence[Rule] = ()) -> Prepared:
    good, bad, skipped = [], [], []
    for raw in raws:
        try:
            plans = prepare(raw, rules)
            if plans:
                good.append((raw, plans))
            else:
                skipped.append(raw)
        except Exception as e:  # noqa: BLE001 - the message bulkhead
            reason = f"{type(e).__name__}: {e}"
            bad.append((raw, reason))
            errors.append(f"{raw.account}/{raw.folder} message {raw.uid or raw.key}: {reason}")
    return good, bad, skipped


PARALLEL_PARSE_FROM = 200  # below this many new mails a worker process costs more than it saves


class _Parsing:
    """A batch being parsed, in a worker process or (for small runs) already done here."""

    def __init__(self, raws: list[RawMail], rules: Sequence[Rule], future=None) -> None:
        self.raws = raws
        self.rules = rules
        self.future = future

    def result(self, errors: list[str]) -> Prepared:
        """(mails with their plans, failed mails with the reason, mails a rule says not to archive)."""
        if self.future is None:
            return prepare_all(self.raws, errors, self.rules)
        try:
            outcomes = self.future.result()
        except BrokenProcessPool:  # the worker died (memory?): parse here, nothing is lost
            return prepare_all(self.raws, errors, self.rules)
        good, bad, skipped = [], [], []
        for raw, (plans, reason) in zip(self.raws, outcomes, strict=True):
            if plans is None:
                bad.append((raw, reason))
                errors.append(f"{raw.account}/{raw.folder} message {raw.uid or raw.key}: {reason}")
            elif not plans:
                skipped.append(raw)
            else:
                plans[0].data = raw.content  # the worker leaves the original bytes out of the reply
                good.append((raw, plans))
        return good, bad, skipped


class Preparer:
    """Parses batches in one worker process while the next batch is fetched (2 cores: fetch, parse).

    The worker starts once ``parallel_from`` mails have come (a small run parses here: forking
    costs more than it saves); sources list lazily, so how many will come is not known up front.
    """

    def __init__(self, parallel_from: int = PARALLEL_PARSE_FROM, rules: Sequence[Rule] = ()) -> None:
        self.parallel_from = parallel_from
        self.rules = tuple(rules)
        self.submitted = 0
        self.pool: ProcessPoolExecutor | None = None
        self.broken = False

    def __enter__(self) -> Preparer:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def submit(self, raws: list[RawMail]) -> _Parsing:
        """Start parsing a batch; the result is collected with ``.result(summary)``."""
        self.submitted += len(raws)
        if self.pool is None and not self.broken and self.submitted >= self.parallel_from:
            self.pool = ProcessPoolExecutor(1, mp_context=get_context("fork"), initializer=die_with_parent,
                                            initargs=(os.getpid(),))
        if self.pool is None or not raws:
            return _Parsing(raws, self.rules)
        try:
            return _Parsing(raws, self.rules, self.pool.submit(_prepare_in_worker, raws, self.rules))
        except BrokenProcessPool:
            self.pool, self.broken = None, True
            return _Parsing(raws, self.rules)


def _prepare_in_worker(raws: list[RawMail], rules: Sequence[Rule] = ()
                       ) -> list[tuple[list[DocumentPlan] | None, str | None]]:
    out: list[tuple[list[DocumentPlan] | None, str | None]] = []
    for raw in raws:
        try:
            plans = prepare(raw, rules)
            if raw.spool is None and plans:
                plans[0].data = b""  # the parent has the original bytes; don't send them back
            out.append((plans, None))
        except Exception as e:  # noqa: BLE001 - the message bulkhead
            out.append((None, f"{type(e).__name__}: {e}"))
    return out


def die_with_parent(parent: int) -> None:
    """Worker initializer: a killed importer (cron timeout, SIGKILL) takes its workers along (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def extract_document(row: dict) -> tuple[int, str, str, str | None]:
    """Worker: read one blob and extract its text -> (number, text, status, error)."""
    try:
        with open(row["path"], "rb") as f:
            data = f.read()
    except OSError as e:
        return row["number"], "", "failed", f"blob unreadable: {e}"
    result = extract_text(data, row["mime_type"] or "application/octet-stream")
    return row["number"], result.text, result.status, result.error


def extract_pending(archive: Archive, workers: int, chunk: int = 64) -> int:
    """Extract the text of documents still 'pending', in ``workers`` processes; resumable. Returns how many."""
    done = 0
    pool = (ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=die_with_parent,
                                initargs=(os.getpid(),)) if workers > 1 else None)
    try:
        while True:
            rows = archive.pending_text(chunk * workers)
            if not rows:
                return done
            mapper: Callable = pool.map if pool else map  # type: ignore[assignment]
            results = list(mapper(extract_document, rows))
            archive.save_texts(results)
            done += len(results)
    finally:
        if pool:
            pool.shutdown()
