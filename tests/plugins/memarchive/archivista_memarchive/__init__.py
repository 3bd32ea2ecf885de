"""An archive outside archivista_mail, registered only through its entry point (see the .dist-info beside
it) as ``memory``: everything in dicts, blobs as files. Chosen with ``archive_backend = memory``, it
carries the importer, the CLI and text extraction unchanged: they speak only the Archive interface.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from archivista_mail.archive import Archive, Failure, PendingAction
from archivista_mail.errors import NotFoundError
from archivista_mail.model import SaveResult, SpooledData

_OPEN: dict[Path, MemoryArchive] = {}


def open_memory_archive(data_dir: Path) -> MemoryArchive:
    """The entry point: one archive per data directory for the life of the process."""
    data_dir = Path(data_dir).resolve()
    if data_dir not in _OPEN:
        (data_dir / "mem").mkdir(parents=True, exist_ok=True)
        _OPEN[data_dir] = MemoryArchive(data_dir / "mem")
    return _OPEN[data_dir]


class MemoryArchive(Archive):
    """Everything in dicts; blobs as files in a directory (extraction workers read paths)."""

    def __init__(self, blob_dir: Path) -> None:
        self.docs: dict[int, dict] = {}
        self.blobs = blob_dir
        self.seen: dict[str, int] = {}
        self.failed: dict[str, Failure] = {}
        self.actions: dict[str, PendingAction] = {}
        self.state: dict[str, str | None] = {}

    def ensure_schema(self) -> None:
        pass

    def get_state(self, key):
        return self.state.get(key)

    def set_state(self, key, value):
        self.state[key] = value

    def known_keys(self, keys):
        return {k for k in keys if k in self.seen}

    def failures(self, account=None, folder=None):
        return [f for f in self.failed.values() if account in (None, f.account) and folder in (None, f.folder)]

    def pending_actions(self, account, folder=None):
        return [a for a in self.actions.values() if a.account == account and folder in (None, a.folder)]

    def actions_done(self, keys):
        for k in keys:
            self.actions.pop(k, None)

    def forget_failures(self, keys):
        for k in keys:
            self.failed.pop(k, None)

    def reset_folder(self, account, folder, state_key, forget_pending):
        self.state.pop(state_key, None)
        if forget_pending:
            for table in (self.failed, self.actions):
                for key in [k for k, v in table.items() if (v.account, v.folder) == (account, folder)]:
                    del table[key]

    def save_batch(self, mails, *, failed=(), action=None, state=None):
        results = []
        for raw, plans in mails:
            data = [p.data.path.read_bytes() if isinstance(p.data, SpooledData) else p.data for p in plans]
            sha = hashlib.sha256(data[0]).hexdigest()
            existing = [n for n, d in self.docs.items() if d["sha256"] == sha and d["parent"] is None]
            if existing:
                results.append(SaveResult(raw.key, existing[0], True))
            else:
                numbers = []
                for plan, blob in zip(plans, data, strict=True):
                    number = len(self.docs) + 1
                    (self.blobs / str(number)).write_bytes(blob)
                    self.docs[number] = {
                        "number": number, "kind": plan.kind, "title": plan.title, "subject": plan.subject,
                        "parent": numbers[plan.parent] if plan.parent is not None else None,
                        "from_addr": plan.from_, "to_addr": plan.to, "cc_addr": plan.cc, "date": plan.date,
                        "filename": plan.filename, "mime_type": plan.mime_type, "inline": plan.inline,
                        "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest(), "account": raw.account,
                        "folder": raw.folder, "message_id": plan.message_id, "text_status": plan.text_status,
                        "text_error": plan.text_error, "defects": list(plan.defects), "archived_at": None,
                        "text": plan.text or ""}
                    numbers.append(number)
                results.append(SaveResult(raw.key, numbers[0], False))
            self.seen[raw.key] = results[-1].number
            self.failed.pop(raw.key, None)
            if action and action != "none":
                self.actions[raw.key] = PendingAction(raw.key, raw.account, raw.folder, raw.uid, action)
        for raw, reason in failed:
            self.failed[raw.key] = Failure(raw.key, raw.account, raw.folder, raw.uid, reason)
        if state:
            self.state[state[0]] = state[1]
        return results

    def get_document(self, number):
        if number not in self.docs:
            raise NotFoundError(f"There is no document number {number} in the archive.")
        return self.docs[number]

    def list_documents(self, *, limit=50, offset=0, kind=None, parent=None):
        rows = [d for d in self.docs.values() if kind in (None, d["kind"]) and parent in (None, d["parent"])]
        return sorted(rows, key=lambda d: -d["number"])[offset:offset + limit]

    def search(self, query, *, limit=50, offset=0):
        return [d for d in self.docs.values() if query.lower() in (d["text"] + (d["subject"] or "")).lower()]

    def get_text(self, number):
        return self.get_document(number)["text"]

    def read_blob(self, number):
        return (self.blobs / str(number)).read_bytes()

    def pending_text(self, limit):
        return [{"number": n, "mime_type": d["mime_type"], "path": str(self.blobs / str(n))}
                for n, d in self.docs.items() if d["text_status"] == "pending"][:limit]

    def save_texts(self, results):
        for number, text, status, _ in results:
            self.docs[number].update(text=text, text_status=status)
