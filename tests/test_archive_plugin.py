"""The archive is a plugin boundary: a second implementation of ``Archive`` (here, in memory)
carries the whole importer -- IMAP with server actions, files, text extraction -- unchanged."""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from conftest import PASSWORD
from mailfactory import make_mail

from archivista_mail.accounts import Account
from archivista_mail.archive import ENTRY_POINT_GROUP, Archive
from archivista_mail.archive.embedded import EmbeddedArchive
from archivista_mail.config import Config
from archivista_mail.importer import Importer
from archivista_mail.plan import mail_text
from archivista_mail.state import State
from archivista_mail.vault import Vault

SAMPLES = Path(__file__).parent.parent / "samples"
MEMARCHIVE = Path(__file__).parent / "plugins" / "memarchive"
sys.path.insert(0, str(MEMARCHIVE))  # the package and its entry point ("memory" in archivista_mail.archives)

from archivista_memarchive import MemoryArchive  # noqa: E402


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


def test_cli_commands_speak_only_the_interface(tmp_path):
    """The CLI on an archive that is only the Archive interface (the "memory" plugin): every document command
    works, and nothing of the embedded archive is created."""
    from archivista_memarchive import open_memory_archive
    from conftest import invoke_cli

    data = tmp_path / "data"
    config = tmp_path / "memory.conf"
    config.write_text("[archivista-mail]\narchive_backend = memory\n")

    def cli(*args):
        result = invoke_cli("--data-dir", str(data), "--config", str(config), *args)
        assert result.exit_code == 0, (args, result.output)
        return result.output

    cli("init")
    cli("import", "--from", str(SAMPLES), "--no-extract")
    assert cli("extract") == "Extracted text of 3 documents.\n"
    memory = open_memory_archive(data)
    assert len(memory.docs) == 9 and not (data / "archive.db").exists() and not (data / "blobs").exists()
    listed = json.loads(cli("docs", "list", "--json"))
    assert [d["number"] for d in listed] == sorted(memory.docs, reverse=True)
    invoice = next(d for d in listed if d["subject"] == "Rechnung 2024-117 für Beratung")
    assert invoice["number"] in [d["number"] for d in json.loads(cli("docs", "search", "Beratung", "--json"))]
    shown = json.loads(cli("docs", "show", str(invoice["number"]), "--json", "--text"))
    assert "Freundliche Grüsse" in shown["text"] and shown["children"]
    (tmp_path / "out.eml").unlink(missing_ok=True)
    cli("docs", "get", str(invoice["number"]), "-o", str(tmp_path / "out.eml"))
    assert (tmp_path / "out.eml").read_bytes() == (SAMPLES / "01-invoice-with-pdf.eml").read_bytes()
    cli("settings", "set", "link_base_url", "archiv.example.ch")
    assert cli("link", str(invoice["number"])).splitlines()[1] == f"https://archiv.example.ch/doc/{invoice['number']}"
    runs = json.loads(cli("runs", "--json"))["runs"]
    assert (runs[0]["archived"], runs[0]["failed"]) == (4, 0)


def test_handles_opened_again_for_mailboxes_side_by_side_take_turns_at_writing(tmp_path):
    """Four writers on four connections, as four mailboxes imported side by side: none may starve in SQLite's busy
    wait (here cut to 50 ms, so that starving would fail fast) while the others commit."""
    import threading

    first = EmbeddedArchive(tmp_path)
    first.ensure_schema()
    handles = [first.open_again() for _ in range(4)]
    errors: list[Exception] = []

    def write(n: int, archive: EmbeddedArchive) -> None:
        archive.db.conn.execute("PRAGMA busy_timeout=50")
        try:
            for i in range(150):
                archive.set_state(f"k{n}-{i}", str(i))
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n, h)) for n, h in enumerate(handles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert first.get_state("k3-149") == "149"
    assert all(h.write_lock is first.write_lock for h in handles)
    for handle in [first, *handles]:
        handle.close()
