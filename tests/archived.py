"""What the archive holds, as the tests of the mail sources ask it: through the CLI, or read-only from the database
while an importer runs (to kill it at a chosen point)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path


def docs(run, *args) -> list[dict]:
    result = run("docs", "list", "--limit", "100000", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def last_run(run) -> dict:
    return json.loads(run("runs", "--json").output)["runs"][0]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archived_hashes(run) -> list[str]:
    """The sha256 of every archived mail (a mail archived twice shows twice)."""
    return sorted(d["sha256"] for d in docs(run, "--kind", "mail"))


def archived_count(data_dir: Path) -> int:
    """How many mails are archived, read while an importer may be writing (0 before the schema exists)."""
    if not (data_dir / "archive.db").exists():
        return 0
    with closing(sqlite3.connect(f"file:{data_dir}/archive.db?mode=ro", uri=True)) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name='documents'").fetchone():
            return 0
        return db.execute("SELECT count(*) FROM documents WHERE parent IS NULL").fetchone()[0]


def kept(data_dir: Path) -> set[str]:
    """The sha256 of the archived mails."""
    with closing(sqlite3.connect(data_dir / "archive.db")) as db:
        return {r[0] for r in db.execute("SELECT sha256 FROM documents WHERE parent IS NULL")}
