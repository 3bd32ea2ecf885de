"""The exceptions archivista-mail raises; foreign exceptions are translated into these at the adapters."""


class ArchivistaMailError(Exception):
    """Base class: every error we raise on purpose. Its message is a sentence for a person.

    ``public`` is the same sentence without anything a server sent (its reasons, greetings,
    folder names): what WebAdmin shows, so its connection test cannot read other services' banners.
    """

    def __init__(self, message: str = "", *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = message if public is None else public


class ConfigError(ArchivistaMailError):
    """Raised when the configuration or an account's settings cannot be used as given."""


class SourceError(ArchivistaMailError):
    """Raised when a mail source (server or files) cannot be reached or read."""


class AuthError(SourceError):
    """Raised when a server rejects the account's credentials."""


class ConnectError(SourceError):
    """Raised when a server cannot be reached or its TLS certificate is not trusted."""


class FolderError(SourceError):
    """Raised when a configured folder does not exist on the server."""


class FolderSkippedError(SourceError):
    """Raised when a configured folder cannot hold mail itself (``\\Noselect``): skipped with a warning."""


class ActionRefusedError(SourceError):
    """Raised when a server refuses an after-archive action; the mails stay archived and the action owed."""


class FetchError(SourceError):
    """Raised when the connection fails while mail is being fetched or acted on."""


class ArchiveError(ArchivistaMailError):
    """Raised when the archive cannot store or read a document."""


class NotFoundError(ArchiveError):
    """Raised when a document number does not exist in the archive."""


class SecretError(ArchivistaMailError):
    """Raised when a stored secret cannot be decrypted with the key file."""
