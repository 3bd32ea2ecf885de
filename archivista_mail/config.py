"""Deployment settings, declared once with default and help; read once and passed down.

Accounts and link settings live in the database (edited in WebAdmin and with the CLI); the
file holds what belongs to the machine: where the archive lives, the key file, tuning.
The file is INI with one ``[archivista-mail]`` section; see docs/configuration.md.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_DATA_DIR = "/var/lib/archivista-mail"
DEFAULT_CONFIG_FILE = "/etc/archivista-mail/archivista-mail.conf"
SECTION = "archivista-mail"


@dataclass(frozen=True)
class Setting:
    """One configuration file setting: its name, type, default and what it does."""

    name: str
    type: type
    default: object
    help: str


def _setting(default: object, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    """The settings of one run: the data directory plus the file's settings, each declared once here."""

    data_dir: Path
    archive_backend: str = _setting(
        "embedded", "Archive backend, by its name in the 'archivista_mail.archives' entry point group.")
    key_file: str = _setting(
        "", "File holding the key that encrypts stored passwords and client secrets (created 0600 on first "
            "use). Empty: 'secret.key' in the data directory.")
    fetch_batch_size: int = _setting(
        50, "IMAP and POP3: messages fetched and archived together in one transaction (a batch).")
    fetch_batch_bytes: int = _setting(
        16 * 1024 * 1024, "IMAP and POP3: a batch is cut when the messages in it add up to more bytes than this.")
    network_timeout: int = _setting(60, "Seconds a connection may stay silent before the account's run fails.")
    extract_workers: int = _setting(0, "Processes that extract attachment text after the import. 0: one per core.")
    extract_on_import: bool = _setting(
        True, "Extract attachment text right after each import run (else run 'archivista-mail extract').")
    import_interval_minutes: int = _setting(
        10, "Minutes between scheduled imports ('import --scheduled', run by cron every minute). WebAdmin's "
            "Import page can set it too; that value wins.")
    watch_poll_seconds: int = _setting(
        30, "Watch service: seconds between polls of the sources and folders no server tells about new mail (POP3, "
            "IMAP folders beyond watch_idle_folders where the server lacks NOTIFY, push that was refused).")
    watch_idle_folders: int = _setting(
        10, "Watch service: IMAP folders watched with IDLE, one connection each; folders beyond share one "
            "connection with NOTIFY (RFC 5465) where the server offers it, else are polled with STATUS.")
    watch_idle_renew_seconds: int = _setting(
        1500, "Watch service: seconds after which an IMAP IDLE is ended and issued again (RFC 2177: under 29 "
              "minutes); a connection that does not answer then is replaced.")
    watch_push_retry_seconds: int = _setting(
        1800, "Watch service: when a server refuses push (Graph subscriptions, Gmail's watch or Pub/Sub, EWS "
              "streaming), the account is polled and push is tried again after this many seconds.")
    watch_graph_seconds: int = _setting(
        3 * 24 * 3600, "Watch service: the lifetime asked for Microsoft Graph subscriptions (Graph grants under 7 "
                       "days for mail); each is renewed when half of it is gone.")
    watch_gmail_rewatch_seconds: int = _setting(
        86400, "Watch service: Gmail's users.watch is called again after this many seconds (Google asks for at "
               "least once a week, and recommends once a day).")
    webadmin_secure_cookies: bool = _setting(
        False, "WebAdmin: send the session cookie over HTTPS only. Set it when WebAdmin is reached through HTTPS.")
    webadmin_timezone: str = _setting(
        "", "WebAdmin: the time zone its dates are shown in, e.g. Europe/Zurich. Empty: the machine's time zone.")

    @property
    def key_path(self) -> Path:
        """Where the secret key lives."""
        return Path(self.key_file) if self.key_file else self.data_dir / "secret.key"

    @property
    def workers(self) -> int:
        """How many extraction processes to run."""
        return self.extract_workers or (os.cpu_count() or 1)


_TYPES: dict[str, type] = {"str": str, "int": int, "bool": bool}
SETTINGS = [Setting(f.name, _TYPES[str(f.type)], f.default, f.metadata["help"]) for f in fields(Config) if f.metadata]


def load_config(data_dir: str | Path | None, config_file: str | Path | None = None) -> Config:
    """Read the configuration file (if any) into a Config; raises ConfigError on a bad value."""
    values: dict[str, Any] = {}
    path = Path(config_file) if config_file else Path(DEFAULT_CONFIG_FILE)
    if config_file and not path.exists():
        raise ConfigError(f"The configuration file {path} does not exist. Check the --config option.")
    if path.exists():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as e:
            raise ConfigError(f"The configuration file {path} cannot be read: {e}. Fix its syntax.") from e
        section = parser[SECTION] if parser.has_section(SECTION) else {}
        known = {s.name: s for s in SETTINGS}
        for key, raw in section.items():
            if key == "data_dir":
                values["data_dir"] = raw
                continue
            if key not in known:
                raise ConfigError(f"The configuration file {path} has an unknown setting {key!r}. "
                                  f"Known settings: data_dir, {', '.join(known)}.")
            values[key] = _convert(known[key], raw, path)
    chosen = data_dir or values.pop("data_dir", None) or DEFAULT_DATA_DIR
    values.pop("data_dir", None)
    return Config(data_dir=Path(chosen), **values)


def _convert(setting: Setting, raw: str, path: Path) -> object:
    try:
        if setting.type is bool:
            if raw.strip().lower() in ("1", "yes", "true", "on"):
                return True
            if raw.strip().lower() in ("0", "no", "false", "off"):
                return False
            raise ValueError(raw)
        return setting.type(raw.strip())
    except ValueError:
        kind = {int: "a whole number", bool: "yes or no", str: "text"}[setting.type]
        raise ConfigError(f"The setting {setting.name} in {path} must be {kind}, not {raw!r}.") from None
