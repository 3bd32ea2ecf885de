"""The importer's own state in ``state.db``: accounts, import runs and the audit trail.

Kept apart from the archive (which may be another DMS). What must commit together with the
documents -- seen keys, cursors, failures, pending server actions -- lives in the archive.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .accounts import NAME_RE, Account
from .db import now_iso, open_database
from .errors import ConfigError, SecretError, escaped, t
from .vault import Vault

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, kind TEXT, host TEXT, port INTEGER, "
    "security TEXT, username TEXT, secret TEXT, folders TEXT, unread_only INTEGER, after TEXT, ca_file TEXT, "
    "enabled INTEGER, created_at TEXT, updated_at TEXT)",
    "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, started TEXT, finished TEXT, account TEXT, "
    "source TEXT, status TEXT, fetched INTEGER, archived INTEGER, duplicates INTEGER, failed INTEGER, "
    "exit_code INTEGER, errors TEXT)",
    "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at TEXT, actor TEXT, action TEXT, target TEXT, "
    "detail TEXT)",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit(at)",
    "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password_hash TEXT, role TEXT, created_at TEXT)",
    "CREATE TABLE IF NOT EXISTS settings ([key] TEXT PRIMARY KEY, value TEXT)",
    # The watch service's view of each folder (watch.py): how it is watched, when the server was last heard.
    "CREATE TABLE IF NOT EXISTS watch (account TEXT, folder TEXT, mode TEXT, last_seen TEXT, last_latency REAL, "
    "error TEXT, updated TEXT, PRIMARY KEY (account, folder))",
    # Microsoft Graph change notifications: our subscriptions (the clientState only as its hash) and what
    # WebAdmin's /graph/notify received for them, for the watcher to read.
    "CREATE TABLE IF NOT EXISTS graph_subscriptions (id TEXT PRIMARY KEY, account TEXT, folder TEXT, "
    "state_hash TEXT, expires REAL, created TEXT)",
    "CREATE TABLE IF NOT EXISTS watch_events (id INTEGER PRIMARY KEY AUTOINCREMENT, subscription TEXT, kind TEXT, "
    "at REAL)",
    "CREATE TABLE IF NOT EXISTS login_failures ([key] TEXT PRIMARY KEY, failures INTEGER, last REAL, "
    "locked_until REAL)",
]
STATE_FILE = "state.db"
ROLES = ("admin", "viewer", "sender")  # sender: a viewer who may also send documents by mail
SECRETS_BOUND_SETTING = "secrets_bound_to_endpoints"
# Columns added after the first release of a table: {table: [(name, SQL type)]}.
COLUMNS_ADDED = {"accounts": [("tenant", "TEXT"), ("mailboxes", "TEXT"), ("batch_size", "INTEGER"),
                              ("settings", "TEXT")],
                 "runs": [("warnings", "TEXT")],
                 "users": [("session_epoch", "INTEGER DEFAULT 0"), ("disabled", "INTEGER DEFAULT 0")]}
AUDIT_TARGET_MAX, AUDIT_DETAIL_MAX = 200, 2000  # an audit entry stays a line, whatever was typed


def current_actor() -> str:
    """Who is acting, for the audit trail: the login behind sudo, else the process user."""
    user = os.environ.get("SUDO_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


class State:
    """Accounts, runs and audit entries of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.create_directory(data_dir)
        # NORMAL: in WAL mode still consistent after a crash; a power cut may lose the last audit
        # entries, never mail (that is the archive's ledger, synchronous=FULL).
        self.db = open_database(Path(data_dir) / STATE_FILE, synchronous="NORMAL")

    @staticmethod
    def exists(data_dir: Path) -> bool:
        """True if ``data_dir`` holds an archivista-mail data directory (made by ``init``)."""
        return (Path(data_dir) / STATE_FILE).exists()

    @staticmethod
    def create_directory(data_dir: Path) -> None:
        """The data directory, created 0750 if missing (its files hold hashes and encrypted secrets)."""
        path = Path(data_dir)
        if not path.is_dir():
            path.mkdir(parents=True, mode=0o750, exist_ok=True)
            path.chmod(0o750)  # mkdir's mode is filtered by the umask; this is what we mean

    def close(self) -> None:
        """Close the database connection."""
        self.db.conn.close()

    def ensure_schema(self) -> None:
        """Create the tables if missing, in one transaction; idempotent."""
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                self.db.conn.execute(statement)
            for table, columns in COLUMNS_ADDED.items():
                have = {row[1] for row in self.db.conn.execute(f"PRAGMA table_info({table})")}
                for name, sqltype in columns:
                    if name not in have:
                        self.db.conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sqltype}")
            legacy = self.db.conn.execute(
                "SELECT name, kind, host, port, security, username, folders, unread_only, after, ca_file, tenant, "
                "mailboxes, batch_size FROM accounts WHERE settings IS NULL").fetchall()
            for row in legacy:
                self.db.conn.execute("UPDATE accounts SET settings=? WHERE name=?",
                                     [_settings_of_legacy_row(row[1:]), row[0]])

    # -- accounts ---------------------------------------------------------------------
    def save_account(self, account: Account, actor: str, *, new: bool) -> None:
        """Insert (new=True) or replace an account, and audit it. Raises ConfigError on name clashes."""
        exists = self.db.execute("SELECT 1 FROM accounts WHERE name=?", [account.name]).fetchone()
        if new and exists:
            raise ConfigError(t("An account named '%(name)s' exists already. Choose another name, or remove it "
                                "first with 'archivista-mail account remove %(name)s'.", name=escaped(account.name)))
        if not new and not exists:
            raise ConfigError(t("There is no account named '%(name)s'. See 'archivista-mail account list'.",
                                name=escaped(account.name)))
        settings = json.dumps(dict(account.settings), ensure_ascii=False)
        row = {"name": account.name, "kind": account.kind, "secret": account.secret, "settings": settings,
               "enabled": int(account.enabled), "updated_at": now_iso()}
        with self.db.conn:
            if exists:
                self.db.table("accounts").update(account.name, row)
            else:
                row["created_at"] = row["updated_at"]
                self.db.table("accounts").insert(row)
            safe = {"kind": account.kind, "enabled": account.enabled, **account.settings}
            self.audit(actor, "account.add" if new else "account.change", account.name,
                       json.dumps(safe, ensure_ascii=False))

    def accounts(self) -> list[Account]:
        """All accounts, by name."""
        rows = self.db.execute("SELECT name, kind, secret, settings, enabled FROM accounts ORDER BY name").fetchall()
        return [Account(name=r[0], kind=r[1], secret=r[2] or "", settings=json.loads(r[3] or "{}"), enabled=bool(r[4]))
                for r in rows]

    def account(self, name: str) -> Account:
        """One account by name; raises ConfigError if there is none."""
        for acc in self.accounts():
            if acc.name == name:
                return acc
        raise ConfigError(t("There is no account named '%(name)s'. See 'archivista-mail account list'.",
                            name=escaped(name)))

    def remove_account(self, name: str, actor: str) -> None:
        """Delete an account (its archived documents stay); raises ConfigError if unknown."""
        self.account(name)
        with self.db.conn:
            self.db.execute("DELETE FROM accounts WHERE name=?", [name])
            self.audit(actor, "account.remove", name, "")

    def bind_legacy_secrets(self, vault: Vault) -> int:
        """Bind secrets stored before binding existed to their account's endpoint, once; returns how many.

        From then on a changed server, user or tenant needs the secret entered again (see vault).
        """
        if self.setting(SECRETS_BOUND_SETTING):
            return 0
        bound, unreadable = 0, 0
        for acc in self.accounts():
            try:
                if acc.secret and not vault.is_bound(acc.secret):
                    self.save_account(vault.seal(acc, vault.decrypt(acc.secret, acc.endpoint)), "archivista-mail",
                                      new=False)
                    bound += 1
            except (SecretError, ConfigError):  # a replaced key file, a source no longer installed
                unreadable += 1
        if unreadable:
            return bound  # tried again next time, when the key may be back
        with self.db.conn:
            self.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", [SECRETS_BOUND_SETTING, "1"])
        return bound

    def set_enabled(self, name: str, enabled: bool, actor: str) -> None:
        """Enable or disable an account."""
        self.save_account(replace(self.account(name), enabled=enabled), actor, new=False)

    # -- runs -------------------------------------------------------------------------
    def save_run(self, run: dict[str, Any]) -> int:
        """Record an import run's summary; returns its id."""
        row = dict(run)
        for name in ("errors", "warnings"):
            row[name] = json.dumps(row.get(name, []), ensure_ascii=False)
        return int(self.db.table("runs").insert(row, alter=True).last_pk or 0)  # alter: columns added later

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest import runs, newest first."""
        rows = self.db["runs"].rows_where(order_by="id desc", limit=limit)
        return [dict(r, errors=json.loads(r["errors"] or "[]"), warnings=json.loads(r.get("warnings") or "[]"))
                for r in rows]

    # -- WebAdmin users and settings ----------------------------------------------------------
    def save_user(self, name: str, password_hash: str, role: str, actor: str) -> None:
        """Create a WebAdmin user, or set an existing one's password and role (ending its sessions)."""
        if role not in ROLES:
            raise ConfigError(t("The role '%(role)s' is not known. Use admin, viewer or sender.", role=escaped(role)))
        if not NAME_RE.match(name):
            raise ConfigError(t("The user name '%(name)s' is not usable: letters, digits, dots, dashes, @.",
                                name=escaped(name)))
        with self.db.conn:
            self.db.execute("INSERT INTO users (name, password_hash, role, created_at) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT(name) DO UPDATE SET password_hash=excluded.password_hash, "
                            "role=excluded.role, session_epoch=session_epoch+1",
                            [name, password_hash, role, now_iso()])
            self.db.execute("DELETE FROM login_failures WHERE key=?", [user_login_key(name)])
            self.audit(actor, "user.save", name, role)

    def user(self, name: str) -> dict[str, Any] | None:
        """A WebAdmin user (name, password_hash, role, session_epoch, disabled), or None."""
        row = self.db.execute("SELECT name, password_hash, role, session_epoch, disabled FROM users WHERE name=?",
                              [name]).fetchone()
        if row is None:
            return None
        return {"name": row[0], "password_hash": row[1], "role": row[2], "session_epoch": row[3] or 0,
                "disabled": bool(row[4])}

    def users(self) -> list[dict[str, Any]]:
        """Every WebAdmin user (without password hashes), by name."""
        rows = self.db.execute("SELECT name, role, disabled, created_at FROM users ORDER BY name").fetchall()
        return [{"name": r[0], "role": r[1], "disabled": bool(r[2]), "created_at": r[3]} for r in rows]

    def end_sessions(self, name: str, actor: str, reason: str) -> None:
        """End every WebAdmin session of a user at once (their cookies name an older session epoch)."""
        with self.db.conn:
            self.db.execute("UPDATE users SET session_epoch=session_epoch+1 WHERE name=?", [name])
            self.audit(actor, "user.sessions_ended", name, reason)

    def set_user_disabled(self, name: str, disabled: bool, actor: str) -> None:
        """Disable a user (sessions end, no login) or enable them again (a login lock is lifted); ConfigError if unknown."""
        self._require_user(name)
        with self.db.conn:
            self.db.execute("UPDATE users SET disabled=?, session_epoch=session_epoch+1 WHERE name=?",
                            [int(disabled), name])
            if not disabled:
                self.db.execute("DELETE FROM login_failures WHERE key=?", [user_login_key(name)])
            self.audit(actor, "user.disable" if disabled else "user.enable", name, "")

    def remove_user(self, name: str, actor: str) -> None:
        """Delete a WebAdmin user; their sessions end with them. Raises ConfigError if unknown."""
        self._require_user(name)
        with self.db.conn:
            self.db.execute("DELETE FROM users WHERE name=?", [name])
            self.audit(actor, "user.remove", name, "")

    def _require_user(self, name: str) -> None:
        if self.user(name) is None:
            raise ConfigError(t("There is no WebAdmin user named '%(name)s'. See 'archivista-mail admin list'.",
                                name=escaped(name)))

    # -- login throttling ------------------------------------------------------------------------
    def login_locked_until(self, keys: list[str], now: float) -> float:
        """The latest time until which any of ``keys`` (user:NAME, addr:IP) is locked; 0 if none is."""
        marks = ",".join("?" * len(keys))
        row = self.db.execute(f"SELECT max(locked_until) FROM login_failures WHERE key IN ({marks})",
                              keys).fetchone()
        until = row[0] or 0.0
        return until if until > now else 0.0

    def login_failed(self, policies: dict[str, tuple[int, float, float]], now: float,
                     window: float) -> float:
        """Count a failed login for each key; lock a key that reached its threshold.

        ``policies`` maps a key to (threshold, first lock in seconds, longest lock in seconds):
        each failure beyond the threshold doubles the lock, up to the longest, so a lock always
        ends. Failures older than ``window`` seconds are forgotten. Returns the new lock's end, or 0.
        """
        locked = 0.0
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            for key, (threshold, first, longest) in policies.items():
                row = self.db.execute("SELECT failures, last FROM login_failures WHERE key=?", [key]).fetchone()
                failures = (row[0] if row and now - (row[1] or 0) < window else 0) + 1
                until = now + min(longest, first * 2 ** (failures - threshold)) if failures >= threshold else 0.0
                self.db.execute("INSERT OR REPLACE INTO login_failures (key, failures, last, locked_until) "
                                "VALUES (?, ?, ?, ?)", [key, failures, now, until])
                locked = max(locked, until)
        return locked

    def login_succeeded(self, keys: list[str]) -> None:
        """Forget the failures of these keys."""
        with self.db.conn:
            self.db.conn.executemany("DELETE FROM login_failures WHERE key=?", [(k,) for k in keys])

    def rules(self) -> list[dict[str, Any]]:
        """The incoming rules in their JSON form, in order (rules.load_rules reads them)."""
        return json.loads(self.setting("rules") or "[]")

    def save_rules(self, rules: list[dict[str, Any]], actor: str, what: str) -> None:
        """Store the whole rule set (checked by the caller) and audit the change."""
        with self.db.conn:
            self.db.execute("INSERT INTO settings (key, value) VALUES ('rules', ?) ON CONFLICT(key) DO UPDATE SET "
                            "value=excluded.value", [json.dumps(rules, ensure_ascii=False)])
            self.audit(actor, "rules.change", what, f"{len(rules)} rules: " + ", ".join(r["name"] for r in rules))

    def setting(self, key: str, default: str = "") -> str:
        """A setting edited in WebAdmin (link settings, ...)."""
        row = self.db.execute("SELECT value FROM settings WHERE key=?", [key]).fetchone()
        return row[0] if row and row[0] is not None else default

    def save_setting(self, key: str, value: str, actor: str) -> None:
        """Store a WebAdmin setting and audit the change."""
        with self.db.conn:
            self.db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                            "value=excluded.value", [key, value])
            self.audit(actor, "setting.change", key, value)

    # -- the watch service's status ---------------------------------------------------------
    def clear_watch_status(self) -> None:
        """Forget the watches (they are being started anew)."""
        self.db.execute("DELETE FROM watch")

    def forget_watch_status(self, account: str, folder: str) -> None:
        """Drop one row: the account-wide problem ("*") once its watch works again."""
        self.db.execute("DELETE FROM watch WHERE account=? AND folder=?", [account, folder])

    def save_watch_status(self, account: str, folder: str, mode: str, seen: bool = False,
                          error: str | None = None) -> None:
        """How a folder is watched; ``seen``: the server answered just now; ``error``: why the watch is down."""
        stamp = now_iso()
        self.db.execute("INSERT INTO watch (account, folder, mode, last_seen, error, updated) VALUES (?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT(account, folder) DO UPDATE SET mode=excluded.mode, last_seen=COALESCE("
                        "excluded.last_seen, last_seen), error=excluded.error, updated=excluded.updated",
                        [account, folder, mode, stamp if seen else None, _cut(error, 500) if error else None, stamp])

    def save_watch_latency(self, account: str, folders: set[str] | None, seconds: float) -> None:
        """How long the last new mail took from being noticed to its commit, for these folders (None: all)."""
        if folders is None:
            self.db.execute("UPDATE watch SET last_latency=?, last_seen=? WHERE account=?",
                            [round(seconds, 3), now_iso(), account])
        else:
            for folder in folders:
                self.db.execute("UPDATE watch SET last_latency=?, last_seen=? WHERE account=? AND folder IN (?, '*')",
                                [round(seconds, 3), now_iso(), account, folder])

    def save_graph_subscription(self, sid: str, account: str, folder: str, client_state: str, expires: float) -> None:
        """A Graph subscription we created; its clientState is kept only as a hash (WebAdmin compares)."""
        self.db.execute("INSERT OR REPLACE INTO graph_subscriptions (id, account, folder, state_hash, expires, created) "
                        "VALUES (?, ?, ?, ?, ?, ?)", [sid, account, folder, _state_hash(client_state), expires,
                                                      now_iso()])

    def graph_subscriptions(self, account: str) -> list[tuple[str, str]]:
        """The account's Graph subscriptions we know of: (id, folder label)."""
        return [(r[0], r[1]) for r in self.db.execute("SELECT id, folder FROM graph_subscriptions WHERE account=?",
                                                      [account])]

    def drop_graph_subscription(self, sid: str) -> None:
        self.db.execute("DELETE FROM graph_subscriptions WHERE id=?", [sid])

    def graph_notification(self, sid: str, client_state: str, kind: str) -> bool:
        """Record a notification for the watcher when it names our subscription with its clientState; False (and
        nothing recorded) for anything else: a forged or stale one."""
        row = self.db.execute("SELECT state_hash FROM graph_subscriptions WHERE id=?", [sid]).fetchone()
        if row is None or not hmac.compare_digest(row[0], _state_hash(client_state)):
            return False
        self.db.execute("INSERT INTO watch_events (subscription, kind, at) VALUES (?, ?, ?)", [sid, kind, time.time()])
        return True

    def watch_events(self, after: int, subscriptions: Iterable[str]) -> list[tuple[int, str, str, float]]:
        """Notifications recorded after event ``after`` for these subscriptions: (id, subscription, kind, at)."""
        subs = list(subscriptions)
        if not subs:
            return []
        marks = ",".join("?" * len(subs))
        return [tuple(r) for r in self.db.execute(  # type: ignore[misc]
            f"SELECT id, subscription, kind, at FROM watch_events WHERE id > ? AND subscription IN ({marks}) "
            "ORDER BY id", [after, *subs])]

    def prune_watch_events(self) -> None:
        """Drop notifications older than a day (the watcher read them long ago)."""
        self.db.execute("DELETE FROM watch_events WHERE at < ?", [time.time() - 86400])

    def last_watch_event(self) -> int:
        """The newest notification's id (0 if none)."""
        row = self.db.execute("SELECT MAX(id) FROM watch_events").fetchone()
        return row[0] or 0

    def watch_status(self) -> list[dict[str, Any]]:
        """Every watched folder: account, folder, mode (idle or polling), last_seen, last_latency, error."""
        cur = self.db.execute("SELECT account, folder, mode, last_seen, last_latency, error FROM watch "
                              "ORDER BY account, folder")
        return [dict(zip(("account", "folder", "mode", "last_seen", "last_latency", "error"), r, strict=True))
                for r in cur]

    # -- audit ------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str = "", detail: str = "") -> None:
        """Append an entry to the audit trail (actor and target cut to 200 characters, detail to 2,000)."""
        self.db.execute("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                        [now_iso(), _cut(actor, AUDIT_TARGET_MAX), action, _cut(target, AUDIT_TARGET_MAX),
                         _cut(detail, AUDIT_DETAIL_MAX)])

    def audit_entries(self, limit: int = 100, action: str | None = None, actor: str | None = None) -> list[dict[str, Any]]:
        """Audit entries, newest first, optionally filtered by action prefix and actor."""
        sql = "SELECT id, at, actor, action, target, detail FROM audit WHERE 1=1"
        args: list[Any] = []
        if action:
            sql += " AND action LIKE ?"
            args.append(action + "%")
        if actor:
            sql += " AND actor=?"
            args.append(actor)
        cur = self.db.execute(sql + " ORDER BY id DESC LIMIT ?", args + [limit])
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]


def _cut(text: str | None, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _state_hash(client_state: str) -> str:
    return hashlib.sha256(client_state.encode("utf-8")).hexdigest()


def user_login_key(name: str) -> str:
    """The login-throttling key of a user name."""
    return f"user:{name.lower()}"


def address_login_key(address: str) -> str:
    """The login-throttling key of a client address."""
    return f"addr:{address}"


def _settings_of_legacy_row(row: tuple) -> str:
    """Settings of an account stored before they were a JSON object of the source's declared settings."""
    kind, host, port, security, username, folders, unread_only, after, ca_file, tenant, mailboxes, batch = row
    common = {"folders": json.loads(folders or "[]"), "unread_only": bool(unread_only), "after": after or "none"}
    if kind == "o365":
        settings = {"tenant": tenant, "client_id": username, "mailboxes": json.loads(mailboxes or "[]"),
                    "batch_size": batch or 25, **common}
    else:
        settings = {"host": host, "port": port, "security": security, "user": username, "ca_file": ca_file,
                    **common}
        if kind == "pop3":
            del settings["folders"], settings["unread_only"]
    return json.dumps(settings, ensure_ascii=False)
