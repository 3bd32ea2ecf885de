"""Mail from files: .eml files, .mbox files and Maildir folders (migrations, demo, tests)."""

from __future__ import annotations

import mailbox
import os
from collections.abc import Iterator
from pathlib import Path

from ..accounts import Account
from ..archive.blobs import sha256_hex
from ..config import Config
from ..errors import SourceError
from ..model import RawMail, SpooledData
from ..spool import SpoolWriter
from . import base
from .base import Batch, Folder, Item, Lang, Ledger, Source

ACCOUNT = "files"


def _is_maildir(path: Path) -> bool:
    return path.is_dir() and all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _is_mbox(path: Path) -> bool:
    if path.suffix.lower() in (".mbox", ".mbx"):
        return True
    if path.suffix.lower() == ".eml":
        return False
    with open(path, "rb") as f:
        return f.read(5) == b"From " and path.suffix == ""


def iter_files(path: Path, spool_dir: Path | None = None, spool_from: int = 8 << 20) -> Iterator[RawMail]:
    """Every message below ``path``, in a stable order; raises SourceError if it does not exist.

    The key is the content hash, so importing the same file twice archives it once. An .eml file
    larger than ``spool_from`` is copied in chunks to ``spool_dir`` instead of being read into memory.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"The path {path} does not exist. Give an .eml or .mbox file or a folder of them.")
    if _is_maildir(path):
        yield from _maildir(path)
    elif path.is_dir():
        for top, dirs, files in os.walk(path):
            dirs.sort()
            for name in list(dirs):
                if _is_maildir(Path(top) / name):
                    dirs.remove(name)  # a Maildir is read as a whole, not file by file
                    yield from _maildir(Path(top) / name)
            for name in sorted(files):
                yield from _file(Path(top) / name, spool_dir, spool_from)
    else:
        yield from _file(path, spool_dir, spool_from)


def _file(path: Path, spool_dir: Path | None, spool_from: int) -> Iterator[RawMail]:
    try:
        if _is_mbox(path):
            box = mailbox.mbox(str(path), create=False)
            try:
                for i, key in enumerate(box.iterkeys()):
                    raw = box.get_bytes(key)
                    yield RawMail(raw, ACCOUNT, f"{path}#{i}", "file:" + sha256_hex(raw))
            finally:
                box.close()
        elif path.suffix.lower() in (".eml", ".msg", ".txt") or path.suffix == "":
            if spool_dir is not None and path.stat().st_size > spool_from:
                spooled = _spool_copy(path, spool_dir)
                yield RawMail(b"", ACCOUNT, str(path), "file:" + spooled.sha256, spool=spooled)
            else:
                raw = path.read_bytes()
                yield RawMail(raw, ACCOUNT, str(path), "file:" + sha256_hex(raw))
    except OSError as e:
        raise SourceError(f"The file {path} cannot be read ({e.strerror}). Check its permissions.") from e


def _spool_copy(path: Path, spool_dir: Path) -> SpooledData:
    with SpoolWriter(spool_dir) as writer:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                writer.write(chunk)
        return writer.close()


def _maildir(path: Path) -> Iterator[RawMail]:
    try:
        box = mailbox.Maildir(str(path), factory=None, create=False)
        for key in sorted(box.iterkeys()):
            raw = box.get_bytes(key)
            yield RawMail(raw, ACCOUNT, str(path), "file:" + sha256_hex(raw))
    except OSError as e:
        raise SourceError(f"The Maildir {path} cannot be read ({e.strerror}). Check its permissions.") from e


FILES_BATCH = 50


class FilesSource(Source):
    """``import --from PATH``: .eml files, mbox files and Maildir folders, keyed by their content hash.

    Not an account kind (it is not registered): the importer runs it for a path, through the
    same loop, so repeated imports of the same files are no-ops.
    """

    kind = "files"
    title = Lang("Files", "Dateien")
    settings = ()

    def __init__(self, path: Path, config: Config, spool_dir: Path) -> None:
        super().__init__(Account(name=ACCOUNT, kind="files"), "", config)
        self.path = Path(path)
        self.spool_dir = spool_dir  # files above base.SPOOL_FROM are copied there while they are listed

    def folders(self) -> list[Folder]:
        return [Folder(str(self.path))]

    def batches(self, folder: Folder, ledger: Ledger) -> Iterator[Batch]:
        batch: list[Item] = []
        for raw in iter_files(self.path, self.spool_dir, base.SPOOL_FROM):
            batch.append(Item(raw.key, None, raw=raw))
            if len(batch) >= FILES_BATCH:
                yield Batch(batch)
                batch = []
        if batch:
            yield Batch(batch)

    def fetch(self, folder: Folder, items: list[Item], spool_dir: Path) -> list[RawMail]:
        return [i.raw for i in items if i.raw is not None]
