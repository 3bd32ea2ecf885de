"""SQLite for the archive's ledger and the importer's state: a connection fit for one writer beside
readers (WAL), and the time stamps every table uses."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlite_utils


def now_iso() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def open_database(path: Path, synchronous: str = "FULL") -> sqlite_utils.Database:
    """Open a SQLite file for a writer beside readers: WAL, durable commits, waits for locks."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA foreign_keys=ON")
    return db
