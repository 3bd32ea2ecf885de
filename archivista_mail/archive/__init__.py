"""The archive plugin boundary: ``open_archive`` picks a backend by name from an entry point."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from ..errors import ConfigError
from .base import DOCUMENT_FIELDS, Archive, Failure, PendingAction

ENTRY_POINT_GROUP = "archivista_mail.archives"

__all__ = ["DOCUMENT_FIELDS", "Archive", "Failure", "PendingAction", "open_archive", "ENTRY_POINT_GROUP"]


def open_archive(data_dir: Path, backend: str = "embedded") -> Archive:
    """Open the archive backend registered under ``backend`` for ``data_dir``; raises ConfigError."""
    if backend == "embedded":  # the default needs no installed metadata (running from a checkout)
        from .embedded import EmbeddedArchive

        return EmbeddedArchive(data_dir)
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == backend]
    if not found:
        names = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | {"embedded"})
        raise ConfigError(f"The archive backend {backend!r} is not installed. Installed backends: "
                          f"{', '.join(names)}. Set 'archive_backend' in the configuration file to one of them.")
    cls = found[0].load()
    return cls(data_dir)
