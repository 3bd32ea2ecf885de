"""The archive is a plugin boundary: a second implementation of ``Archive`` (here, in memory)
carries the whole importer -- IMAP with server actions, files, text extraction -- unchanged."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import entry_points
from pathlib import Path

from conftest import PASSWORD
from mailfactory import make_mail

from archivista_mail.accounts import Account
from archivista_mail.archive import ENTRY_POINT_GROUP, Archive, Failure, PendingAction
from archivista_mail.archive.embedded import EmbeddedArchive
from archivista_mail.config import Config
from archivista_mail.errors import NotFoundError
from archivista_mail.importer import Importer
from archivista_mail.model import SaveResult, SpooledData
from archivista_mail.plan import mail_text
from archivista_mail.state import State
from archivista_mail.vault import Vault

SAMPLES = Path(__file__).parent.parent / "samples"


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
                        "filename": plan.filename, "mime_type": plan.mime_type, "sha256": hashlib.sha256(blob).hexdigest(),
                        "text": plan.text or "", "text_status": plan.text_status}
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


def test_the_embedded_archive_is_registered_under_the_entry_point_group():
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert found["embedded"] == "archivista_mail.archive.embedded:EmbeddedArchive"
    assert issubclass(EmbeddedArchive, Archive)


def test_another_archive_implementation_runs_the_whole_importer(mailbox, tmp_path):
    config = Config(data_dir=tmp_path)
    state = State(tmp_path)
    state.ensure_schema()
    (tmp_path / "mem").mkdir()
    archive = MemoryArchive(tmp_path / "mem")
    mailbox.append([make_mail(600, attachment="pdf", secret_word="axolotl"), make_mail(601)])
    account = Vault(config.key_path).seal(
        Account(name="mem", kind="imap", settings={
            "host": "127.0.0.1", "port": mailbox.server.ports["imaps"], "security": "ssl", "user": mailbox.user,
            "ca_file": str(mailbox.server.cert), "folders": ["INBOX"], "after": "delete"}), PASSWORD)
    state.save_account(account, "test", new=True)
    importer = Importer(config, archive, state)

    summary = importer.run()
    assert (summary.archived, summary.exit_code) == (2, 0), summary.errors
    assert importer.extract_pending(workers=2) == 1
    assert mailbox.messages() == {} and archive.actions == {}  # actions ran after the commit, then were forgotten
    pdf = [d for d in archive.docs.values() if d["mime_type"] == "application/pdf"][0]
    assert pdf["text_status"] == "done" and "axolotl" in pdf["text"]
    assert {d["kind"] for d in archive.search("axolotl")} == {"mail", "attachment"}

    files = importer.run(from_path=SAMPLES)
    assert files.archived == 4
    invoice = [d for d in archive.docs.values() if d["subject"] == "Rechnung 2024-117 für Beratung"][0]
    assert archive.read_blob(invoice["number"]) == (SAMPLES / "01-invoice-with-pdf.eml").read_bytes()
    assert "Rechnung für die Beratung" in mail_text_of(archive, invoice["number"])


def mail_text_of(archive: MemoryArchive, number: int) -> str:
    from archivista_mail.mime import parse_mail

    return mail_text(parse_mail(archive.read_blob(number)))


def test_cli_commands_speak_only_the_interface(run, data_dir):
    """docs show --text works through get_text on the embedded archive (mail text re-parsed)."""
    assert run("import", "--from", str(SAMPLES)).exit_code == 0
    shown = json.loads(run("docs", "show", "1", "--json", "--text").output)
    assert "Freundliche Grüsse" in shown["text"]
