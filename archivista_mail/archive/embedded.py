"""The embedded default archive: SQLite (sqlite-utils, WAL) plus a content-addressed blob store."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..conversation import addresses, choose_record
from ..db import now_iso, open_database
from ..errors import ArchiveError, NotFoundError
from ..model import Content, DocumentPlan, RawMail, SaveResult, SpooledData
from .base import DOCUMENT_FIELDS, Archive, Failure, PendingAction
from .blobs import BlobStore, sha256_hex

SCHEMA_VERSION = 5
MAX_INTEGER = 2**63 - 1  # SQLite's INTEGER range: no number or offset beyond it names a row

DOCUMENT_COLUMNS = {
    "number": int, "kind": str, "parent": int, "title": str, "account": str, "folder": str,
    "message_id": str, "from_addr": str, "to_addr": str, "cc_addr": str, "date": str,
    "subject": str, "filename": str, "mime_type": str, "inline": int, "size": int,
    "sha256": str, "text": str, "text_status": str, "text_error": str, "defects": str,
    "source_key": str, "archived_at": str, "hidden": int, "direction": str, "record": int,
}
FTS_COLUMNS = ["title", "subject", "from_addr", "to_addr", "cc_addr", "filename", "text"]
PUBLIC_COLUMNS = list(DOCUMENT_FIELDS)


_DOC_COLUMNS_SQL = ", ".join(
    # AUTOINCREMENT: a document number is never reused, even after a delete.
    f"[{c}] {'INTEGER PRIMARY KEY AUTOINCREMENT' if c == 'number' else {int: 'INTEGER', str: 'TEXT'}[t]}"
    for c, t in DOCUMENT_COLUMNS.items())
_FTS_COLS = ", ".join(f"[{c}]" for c in FTS_COLUMNS)
_FTS_INSERT = (f"INSERT INTO documents_fts (rowid, {_FTS_COLS}) VALUES (?, {', '.join('?' * len(FTS_COLUMNS))})")

# Plain SQL run in one transaction (sqlite-utils' enable_fts commits half-way through).
# The full-text index is contentless: a mail's body text is not stored a second time in the
# database (it is in the blob; re-parsing it takes about 0.5 ms), which halves the database and
# its write volume. Each document enters the index exactly once -- a mail when it is saved, an
# attachment when its text is extracted -- so a contentless table (no updates) is enough.
SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS documents ({_DOC_COLUMNS_SQL})",
    "CREATE UNIQUE INDEX IF NOT EXISTS documents_mail_sha256 ON documents(sha256) "
    "WHERE kind = 'mail' AND parent IS NULL",
    "CREATE INDEX IF NOT EXISTS documents_parent ON documents(parent)",
    "CREATE INDEX IF NOT EXISTS documents_text_status ON documents(text_status)",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS documents_fts USING fts5({_FTS_COLS}, content='', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE TABLE IF NOT EXISTS seen ([key] TEXT PRIMARY KEY, number INTEGER, seen_at TEXT)",
    "CREATE TABLE IF NOT EXISTS cursors (account TEXT, folder TEXT, uidvalidity INTEGER, last_uid INTEGER, "
    "updated_at TEXT, PRIMARY KEY (account, folder))",
    "CREATE TABLE IF NOT EXISTS failures ([key] TEXT PRIMARY KEY, account TEXT, folder TEXT, uid INTEGER, "
    "reason TEXT, attempts INTEGER, first_failed TEXT, last_failed TEXT)",
    "CREATE INDEX IF NOT EXISTS failures_account_folder ON failures(account, folder)",
    "CREATE TABLE IF NOT EXISTS actions ([key] TEXT PRIMARY KEY, account TEXT, folder TEXT, uid INTEGER, "
    "action TEXT, created TEXT)",
    "CREATE INDEX IF NOT EXISTS actions_account_folder ON actions(account, folder)",
    "CREATE TABLE IF NOT EXISTS source_state ([key] TEXT PRIMARY KEY, value TEXT, updated_at TEXT)",
    # Metadata fields and tags (rules set them; issue "incoming rules"); a document has each field once.
    "CREATE TABLE IF NOT EXISTS fields (number INTEGER, name TEXT, value TEXT, PRIMARY KEY (number, name))",
    "CREATE INDEX IF NOT EXISTS fields_name_value ON fields(name, value)",
    "CREATE TABLE IF NOT EXISTS tags (number INTEGER, tag TEXT, PRIMARY KEY (number, tag))",
    # Conversations (issue "sending from the archive"): replies find their record by Message-ID.
    "CREATE INDEX IF NOT EXISTS documents_message_id ON documents(message_id) WHERE parent IS NULL",
    "CREATE INDEX IF NOT EXISTS documents_record ON documents(record)",
    # Mails sent from the archive, and automatic replies owed by rules: one row each, from the reservation
    # of its Message-ID (before the server sees it) to the server's final answer.
    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT UNIQUE, "
    "number INTEGER, record INTEGER, account TEXT, sender TEXT, recipients TEXT, status TEXT, reply TEXT, "
    "attempts INTEGER DEFAULT 0, actor TEXT, rule TEXT, template TEXT, lang TEXT, answers INTEGER, "
    "answered_from TEXT, request TEXT UNIQUE, created TEXT, updated TEXT, next_attempt TEXT, day TEXT)",
    "CREATE INDEX IF NOT EXISTS outbox_status ON outbox(status)",
    "CREATE UNIQUE INDEX IF NOT EXISTS outbox_rule_once_a_day ON outbox(rule, answered_from, day) "
    "WHERE rule IS NOT NULL",
]


class EmbeddedArchive(Archive):
    """Documents and the import ledger in ``archive.db``; blobs under ``blobs/``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(self.data_dir / "archive.db")  # FULL: durable before any server action
        self.write_lock = threading.RLock()
        self.blobs = BlobStore(self.data_dir / "blobs")

    def close(self) -> None:
        """Close the database connection."""
        self.db.conn.close()

    def open_again(self) -> EmbeddedArchive:
        again = EmbeddedArchive(self.data_dir)
        again.write_lock = self.write_lock  # our own threads take turns instead of starving in SQLite's busy wait
        return again

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction (BEGIN IMMEDIATE), one at a time among the handles of this process; other
        processes (a second import, WebAdmin) wait in SQLite's busy handler."""
        with self.write_lock, self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            yield

    @property
    def spool_dir(self) -> Path:
        return self.blobs.tmp  # same file system as the blobs: spooled files are renamed into place

    def clean_spool(self) -> int:
        return self.blobs.clean_tmp()

    # -- schema -------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create or migrate the tables in one transaction, so a kill mid-way leaves all or nothing."""
        conn = self.db.conn
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self._writing():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:  # else another process won
                columns = {r[1] for r in conn.execute("PRAGMA table_info(documents)")}
                if columns and "hidden" not in columns:  # version 3 and before: no hidden mails yet
                    conn.execute("ALTER TABLE documents ADD COLUMN hidden INTEGER")
                for column, kind in (("direction", "TEXT"), ("record", "INTEGER")):  # version 4 and before
                    if columns and column not in columns:
                        conn.execute(f"ALTER TABLE documents ADD COLUMN {column} {kind}")
                for statement in SCHEMA:
                    conn.execute(statement)
                if 0 < version < 3:
                    # IMAP cursors became source state ("UIDVALIDITY:last UID") when every source got the
                    # same loop (issue 10); the old table stays, unused.
                    conn.execute("INSERT OR IGNORE INTO source_state (key, value, updated_at) SELECT "
                                 "'imap:' || account || ':' || folder, uidvalidity || ':' || last_uid, updated_at "
                                 "FROM cursors")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- ledger -------------------------------------------------------------------------
    def known_keys(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(f"SELECT key FROM seen WHERE key IN ({marks})", chunk))
        return found

    def get_state(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM source_state WHERE key=?", [key]).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str | None) -> None:
        with self._writing():
            _put_state(self.db.conn, key, value)

    def failures(self, account: str | None = None, folder: str | None = None) -> list[Failure]:
        sql = "SELECT key, account, folder, uid, reason, attempts FROM failures WHERE 1=1"
        args: list[Any] = []
        if account is not None:
            sql += " AND account=?"
            args.append(account)
        if folder is not None:
            sql += " AND folder=?"
            args.append(folder)
        return [Failure(*row) for row in self.db.execute(sql + " ORDER BY key", args)]

    def pending_actions(self, account: str, folder: str | None = None) -> list[PendingAction]:
        sql = "SELECT key, account, folder, uid, action FROM actions WHERE account=?"
        args: list[Any] = [account]
        if folder is not None:
            sql += " AND folder=?"
            args.append(folder)
        return [PendingAction(*row) for row in self.db.execute(sql + " ORDER BY uid", args)]

    def actions_done(self, keys: Iterable[str]) -> None:
        with self._writing():
            self.db.conn.executemany("DELETE FROM actions WHERE key=?", [(k,) for k in keys])

    def forget_failures(self, keys: Iterable[str]) -> None:
        with self._writing():
            self.db.conn.executemany("DELETE FROM failures WHERE key=?", [(k,) for k in keys])

    def reset_folder(self, account: str, folder: str, state_key: str | None, forget_pending: bool) -> None:
        with self._writing():
            if state_key is not None:
                _put_state(self.db.conn, state_key, None)
            if forget_pending:
                for table in ("failures", "actions"):
                    self.db.conn.execute(f"DELETE FROM {table} WHERE account=? AND folder=?", [account, folder])

    def save_batch(
        self,
        mails: list[tuple[RawMail, list[DocumentPlan]]],
        *,
        failed: Iterable[tuple[RawMail, str]] = (),
        action: str | None = None,
        state: tuple[str, str | None] | None = None,
    ) -> list[SaveResult]:
        failed = list(failed)
        shas = [[_sha(p.data) for p in plans] for _, plans in mails]
        blobs: dict[str, Content] = {}
        for (_, plans), plan_shas in zip(mails, shas, strict=True):
            for plan, sha in zip(plans, plan_shas, strict=True):
                blobs.setdefault(sha, plan.data)
        try:
            # Blobs first: a row never points at a blob that is not on disk.
            self.blobs.save_many(blobs)
            blobs.clear()
            for _, plans in mails:  # spool files of duplicates (same hash twice) were not moved
                for plan in plans:
                    if isinstance(plan.data, SpooledData):
                        plan.data.path.unlink(missing_ok=True)
            return self._commit(mails, shas, failed, action, state)
        except (OSError, sqlite3.Error) as e:
            raise ArchiveError(f"The archive in {self.data_dir} could not store mail: {e}. "
                               "Check free disk space and permissions; nothing was marked as archived.") from e

    def _commit(self, mails, shas, failed, action, state) -> list[SaveResult]:
        conn = self.db.conn
        stamp = now_iso()
        results: list[SaveResult] = []
        with self._writing():  # one transaction: documents, seen keys, failures, actions and the folder's cursor
            for (raw, plans), plan_shas in zip(mails, shas, strict=True):
                row = conn.execute("SELECT number FROM documents WHERE sha256=? AND kind='mail' AND parent IS NULL",
                                   [plan_shas[0]]).fetchone()
                if row:
                    number, duplicate = row[0], True
                else:
                    number, duplicate = self._insert_documents(conn, raw, plans, plan_shas, stamp), False
                conn.execute("INSERT OR IGNORE INTO seen (key, number, seen_at) VALUES (?, ?, ?)", [raw.key, number, stamp])
                conn.execute("DELETE FROM failures WHERE key=?", [raw.key])
                # A rule's after-archive action is recorded as "rule:ACTION" and kept when owed actions are replayed.
                effective = plans[0].after or action
                if effective and effective != "none":
                    recorded = f"rule:{effective}" if plans[0].after else effective
                    conn.execute("INSERT OR REPLACE INTO actions (key, account, folder, uid, action, created) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", [raw.key, raw.account, raw.folder, raw.uid, recorded,
                                                               stamp])
                if not duplicate:
                    for send in plans[0].sends:  # automatic replies, owed from this commit on (at most one a day)
                        conn.execute("INSERT OR IGNORE INTO outbox (number, account, recipients, status, rule, "
                                     "template, lang, answers, answered_from, created, updated, day, actor) VALUES "
                                     "(NULL, ?, ?, 'owed', ?, ?, ?, ?, ?, ?, ?, ?, 'rule')",
                                     [send["via"], json.dumps([send["to"].lower()]), send["rule"], send["template"],
                                      send.get("lang") or "de", number, send.get("from") or send["to"].lower(),
                                      stamp, stamp, stamp[:10]])
                results.append(SaveResult(raw.key, number, duplicate))
            for raw, reason in failed:
                conn.execute(
                    "INSERT INTO failures (key, account, folder, uid, reason, attempts, first_failed, last_failed) "
                    "VALUES (?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT(key) DO UPDATE SET reason=excluded.reason, "
                    "attempts=attempts+1, last_failed=excluded.last_failed",
                    [raw.key, raw.account, raw.folder, raw.uid, reason, stamp, stamp])
            if state is not None:
                _put_state(conn, *state)
        return results

    def _insert_documents(self, conn, raw: RawMail, plans: list[DocumentPlan], plan_shas: list[str], stamp: str,
                          direction: str | None = None, record: int | None = None) -> int:
        numbers: list[int] = []
        if direction is None and (plans[0].references or plans[0].token is not None):
            record, _ = choose_record(plans[0].references, plans[0].token, plans[0].from_,
                                      lambda ids: _records_of(conn, ids), lambda n: _participants(conn, n))
        for plan, sha in zip(plans, plan_shas, strict=True):
            parent = numbers[plan.parent] if plan.parent is not None else None
            cur = conn.execute(
                "INSERT INTO documents (kind, parent, title, account, folder, message_id, from_addr, to_addr, "
                "cc_addr, date, subject, filename, mime_type, inline, size, sha256, text, text_status, text_error, "
                "defects, source_key, archived_at, hidden, direction, record) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [plan.kind, parent, plan.title, raw.account, raw.folder, plan.message_id, plan.from_,
                 plan.to, plan.cc, plan.date, plan.subject, plan.filename, plan.mime_type, int(plan.inline),
                 _size(plan.data), sha, None if plan.kind == "mail" else plan.text, plan.text_status, plan.text_error,
                 json.dumps(plan.defects, ensure_ascii=False) if plan.defects else None,
                 raw.key if plan.parent is None else None, stamp, 1 if plan.hidden else None,
                 direction if plan.parent is None else None, record if plan.parent is None else None])
            numbers.append(cur.lastrowid)
            if plan.fields:
                conn.executemany("INSERT OR REPLACE INTO fields (number, name, value) VALUES (?, ?, ?)",
                                 [(cur.lastrowid, k, v) for k, v in plan.fields.items()])
            if plan.tags:
                conn.executemany("INSERT OR IGNORE INTO tags (number, tag) VALUES (?, ?)",
                                 [(cur.lastrowid, tag) for tag in plan.tags])
            if plan.text_status != "pending":
                conn.execute(_FTS_INSERT, [cur.lastrowid, plan.title, plan.subject, plan.from_, plan.to, plan.cc,
                                           plan.filename, plan.text or ""])
        return numbers[0]

    # -- documents ----------------------------------------------------------------------
    def get_document(self, number: int) -> dict[str, Any]:
        if not 0 < number <= MAX_INTEGER:  # sqlite3 raises OverflowError for larger ints
            raise NotFoundError(f"There is no document number {number} in the archive.")
        row = self.db.execute(f"SELECT {', '.join(PUBLIC_COLUMNS)} FROM documents WHERE number=?", [number]).fetchone()
        if row is None:
            raise NotFoundError(f"There is no document number {number} in the archive.")
        return self._with_metadata([_row(row)])[0]

    def _with_metadata(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each document with its fields (name -> value) and tags."""
        numbers = [d["number"] for d in docs]
        fields: dict[int, dict[str, str]] = {n: {} for n in numbers}
        tags: dict[int, list[str]] = {n: [] for n in numbers}
        for i in range(0, len(numbers), 500):
            chunk = numbers[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for n, name, value in self.db.execute(f"SELECT number, name, value FROM fields WHERE number IN ({marks}) "
                                                  "ORDER BY name", chunk):
                fields[n][name] = value
            for n, tag in self.db.execute(f"SELECT number, tag FROM tags WHERE number IN ({marks}) ORDER BY tag",
                                          chunk):
                tags[n].append(tag)
        for d in docs:
            d["fields"], d["tags"] = fields[d["number"]], tags[d["number"]]
        return docs

    def field_names(self) -> list[str]:
        """The names of the metadata fields documents have."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT name FROM fields ORDER BY name LIMIT 500")]

    def set_field(self, number: int, name: str, value: str | None) -> None:
        """Set (or, with None, remove) a metadata field of a document by hand."""
        self.get_document(number)
        with self._writing():
            if value is None:
                self.db.conn.execute("DELETE FROM fields WHERE number=? AND name=?", [number, name])
            else:
                self.db.conn.execute("INSERT OR REPLACE INTO fields (number, name, value) VALUES (?, ?, ?)",
                                     [number, name, value])

    def get_text(self, number: int) -> str:
        # A mail's body is parsed again from its blob (not stored twice); an attachment's is stored.
        row = self.db.execute("SELECT kind, text, sha256 FROM documents WHERE number=?", [number]).fetchone()
        if row is None:
            raise NotFoundError(f"There is no document number {number} in the archive.")
        kind, text, sha = row
        if kind == "mail":
            from ..mime import parse_mail
            from ..plan import mail_text

            return mail_text(parse_mail(self.blobs.read(sha)))
        return text or ""

    def list_documents(self, *, limit: int = 50, offset: int = 0, kind: str | None = None,
                       parent: int | None = None, direction: str | None = None) -> list[dict[str, Any]]:
        if offset > MAX_INTEGER or (parent is not None and not 0 < parent <= MAX_INTEGER):
            return []
        limit = min(limit, MAX_INTEGER)
        sql = f"SELECT {', '.join(PUBLIC_COLUMNS)} FROM documents WHERE 1=1"
        args: list[Any] = []
        if kind:
            sql += " AND kind=?"
            args.append(kind)
        if direction:
            sql += _DIRECTION_SQL[direction].replace("d.", "")
        if parent is not None:
            sql += " AND parent=?"
            args.append(parent)
        else:
            sql += " AND hidden IS NULL"  # a mail kept only as its attachments' parent is not listed
        sql += " ORDER BY number DESC LIMIT ? OFFSET ?"
        return self._with_metadata([_row(r) for r in self.db.execute(sql, args + [limit, offset])])

    def search(self, query: str, *, limit: int = 50, offset: int = 0,
               fields: dict[str, str] | None = None, direction: str | None = None) -> list[dict[str, Any]]:
        words, wanted = field_terms(query)
        wanted.update(fields or {})
        q = fts_query(words)
        if (q is None and not wanted and not direction) or offset > MAX_INTEGER:
            return []  # no word or field to look for, or beyond any result
        limit = min(limit, MAX_INTEGER)
        cols = ", ".join(f"d.{c}" for c in PUBLIC_COLUMNS)
        where, args = [], []
        for name, value in wanted.items():  # Kategorie:Kreditoren, case-insensitive
            where.append("d.number IN (SELECT number FROM fields WHERE name=? COLLATE NOCASE AND "
                         "value=? COLLATE NOCASE)")
            args += [name, value]
        if direction:
            where.append(_DIRECTION_SQL[direction][5:])
        if q is None:
            sql = (f"SELECT {cols} FROM documents d WHERE {' AND '.join(where)} ORDER BY d.number DESC "
                   "LIMIT ? OFFSET ?")
            return self._with_metadata([_row(r) for r in self.db.execute(sql, args + [limit, offset])])
        # Newest first, like a mail client: FTS5 walks its index in rowid order and stops at the limit,
        # where ranking by relevance would score every match (slow for common words in a big archive).
        sql = (f"SELECT {cols} FROM documents_fts JOIN documents d ON d.number = documents_fts.rowid "
               f"WHERE documents_fts MATCH ? {''.join(' AND ' + w for w in where)} "
               "ORDER BY documents_fts.rowid DESC LIMIT ? OFFSET ?")
        return self._with_metadata([_row(r) for r in self.db.execute(sql, [q, *args, limit, offset])])

    # -- sending and conversations --------------------------------------------------------
    def reserve_outgoing(self, raw: RawMail, plan: DocumentPlan, send: dict[str, Any], owed: int | None = None) -> int:
        conn = self.db.conn
        sha = _sha(plan.data)
        try:
            self.blobs.save_many({sha: plan.data})
            with self._writing():
                row = conn.execute("SELECT number FROM outbox WHERE message_id=?", [send["message_id"]]).fetchone()
                if row:
                    return row[0]
                stamp = now_iso()
                number = self._insert_documents(conn, raw, [plan], [sha], stamp, direction="out",
                                                record=send["record"])
                conn.execute("INSERT OR IGNORE INTO seen (key, number, seen_at) VALUES (?, ?, ?)",
                             [raw.key, number, stamp])
                values = {**send, "number": number, "status": "reserved", "recipients": json.dumps(send["recipients"]),
                          "created": stamp, "updated": stamp, "day": stamp[:10]}
                if owed is not None:  # the owed row keeps its day and the sender it answers (the daily limit)
                    sets = ", ".join(f"{k}=?" for k in values if k not in ("created", "day"))
                    conn.execute(f"UPDATE outbox SET {sets} WHERE id=?",
                                 [v for k, v in values.items() if k not in ("created", "day")] + [owed])
                else:
                    cols = ", ".join(values)
                    conn.execute(f"INSERT INTO outbox ({cols}) VALUES ({', '.join('?' * len(values))})",
                                 list(values.values()))
                return number
        except (OSError, sqlite3.Error) as e:
            raise ArchiveError(f"The archive in {self.data_dir} could not store the mail to send: {e}. Check free "
                               "disk space and permissions; nothing was sent.") from e

    def update_outgoing(self, message_id: str, **changes: Any) -> None:
        changes["updated"] = now_iso()
        with self._writing():
            self.db.conn.execute(f"UPDATE outbox SET {', '.join(f'{k}=?' for k in changes)} WHERE message_id=?",
                                 [*changes.values(), message_id])

    def drop_owed(self, owed: int, reason: str) -> None:
        with self._writing():
            self.db.conn.execute("UPDATE outbox SET status='failed', reply=?, updated=? WHERE id=? AND status='owed'",
                                 [reason, now_iso(), owed])

    def outbox(self, statuses: Iterable[str] | None = None, number: int | None = None,
               limit: int = 1_000_000, message_id: str | None = None, request: str | None = None
               ) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM outbox WHERE 1=1", list[Any]()
        if message_id is not None:
            sql += " AND message_id=?"
            args.append(message_id)
        if request is not None:
            sql += " AND request=?"
            args.append(request)
        statuses = list(statuses or [])
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        if number is not None:
            sql += " AND (number=? OR record=?)"
            args += [number, number]
        cur = self.db.execute(sql + " ORDER BY id LIMIT ?", [*args, min(limit, MAX_INTEGER)])
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur]
        for r in rows:
            r["recipients"] = json.loads(r["recipients"] or "[]")
        return rows

    def conversation(self, number: int) -> list[dict[str, Any]]:
        doc = self.get_document(number)
        record = doc["record"] or number
        if doc["record"] is None and doc["parent"] is not None:
            record = number  # an attachment sent on its own is its own record
        cols = ", ".join(PUBLIC_COLUMNS)
        rows = [_row(r) for r in self.db.execute(
            f"SELECT {cols} FROM documents WHERE (number=? OR record=?) AND parent IS NULL OR number=? "
            "ORDER BY number", [record, record, record])]
        rows.sort(key=lambda d: (d["number"] != record, d["archived_at"] or "", d["number"]))
        status = {r["number"]: r for r in self.outbox(number=record, limit=10_000)}
        for d in rows:
            sent = status.get(d["number"])
            d["sending"] = {k: sent[k] for k in ("status", "reply", "recipients", "attempts", "account")} \
                if sent else None
        return self._with_metadata(rows)

    def read_blob(self, number: int) -> bytes:
        return self.blobs.read(self.get_document(number)["sha256"])

    def pending_text(self, limit: int) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT number, mime_type, sha256 FROM documents WHERE text_status='pending' "
                               "ORDER BY number LIMIT ?", [limit])
        return [{"number": n, "mime_type": m, "sha256": s, "path": str(self.blobs.path(s))} for n, m, s in rows]

    def save_texts(self, results: Iterable[tuple[int, str, str, str | None]]) -> None:
        conn = self.db.conn
        with self._writing():  # status and index entry together: a document is indexed exactly once
            for number, text, status, error in results:
                row = conn.execute("SELECT title, filename FROM documents WHERE number=? AND text_status='pending'",
                                   [number]).fetchone()
                if row is None:
                    continue  # done by an earlier run meanwhile
                conn.execute("UPDATE documents SET text=?, text_status=?, text_error=? WHERE number=?",
                             [text or None, status, error, number])
                conn.execute(_FTS_INSERT, [number, row[0], None, None, None, None, row[1], text])


_FTS_TERMS = re.compile(r'"([^"]*)"?|([^\s"]+)')  # a "quoted phrase" (its closing quote optional), or a word
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


_FIELD_TERM = re.compile(r'(?:^|(?<=\s))([^\s:"]+):(?:"([^"]*)"|([^\s"]+))')


def field_terms(text: str) -> tuple[str, dict[str, str]]:
    """A search text split into its words and its field terms: ``Kategorie:Kreditoren`` or
    ``Kunde:"Müller AG"`` (a metadata field with that value)."""
    wanted: dict[str, str] = {}

    def take(match: re.Match) -> str:
        wanted[match.group(1)] = match.group(2) if match.group(2) is not None else match.group(3)
        return " "

    return _FIELD_TERM.sub(take, text), wanted


def fts_query(text: str) -> str | None:
    """A person's search text as an FTS5 query that cannot be a syntax error, or None if it holds no term.

    Each word and each "quoted phrase" becomes an FTS5 string (all of them must match), so FTS5
    operators (AND, NOT, NEAR, *, ^, column:) are searched for as text. Controls separate words:
    a NUL would end an FTS5 string early. A term without letters or digits (``-``, ``*``) is a phrase
    of no tokens, which FTS5 ignores; an empty query would be a syntax error, hence None.
    """
    text = _CONTROLS.sub(" ", text).encode("utf-8", "replace").decode("utf-8")  # lone surrogates from a CLI
    terms = [phrase or word for phrase, word in _FTS_TERMS.findall(text)]
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms if term.strip()) or None


_DIRECTION_SQL = {"in": " AND d.direction IS NULL", "out": " AND d.direction = 'out'"}


def _records_of(conn, message_ids: list[str]) -> dict[str, int]:
    """Archived mails among these Message-IDs: each one's record, or its own number (it becomes the record)."""
    marks = ",".join("?" * len(message_ids))
    found: dict[str, int] = {}
    for mid, number, record in conn.execute(f"SELECT message_id, number, record FROM documents WHERE message_id IN "
                                            f"({marks}) AND parent IS NULL ORDER BY number", message_ids):
        found.setdefault(mid, record or number)
    return found


def _participants(conn, record: int) -> set[str]:
    """Whoever sent or received a mail of the record's conversation (the record itself included)."""
    found: set[str] = set()
    for row in conn.execute("SELECT from_addr, to_addr, cc_addr FROM documents WHERE number=? OR (record=? AND "
                            "parent IS NULL)", [record, record]):
        found |= addresses(*row)
    return found


def _put_state(conn, key: str, value: str | None) -> None:
    if value is None:
        conn.execute("DELETE FROM source_state WHERE key=?", [key])
    else:
        conn.execute("INSERT INTO source_state (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO "
                     "UPDATE SET value=excluded.value, updated_at=excluded.updated_at", [key, value, now_iso()])


def _sha(data: Content) -> str:
    return data.sha256 if isinstance(data, SpooledData) else sha256_hex(data)


def _size(data: Content) -> int:
    return data.size if isinstance(data, SpooledData) else len(data)


def _row(row) -> dict[str, Any]:
    d = dict(zip(PUBLIC_COLUMNS, row, strict=True))
    d["inline"] = bool(d["inline"])
    d["defects"] = json.loads(d["defects"]) if d["defects"] else []
    d["direction"] = d["direction"] or "in"
    return d

