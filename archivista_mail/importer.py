"""The one import loop: every source's batches go fetch -> parse and plan (a worker process) -> durable save
(a writer thread) -> after-archive action, with bulkheads.

A configuration error stops the run; an account's error is recorded and the next account runs; a
folder's error (missing, refused, its after-archive action refused) is recorded and the account's
next folder runs; a message's error is recorded as a failure with its reason (retried next run).
Nothing here knows a protocol: sources (sources/) declare and do the protocol part.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path

from .accounts import Account, AfterAction
from .archive import Archive
from .config import Config
from .conversation import token_in
from .db import now_iso
from .errors import FolderError, FolderSkippedError, SecretError, SourceError
from .ledger import FolderActions, FolderLedger
from .pipeline import ArchiveWriter, Preparer, extract_pending
from .rules import Rule, load_rules
from .runs import RUN_STATUS, Progress, RunSummary, SharedProgress
from .sender import token_word
from .sources.base import Batch, Folder, Item, Source
from .state import State
from .vault import Vault


class Importer:
    """Runs imports for one data directory. ``progress`` receives counts for a progress bar."""

    def __init__(self, config: Config, archive: Archive, state: State, progress: Progress | None = None) -> None:
        self.config = config
        self.archive = archive
        self.state = state
        self.vault = Vault(config.key_path)
        self.progress = progress or Progress()
        self.actor = "cron"
        self.rules: list[Rule] = []
        self._state_lock = threading.Lock()
        self.folders: set[str] | None = None  # only these folders (the watcher's); None: every folder
        self.should_stop: Callable[[], bool] = lambda: False  # checked before each batch (SIGTERM of the watcher)

    # -- whole runs ---------------------------------------------------------------------
    def run(self, account: str | None = None, from_path: Path | None = None, actor: str = "cron",
            record_idle: bool = True) -> RunSummary:
        """Import every enabled account (or one, or a path of files); the caller holds the lock. Without
        ``record_idle`` a run that found nothing to do leaves no run record or audit entry (the watcher's)."""
        from .sources.files import FilesSource

        self.actor = actor
        self.rules = load_rules(self.state.rules())
        self.token_word = token_word(self.state)
        self.archive.ensure_schema()
        self.archive.clean_spool()  # what a killed run left in transit (we hold the import lock)
        summary = RunSummary()
        if from_path is not None:
            source_name = f"files:{from_path}"
            self.run_source(FilesSource(Path(from_path), self.config, self.archive.spool_dir), summary)
        else:
            accounts = [self.state.account(account)] if account else [a for a in self.state.accounts() if a.enabled]
            accounts = [a for a in accounts if not a.source.outgoing]  # SMTP accounts send; nothing to import
            for acc in accounts:
                self.import_account(acc, summary)
            source_name = account or "all accounts"
        self.send_owed(summary)
        if not record_idle and not (summary.fetched or summary.errors or summary.sent or summary.warnings):
            return summary
        self.state.save_run({"started": summary.started, "finished": now_iso(), "account": account,
                             "source": source_name, "status": RUN_STATUS[summary.exit_code],
                             "fetched": summary.fetched, "archived": summary.archived,
                             "duplicates": summary.duplicates, "failed": summary.failed,
                             "exit_code": summary.exit_code, "errors": summary.errors,
                             "skipped_by_rules": summary.skipped_by_rules,
                             "warnings": summary.warnings})
        self.state.audit(actor, "import.run", source_name, summary.line())
        return summary

    def send_owed(self, summary: RunSummary) -> None:
        """After the commits: automatic replies rules owe, and mails waiting in the outbox for a retry."""
        if type(self.archive).outbox is Archive.outbox or self.should_stop():
            return  # an archive plugin that keeps no outgoing mail; a watcher asked to stop
        from .sender import Sender

        try:
            results = Sender(self.config, self.state, self.archive, self.actor).retry(due_only=True)
        except Exception as e:  # noqa: BLE001 - sending must never cost the import its record
            summary.sends_failed += 1
            summary.errors.append(f"The outbox could not be processed: {type(e).__name__}: {e}")
            return
        for result in results:
            if result.status == "sent":
                summary.sent += 1
            elif result.status in ("failed", "unconfirmed"):
                summary.sends_failed += 1
                summary.errors.append(f"Outgoing mail <{result.message_id}> (record {result.record}): "
                                      f"{result.status}: {result.reply}")

    def import_account(self, acc: Account, summary: RunSummary) -> None:
        """One account, behind its bulkhead: its errors are recorded and the run goes on."""
        try:
            source_class = acc.source
            secret = self.vault.secret_of(acc) if source_class.secret_setting() else ""
            self.run_source(source_class(acc, secret, self.config), summary)
        except (SourceError, SecretError) as e:
            summary.accounts_failed += 1
            summary.errors.append(str(e))

    def run_source(self, source: Source, summary: RunSummary) -> None:
        """Every folder of a source, each behind its own bulkhead. Raises SourceError if it cannot connect.

        A source that allows it (``parallel_groups``) has its mailboxes imported side by side, each on a
        thread with its own archive handle, writer and parse worker: the same loop, several times.
        """
        done_at_close: list[str] = []  # actions that take effect when the session ends well (POP3 QUIT)
        with source:
            groups: dict[object, list[Folder]] = {}
            for folder in self._wanted(source):
                groups.setdefault(folder.group if folder.group is not None else object(), []).append(folder)
            workers = min(source.parallel_groups, len(groups))
            side_by_side = type(self.archive).open_again is not Archive.open_again  # the backend has more handles
            if workers > 1 and side_by_side and not source.actions_at_close:
                self._run_groups(source, list(groups.values()), workers, summary)
            else:
                for folder in self._wanted(source):
                    self._folder(source, folder, summary, done_at_close, self.archive, self.progress)
        if done_at_close:
            self.archive.actions_done(done_at_close)
        summary.accounts_ok += 1

    def _wanted(self, source: Source) -> list[Folder]:
        return [f for f in source.folders() if self.folders is None or f.label in self.folders]

    def _folder(self, source: Source, folder: Folder, summary: RunSummary, done_at_close: list[str],
                archive: Archive, progress: Progress) -> None:
        """One folder behind its bulkhead: its errors are recorded and the account's next folder runs."""
        try:
            self.import_folder(source, folder, summary, done_at_close, archive, progress)
        except FolderSkippedError as e:
            summary.warnings.append(str(e))
        except FolderError as e:
            summary.folder_failed(e)

    def _run_groups(self, source: Source, groups: list[list[Folder]], workers: int, summary: RunSummary) -> None:
        """Groups of folders (mailboxes) side by side; an account-wide error is raised once all have stopped."""
        progress = SharedProgress(self.progress)
        parts = [RunSummary() for _ in groups]

        def run(group: list[Folder], part: RunSummary) -> None:
            archive = self.archive.open_again()
            assert archive is not None
            try:
                for folder in group:
                    self._folder(source, folder, part, [], archive, progress)
            finally:
                archive.close()

        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="mailbox") as pool:
                futures = [pool.submit(run, group, part) for group, part in zip(groups, parts)]
                for future in futures:
                    future.exception()  # wait for every mailbox before raising any error
                for future in futures:
                    future.result()
        finally:
            for part in parts:
                summary.merge(part)

    # -- one folder ----------------------------------------------------------------------------------
    def import_folder(self, source: Source, folder: Folder, summary: RunSummary, done_at_close: list[str],
                      archive: Archive | None = None, progress: Progress | None = None) -> None:
        """Owed actions, earlier failures, then what is new: fetched here, parsed in a worker process,
        saved on the writer thread, acted on after each batch's commit."""
        archive = archive or self.archive
        progress = progress or self.progress
        acc = source.account
        ledger = FolderLedger(archive, acc.name, folder, summary, progress)
        source.open(folder, ledger)
        actions = FolderActions(acc.action, lambda action, refs: source.apply(folder, action, refs), summary)
        forget = done_at_close.extend if source.actions_at_close else None
        self._replay_owed(source, folder, actions, forget, archive)
        retry = [Item(f.key, source.ref_of(folder, f.key)) for f in archive.failures(acc.name, folder.label)]
        batches = chain([Batch(retry)] if retry else [], source.batches(folder, ledger))
        with Preparer(rules=self.rules) as preparer, ArchiveWriter(archive) as writer:
            done = forget or writer.actions_done
            waiting = None  # the batch being parsed while the next one is fetched
            try:
                for number, batch in enumerate(batches):
                    if self.should_stop():
                        break  # what was fetched is committed below, with its actions
                    self._act_on_committed(writer, summary, actions, source, folder, done, progress)
                    raws = self._fetch(source, folder, batch, ledger, summary, retried=bool(retry) and number == 0,
                                       archive=archive, progress=progress)
                    parsing = preparer.submit(raws)
                    if waiting is not None:
                        previous, waiting = waiting, None
                        self._hand_over(writer, acc, previous, summary, progress)
                    waiting = (parsing, batch.cursor, folder)
            finally:
                # Also when the link broke: what was fetched before is complete, so archive it.
                if waiting is not None:
                    self._hand_over(writer, acc, waiting, summary, progress)
            writer.flush()
            self._act_on_committed(writer, summary, actions, source, folder, done, progress)

    def _fetch(self, source: Source, folder: Folder, batch: Batch, ledger: FolderLedger, summary: RunSummary,
               retried: bool, archive: Archive, progress: Progress) -> list:
        """The batch's messages not archived yet, as original bytes (known ones count as duplicates skipped)."""
        keys = list(dict.fromkeys(i.key for i in batch.items))  # the same file twice in one batch: once
        known = ledger.known(keys) if keys and not retried else set()
        fresh = list({i.key: i for i in batch.items if i.key not in known}.values())
        for item in batch.items:  # a skipped file's copy in the spool is not needed
            if item.raw is not None and item.raw.spool is not None and (item.key in known or item not in fresh):
                item.raw.spool.path.unlink(missing_ok=True)
        summary.duplicates += len(known)  # archived before: skipped, and not even fetched (files were read)
        summary.fetched += sum(1 for i in batch.items if i.key in known and i.raw is not None)
        if retried or not ledger.expected:  # the source did not say up front how many were coming
            progress.add_total(len(batch.items))
        progress.advance(len(batch.items) - len(fresh))
        raws = source.fetch(folder, fresh, archive.spool_dir) if fresh else []
        if retried:  # failures of messages gone from the server meanwhile: nothing left to archive
            got = {r.key for r in raws}
            archive.forget_failures(i.key for i in fresh if i.key not in got)
        summary.fetched += len(raws)
        return raws

    def _hand_over(self, writer: ArchiveWriter, acc: Account, waiting, summary: RunSummary,
                   progress: Progress) -> None:
        parsing, cursor, folder = waiting
        good, bad, skipped = parsing.result(summary.errors)
        if skipped:  # a rule said not to archive them: no document, no after-archive action, left as they are
            summary.skipped_by_rules += len(skipped)
            progress.advance(len(skipped))
        state = (folder.state_key, cursor) if folder.state_key and cursor is not None else None
        for _, plans in good:  # a subject token ("[Akte 1234]") may link a reply to its record (conversation.py)
            plans[0].token = token_in(plans[0].subject, self.token_word)
        writer.save(good, failed=bad, action=acc.after, state=state)

    def _act_on_committed(self, writer: ArchiveWriter, summary: RunSummary, actions: FolderActions, source: Source,
                          folder: Folder, done: Callable, progress: Progress) -> None:
        """Count batches the writer committed and carry out their server action (never before)."""
        for good, results, failed in writer.committed():
            summary.count(results, failed)
            by_action: dict[str | None, list[str]] = {}  # None: the account's action; else a rule's
            for (_, plans), result in zip(good, results, strict=True):
                by_action.setdefault(plans[0].after, []).append(result.key)
            for override, keys in by_action.items():
                action = AfterAction.parse(override) if override else None
                if action is not None and action.kind == "none":
                    continue  # a rule said to leave these as they are: nothing was recorded
                if actions.carry_out([source.ref_of(folder, k) for k in keys], action):
                    done(keys)
            progress.advance(len(results) + failed)

    def _replay_owed(self, source: Source, folder: Folder, actions: FolderActions, done_at_close,
                     archive: Archive) -> None:
        """Actions owed from earlier runs (stopped after the commit, or refused by the server).

        They are carried out with the action configured now, whatever it was when they were
        recorded, so editing an account loses none; with 'none' they are dropped, and audited.
        """
        acc = source.account
        owed = archive.pending_actions(acc.name, folder.label)
        by_rule: dict[str, list[str]] = {}  # rules' actions, recorded as rule:ACTION, are kept as they were
        for p in owed:
            if p.action.startswith("rule:"):
                by_rule.setdefault(p.action[5:], []).append(p.key)
        for recorded, rule_keys in by_rule.items():
            if actions.carry_out([source.ref_of(folder, k) for k in rule_keys], AfterAction.parse(recorded)):
                (done_at_close or archive.actions_done)(rule_keys)
        owed = [p for p in owed if not p.action.startswith("rule:")]
        if not owed:
            return
        keys = [p.key for p in owed]
        if actions.action.kind == "none":
            archive.actions_done(keys)
            recorded = ", ".join(sorted({p.action for p in owed}))
            with self._state_lock:  # mailboxes side by side share the state database's connection
                self.state.audit(self.actor, "actions.dropped", f"{acc.name}/{folder.label}",
                                 f"{len(owed)} owed after-archive actions ({recorded}) dropped: the account's "
                                 "after-archive action is now 'none'")
        elif actions.carry_out([source.ref_of(folder, k) for k in keys]):
            (done_at_close or archive.actions_done)(keys)

    def extract_pending(self, workers: int | None = None) -> int:
        """Extract the text of documents still waiting for it, on all cores; resumable. Returns how many."""
        return extract_pending(self.archive, workers or self.config.workers)
