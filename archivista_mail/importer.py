"""The import loop: fetch -> parse -> plan -> save (durable) -> server action, with bulkheads.

A configuration error stops the run; an account error is recorded and the next account runs;
a message error is recorded as a failure with its reason (retried next run) and the loop goes on.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from .accounts import Account, AfterAction
from .archive import Archive
from .archive.embedded import now_iso
from .config import Config
from .errors import ActionRefusedError, FolderError, FolderSkippedError, SecretError, SourceError
from .model import Cursor, RawMail, SaveResult
from .pipeline import PARALLEL_PARSE_FROM, ArchiveWriter, Preparer, die_with_parent, extract_document, prepare_all
from .state import State
from .vault import Vault

FILES_BATCH = 50
SPOOL_FROM = 8 << 20  # mails larger than this are fetched (or copied) in pieces to disk, not into memory


RUN_STATUS = {0: "ok", 1: "partial", 3: "unreachable"}


class Progress:
    """Told how much there is to do and how much is done; the CLI draws it, cron gets nothing."""

    def add_total(self, n: int) -> None:
        """More messages were found to import."""

    def advance(self, n: int) -> None:
        """``n`` more messages were handled."""


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
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # recorded and shown on a terminal; no effect on the exit code

    @property
    def exit_code(self) -> int:
        """0 ok, 1 some messages, folders or accounts failed, 3 no account reachable."""
        if self.accounts_failed and not self.accounts_ok:
            return 3
        if self.failed or self.accounts_failed or self.folders_failed:
            return 1
        return 0

    def folder_failed(self, error: Exception) -> None:
        """A folder (or mailbox) could not be read or acted on; the account's other folders still run."""
        self.folders_failed += 1
        self.errors.append(str(error))

    def line(self) -> str:
        """One line for people and logs."""
        return (f"fetched {self.fetched}, archived {self.archived}, duplicates skipped {self.duplicates}, "
                f"failed {self.failed}")


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

    def carry_out(self, items: list) -> bool:
        """Apply the action to ``items``; True when done, so the caller forgets the owed actions."""
        if self.action.kind == "none" or self.refused or not items:
            return False
        try:
            self.apply(self.action, items)
        except ActionRefusedError as e:
            self.refused = True
            self.summary.folder_failed(e)
            return False
        return True


@contextmanager
def import_lock(data_dir: Path) -> Iterator[bool]:
    """Hold the import lock of a data directory; yields False if another run holds it."""
    path = Path(data_dir) / "import.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _count(summary: RunSummary, results: list[SaveResult], failed: int) -> None:
    summary.duplicates += sum(r.duplicate for r in results)
    summary.archived += sum(not r.duplicate for r in results)
    summary.failed += failed


class Importer:
    """Runs imports for one data directory. ``progress`` receives counts for a progress bar."""

    def __init__(self, config: Config, archive: Archive, state: State, progress: Progress | None = None) -> None:
        self.config = config
        self.archive = archive
        self.state = state
        self.vault = Vault(config.key_path)
        self.progress = progress or Progress()

    # -- whole runs ---------------------------------------------------------------------
    def run(self, account: str | None = None, from_path: Path | None = None, actor: str = "cron") -> RunSummary:
        """Import every enabled account (or one, or a path of files); the caller holds the lock."""
        self.actor = actor
        self.archive.ensure_schema()
        self.archive.clean_spool()  # what a killed run left in transit (we hold the import lock)
        summary = RunSummary()
        if from_path is not None:
            self.import_files(Path(from_path), summary)
            summary.accounts_ok += 1
            source = f"files:{from_path}"
        else:
            accounts = [self.state.account(account)] if account else [a for a in self.state.accounts() if a.enabled]
            for acc in accounts:
                self.import_account(acc, summary)
            source = account or "all accounts"
        self.state.save_run({"started": summary.started, "finished": now_iso(), "account": account,
                             "source": source, "status": RUN_STATUS[summary.exit_code],
                             "fetched": summary.fetched, "archived": summary.archived,
                             "duplicates": summary.duplicates, "failed": summary.failed,
                             "exit_code": summary.exit_code, "errors": summary.errors,
                             "warnings": summary.warnings})
        self.state.audit(actor, "import.run", source, summary.line())
        return summary

    def import_account(self, acc: Account, summary: RunSummary) -> None:
        """One account, behind its bulkhead: its errors are recorded and the run goes on."""
        try:
            password = self.vault.secret_of(acc)
            if acc.kind == "imap":
                self.import_imap(acc, password, summary)
            elif acc.kind == "pop3":
                self.import_pop3(acc, password, summary)
            elif acc.kind == "o365":
                self.import_graph(acc, password, summary)
            summary.accounts_ok += 1
        except (SourceError, SecretError) as e:
            summary.accounts_failed += 1
            summary.errors.append(str(e))

    # -- IMAP -------------------------------------------------------------------------------
    def import_imap(self, acc: Account, password: str, summary: RunSummary) -> None:
        """Every folder of an IMAP account: new UIDs above the cursor plus earlier failures."""
        from .sources.imap import ImapSession

        with ImapSession(acc, password, self.config.network_timeout) as session:
            for folder in acc.folders:
                try:
                    self._imap_folder(acc, session, folder, summary)
                except FolderSkippedError as e:
                    summary.warnings.append(str(e))
                except FolderError as e:
                    summary.folder_failed(e)

    def _imap_folder(self, acc: Account, session, folder: str, summary: RunSummary) -> None:
        info = session.open_folder(folder)
        cursor = self.archive.get_cursor(acc.name, folder)
        if cursor is not None and cursor.uidvalidity != info.uidvalidity:
            # RFC 3501 2.3.1.1: old UIDs mean nothing now. Rescan; content hashes catch what we have.
            summary.errors.append(f"Account {acc.name}: folder {folder!r} changed its UIDVALIDITY "
                                  f"({cursor.uidvalidity} -> {info.uidvalidity}); rescanned it, duplicates skipped.")
            cursor = None
        if cursor is None:
            self.archive.reset_cursor(acc.name, folder, info.uidvalidity)
            cursor = Cursor(info.uidvalidity, 0)
        actions = FolderActions(acc.action, session.apply, summary)
        self._replay_owed(acc, folder, actions, lambda p: p.uid)
        retry = [f for f in self.archive.failures(acc.name, folder) if f.uid]
        nothing_new = info.uidnext is not None and info.uidnext <= cursor.last_uid + 1
        if nothing_new and not retry:
            return
        todo = [] if nothing_new else session.list_new(cursor.last_uid, acc.unread_only)
        if retry:
            still_there = session.sizes([f.uid for f in retry])
            gone = {f.uid for f in retry} - {uid for uid, _ in still_there}
            self.archive.forget_failures([f.key for f in retry if f.uid in gone])
            todo = still_there + todo
        keyed = {self._imap_key(acc, folder, info.uidvalidity, uid): (uid, size) for uid, size in todo}
        known = self.archive.known_keys(keyed)
        todo = [v for k, v in keyed.items() if k not in known]
        self.progress.add_total(len(todo))
        # Three stages on two cores: fetch here, parse in a worker process (for big runs), save on
        # the writer thread. A batch's server action waits for the writer's commit of that batch.
        preparer = Preparer(parallel=len(todo) >= PARALLEL_PARSE_FROM)
        with preparer, ArchiveWriter(self.archive) as writer:
            waiting = None  # the batch being parsed while the next one is fetched
            try:
                for batch in _batches(todo, self.config.fetch_batch_size, self.config.fetch_batch_bytes):
                    self._act_on_committed(writer, summary, actions)
                    raws = self._fetch_batch(acc, session, folder, info.uidvalidity, batch)
                    summary.fetched += len(raws)
                    parsing = preparer.submit(raws)
                    if waiting:
                        previous, waiting = waiting, None
                        self._hand_over(writer, previous, summary, acc)
                    waiting = (parsing, Cursor(info.uidvalidity, max(uid for uid, _ in batch)), folder)
            finally:
                # Also when the link broke: what was fetched before is complete, so archive it.
                if waiting:
                    self._hand_over(writer, waiting, summary, acc)
            writer.flush()
            self._act_on_committed(writer, summary, actions)

    def _fetch_batch(self, acc: Account, session, folder: str, uidvalidity: int,
                     batch: list[tuple[int, int]]) -> list[RawMail]:
        """Small mails in one FETCH; mails above SPOOL_FROM each in pieces to a spool file."""
        small = [uid for uid, size in batch if size <= SPOOL_FROM]
        raws = [RawMail(raw, acc.name, folder, self._imap_key(acc, folder, uidvalidity, uid), uid, received)
                for uid, (raw, received) in session.fetch(small).items()] if small else []
        for uid, size in batch:
            if size > SPOOL_FROM:
                spooled = session.fetch_to_spool(uid, self.archive.spool_dir)
                if spooled is not None:
                    raws.append(RawMail(b"", acc.name, folder, self._imap_key(acc, folder, uidvalidity, uid), uid,
                                        spool=spooled))
        return sorted(raws, key=lambda r: r.uid or 0)

    def _hand_over(self, writer: ArchiveWriter, waiting, summary: RunSummary, acc: Account) -> None:
        parsing, cursor, folder = waiting
        good, bad = parsing.result(summary.errors)
        writer.save(good, cursor=(acc.name, folder, cursor), failed=bad, action=acc.after)

    def _act_on_committed(self, writer: ArchiveWriter, summary: RunSummary, actions: FolderActions) -> None:
        """Count batches the writer committed and carry out their server action (never before)."""
        for good, results, failed in writer.committed():
            _count(summary, results, failed)
            if results and actions.carry_out([raw.uid for raw, _ in good]):
                writer.actions_done(r.key for r in results)
            self.progress.advance(len(results) + failed)

    def _replay_owed(self, acc: Account, folder: str, actions: FolderActions, item: Callable) -> None:
        """Actions owed from earlier runs (stopped after the commit, or refused by the server).

        They are carried out with the action configured now, whatever it was when they were
        recorded, so editing an account loses none; with 'none' they are dropped, and audited.
        ``item`` turns a pending action into what the source's apply takes (a UID, a message id).
        """
        owed = self.archive.pending_actions(acc.name, folder)
        if not owed:
            return
        keys = [p.key for p in owed]
        if actions.action.kind == "none":
            self._drop_owed(acc, folder, owed)
        elif actions.carry_out([item(p) for p in owed]):
            self.archive.actions_done(keys)

    def _drop_owed(self, acc: Account, folder: str, owed: list) -> None:
        self.archive.actions_done(p.key for p in owed)
        recorded = ", ".join(sorted({p.action for p in owed}))
        self.state.audit(self.actor, "actions.dropped", f"{acc.name}/{folder}",
                         f"{len(owed)} owed after-archive actions ({recorded}) dropped: the account's "
                         "after-archive action is now 'none'")

    @staticmethod
    def _imap_key(acc: Account, folder: str, uidvalidity: int, uid: int) -> str:
        return f"imap:{acc.name}:{folder}:{uidvalidity}:{uid}"

    # -- POP3 -------------------------------------------------------------------------------
    def import_pop3(self, acc: Account, password: str, summary: RunSummary) -> None:
        """A POP3 maildrop: every UIDL not yet archived; DELE only after the commit, QUIT to apply."""
        from .sources.pop3 import Pop3Session

        delete = acc.after == "delete"
        with Pop3Session(acc, password, self.config.network_timeout) as session:
            numbers = {f"pop3:{acc.name}:{uid}": n for uid, n in session.uidl().items()}
            pending = self.archive.pending_actions(acc.name)
            if pending and not delete:  # the account was changed to keep mail: nothing is owed any more
                self._drop_owed(acc, "INBOX", pending)
                pending = []
            owed = [p.key for p in pending]
            to_delete = [k for k in owed if k in numbers] if delete else []
            session.delete([numbers[k] for k in to_delete])
            known = self.archive.known_keys(numbers)
            todo = sorted((n, k) for k, n in numbers.items() if k not in known)
            sizes = session.sizes() if todo else {}
            self.progress.add_total(len(todo))
            for i in range(0, len(todo), self.config.fetch_batch_size):
                batch = todo[i:i + self.config.fetch_batch_size]
                raws = [self._pop3_message(session, n, k, sizes.get(n, 0), acc) for n, k in batch]
                summary.fetched += len(raws)
                good, bad = prepare_all(raws, summary.errors)
                results = self.archive.save_batch(good, failed=bad, action=acc.after)
                _count(summary, results, len(bad))
                if delete:
                    session.delete([numbers[r.key] for r in results])
                    to_delete += [r.key for r in results]
                self.progress.advance(len(batch))
            session.quit()
        # Only now, after QUIT, are the deletions real; owed actions for vanished UIDLs are done too.
        self.archive.actions_done(set(to_delete) | {k for k in owed if k not in numbers})

    def _pop3_message(self, session, number: int, key: str, size: int, acc: Account) -> RawMail:
        if size > SPOOL_FROM:
            return RawMail(b"", acc.name, "INBOX", key, number, spool=session.retr_to_spool(number, self.archive.spool_dir))
        return RawMail(session.retr(number), acc.name, "INBOX", key, number)

    # -- Microsoft 365 -----------------------------------------------------------------------
    def import_graph(self, acc: Account, secret: str, summary: RunSummary) -> None:
        """Every mailbox and folder of an o365 account, by delta query; see sources/graph.py."""
        from .sources.graph import GraphSession

        with GraphSession(acc, secret, self.config.network_timeout) as session:
            for mailbox in acc.mailboxes:
                for folder in acc.folders:
                    try:
                        self._graph_folder(acc, session, mailbox, folder, summary)
                    except FolderError as e:  # a missing mailbox or folder; the others still run
                        summary.folder_failed(e)

    def _graph_folder(self, acc: Account, session, mailbox: str, folder: str, summary: RunSummary) -> None:
        from .sources.graph import DeltaExpiredError

        label = f"{mailbox}/{folder}"
        state_key = f"graph:{acc.name}:{label}"
        session.folder_info(mailbox, folder)  # a missing mailbox or folder is named here, before anything else

        def key(message_id: str) -> str:
            return f"graph:{acc.name}:{label}:{message_id}"

        actions = FolderActions(acc.action, lambda action, ids: session.apply(mailbox, action, ids), summary)
        self._replay_owed(acc, label, actions, lambda p: p.key.rsplit(":", 1)[1])
        retry = [f.key.rsplit(":", 1)[1] for f in self.archive.failures(acc.name, label)]
        if retry:
            self._graph_save(acc, session, mailbox, label, retry, key, None, summary, actions)
        link = self.archive.get_state(state_key)
        page_size = acc.batch_size
        calm_pages = 0
        while True:
            throttled_before = session.throttled
            try:
                page = session.delta_page(mailbox, folder, link, page_size)
            except DeltaExpiredError:
                # 410: the sync state is gone. Start a new round; content hashes skip what we have.
                summary.errors.append(f"Account {acc.name}: the delta token of {label} expired; the folder was "
                                      "read again, duplicates skipped.")
                self.archive.set_state(state_key, None)
                link = None
                continue
            ids = [m["id"] for m in page.messages
                   if "@removed" not in m and not (acc.unread_only and m.get("isRead"))]
            known = self.archive.known_keys(key(i) for i in ids)
            todo = [i for i in ids if key(i) not in known]
            self.progress.add_total(len(todo))
            self._graph_save(acc, session, mailbox, label, todo, key, (state_key, page.next_link or page.delta_link),
                             summary, actions)
            # The page size ("batch size") halves while Graph throttles and grows back when it stops.
            if session.throttled > throttled_before:
                page_size, calm_pages = max(5, page_size // 2), 0
            else:
                calm_pages += 1
                if calm_pages >= 3 and page_size < acc.batch_size:
                    page_size, calm_pages = min(acc.batch_size, page_size * 2), 0
            if not page.next_link:
                return
            link = page.next_link

    def _graph_save(self, acc: Account, session, mailbox: str, label: str, ids: list[str], key, state,
                    summary: RunSummary, actions: FolderActions) -> None:
        """Fetch the MIME of ``ids``, archive it with the new resume position, then act on the server."""
        mimes = session.fetch_mime(mailbox, ids) if ids else {}
        gone = [i for i in ids if i not in mimes]
        if gone:
            self.archive.forget_failures(key(i) for i in gone)
        raws = [RawMail(mimes[i], acc.name, label, key(i)) for i in ids if i in mimes]
        summary.fetched += len(raws)
        good, bad = prepare_all(raws, summary.errors)
        results = self.archive.save_batch(good, failed=bad, action=acc.after, state=state)
        _count(summary, results, len(bad))
        if results and actions.carry_out([r.key.rsplit(":", 1)[1] for r in results]):
            self.archive.actions_done(r.key for r in results)
        self.progress.advance(len(ids))

    # -- files ------------------------------------------------------------------------------
    def import_files(self, path: Path, summary: RunSummary) -> None:
        """.eml, .mbox and Maildir files below ``path``; the content hash keeps re-runs idempotent."""
        from .sources.files import iter_files

        batch: list[RawMail] = []
        for raw in iter_files(path, self.archive.spool_dir, SPOOL_FROM):
            batch.append(raw)
            if len(batch) >= FILES_BATCH:
                self._save_files(batch, summary)
                batch = []
        if batch:
            self._save_files(batch, summary)

    def _save_files(self, batch: list[RawMail], summary: RunSummary) -> None:
        summary.fetched += len(batch)
        known = self.archive.known_keys(r.key for r in batch)
        summary.duplicates += sum(r.key in known for r in batch)
        fresh = {r.key: r for r in batch if r.key not in known}  # same file twice in one batch: once
        for r in batch:
            if r.spool is not None and fresh.get(r.key) is not r:  # a duplicate's spool copy is not needed
                r.spool.path.unlink(missing_ok=True)
        good, bad = prepare_all(fresh.values(), summary.errors)
        _count(summary, self.archive.save_batch(good, failed=bad), len(bad))
        self.progress.advance(len(batch))

    # -- attachment text ----------------------------------------------------------------------
    def extract_pending(self, workers: int | None = None, chunk: int = 64) -> int:
        """Extract text of documents still 'pending', on all cores; resumable. Returns how many."""
        workers = workers or self.config.workers
        done = 0
        pool = (ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=die_with_parent, initargs=(os.getpid(),))
                if workers > 1 else None)
        try:
            while True:
                rows = self.archive.pending_text(chunk * workers)
                if not rows:
                    return done
                mapper: Callable = pool.map if pool else map  # type: ignore[assignment]
                results = list(mapper(extract_document, rows))
                self.archive.save_texts(results)
                done += len(results)
        finally:
            if pool:
                pool.shutdown()


def _batches(items: list[tuple[int, int]], count: int, max_bytes: int) -> Iterator[list[tuple[int, int]]]:
    """Cut (uid, size) items into batches of at most ``count`` items and ``max_bytes`` (one item at least)."""
    batch: list[tuple[int, int]] = []
    size = 0
    for item in items:
        if batch and (len(batch) >= count or size + item[1] > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item[1]
    if batch:
        yield batch

