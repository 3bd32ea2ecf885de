"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key file created 0600 on first use."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .errors import SecretError


class Vault:
    """Encrypts and decrypts account secrets with the key in ``key_path``."""

    def __init__(self, key_path: Path) -> None:
        self.key_path = Path(key_path)
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:
            self._fernet = Fernet(load_or_create_key(self.key_path))
        return self._fernet

    def encrypt(self, secret: str) -> str:
        """The secret as an encrypted token safe to store."""
        return self._key().encrypt(secret.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The secret behind a token; raises SecretError if the key does not fit."""
        try:
            return self._key().decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError) as e:
            raise SecretError(f"A stored secret cannot be decrypted with the key in {self.key_path}. "
                              "The key file was replaced or damaged: restore it from backup, or set "
                              "the account's password again.") from e


def load_or_create_key(path: Path) -> bytes:
    """Read the key file; create it (mode 0600, atomically) if it does not exist yet."""
    path = Path(path)
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race; use its key
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key


def mask(secret: str | None) -> str:
    """What a person may see of a secret: that it is set, never its characters."""
    return "********" if secret else "(not set)"


def hash_password(password: str) -> str:
    """A WebAdmin password's salted hash (Werkzeug's scrypt); the password itself is never stored."""
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method="scrypt")
