"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key file created 0600 on first use.

Each secret is sealed together with the endpoint it was entered for (an account's kind, server,
port, security and user; tenant and client ID for Microsoft 365), and is only ever opened for
that endpoint: whoever changes an account's server must enter its password again, so no code
path can send a stored secret anywhere else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken

from .errors import SecretError, t

if TYPE_CHECKING:
    from .accounts import Account


class Vault:
    """Encrypts and decrypts account secrets with the key in ``key_path``."""

    def __init__(self, key_path: Path) -> None:
        self.key_path = Path(key_path)
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:
            self._fernet = Fernet(load_or_create_key(self.key_path))
        return self._fernet

    def encrypt(self, secret: str, endpoint: str) -> str:
        """The secret, bound to ``endpoint`` (see Account.endpoint), as an encrypted token safe to store."""
        sealed = json.dumps({"secret": secret, "endpoint": endpoint}, ensure_ascii=False)
        return self._key().encrypt(sealed.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str, endpoint: str) -> str:
        """The secret behind a token, only for the endpoint it was entered for; raises SecretError otherwise."""
        secret, bound = self._open(token)
        if bound is not None and bound != endpoint:
            raise SecretError(t("The stored password or secret was entered for another server, user or tenant than "
                                "the account names now, and is only ever sent to that one. Enter it again."))
        return secret

    def seal(self, account: Account, secret: str) -> Account:
        """The account with ``secret`` stored in it, bound to the account's endpoint."""
        secret = account.source.check_secret(account, secret)
        return replace(account, secret=self.encrypt(secret, account.endpoint))

    def secret_of(self, account: Account) -> str:
        """The account's secret; raises SecretError if it was entered for another endpoint."""
        return self.decrypt(account.secret, account.endpoint)

    def is_bound(self, token: str) -> bool:
        """False for tokens stored before secrets were bound to their endpoint (see bind_legacy_secrets)."""
        return self._open(token)[1] is not None

    def _open(self, token: str) -> tuple[str, str | None]:
        try:
            plain = self._key().decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError) as e:
            raise SecretError(t("A stored secret cannot be decrypted with the key in %(path)s. The key file was "
                                "replaced or damaged: restore it from backup, or set the account's password again.",
                                path=self.key_path)) from e
        try:
            sealed = json.loads(plain)
        except ValueError:
            sealed = None
        if isinstance(sealed, dict) and set(sealed) == {"secret", "endpoint"}:
            return sealed["secret"], sealed["endpoint"]
        return plain, None  # stored before binding


def secret_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """A secret file's content; created with ``make()`` if missing: mode 0600, atomically (O_EXCL: when two
    processes race, the second reads the first one's file), flushed to disk before it is used."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race; use its secret
        return path.read_bytes()
    content = make()
    with os.fdopen(fd, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    return content


def load_or_create_key(path: Path) -> bytes:
    """The key that encrypts stored secrets: read, or created 0600 on first use."""
    return secret_file(path, Fernet.generate_key).strip()


def mask(secret: str | None) -> str:
    """What a person may see of a secret: that it is set, never its characters."""
    return "********" if secret else "(not set)"


def hash_password(password: str) -> str:
    """A WebAdmin password's salted hash (Werkzeug's scrypt); the password itself is never stored."""
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method="scrypt")
