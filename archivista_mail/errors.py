"""The exceptions archivista-mail raises; foreign exceptions are translated into these at the adapters.

Their sentences are English. Those a WebAdmin user can meet are written with ``t()``: an English
template with named placeholders (gettext's ``%(name)s``) and its values, so WebAdmin shows the
same sentence from its German catalogue (``make messages`` extracts ``t("...")`` from here too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Text:
    """A sentence to be shown in the reader's language: an English template and its values.

    ``str()`` gives the English sentence (the CLI, logs, the run records); ``translated(gettext)``
    the sentence from a catalogue, its values translated too where they are Texts themselves.
    """

    __slots__ = ("template", "params")

    def __init__(self, template: str, params: dict[str, Any]) -> None:
        self.template = template
        self.params = params

    def __str__(self) -> str:
        values = {k: v.en if hasattr(v, "en") and hasattr(v, "de") else str(v) for k, v in self.params.items()}
        return self.template % values if self.params else self.template

    def __repr__(self) -> str:
        return f"Text({str(self)!r})"

    def __add__(self, other: object) -> str:  # "..." + text, as with a plain string
        return str(self) + str(other)

    def __radd__(self, other: object) -> str:
        return str(other) + str(self)

    def translated(self, gettext: Callable[[str], str], lang: str = "en") -> str:
        """The sentence from ``gettext``'s catalogue (the English one where it has none)."""
        values = {k: _translated_value(v, gettext, lang) for k, v in self.params.items()}
        template = gettext(self.template)
        try:
            return template % values if values else template
        except (KeyError, ValueError, TypeError):  # a broken translation must not hide the message
            return str(self)


def _translated_value(value: Any, gettext: Callable[[str], str], lang: str) -> str:
    """A placeholder's value in the reader's language: a Text from the catalogue, a declared two-language
    label (sources' ``Lang``: ``.en`` and ``.de``) by its attribute, anything else as it is."""
    if isinstance(value, Text):
        return value.translated(gettext, lang)
    if hasattr(value, "en") and hasattr(value, "de"):
        return str(getattr(value, lang, value.en))
    return str(value)


def t(template: str, **params: Any) -> Text:
    """Mark an English sentence for translation: ``t("Account %(name)s: ...", name=acc.name)``."""
    return Text(template, params)


def escaped(value: object) -> str:
    """``value`` as ``repr`` shows a string, without its quotes: unprintable characters escaped (``\\x1b``).

    For what a person typed, quoted in a sentence (``'%(name)s'`` where an f-string had ``{name!r}``):
    a control or bidi character in a name can then neither hide nor reorder the sentence on a
    terminal or a page."""
    text = str(value)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ArchivistaMailError(Exception):
    """Base class: every error we raise on purpose. Its message is a sentence for a person.

    ``public`` is the same sentence without anything a server sent (its reasons, greetings,
    folder names): what WebAdmin shows, so its connection test cannot read other services' banners.
    """

    def __init__(self, message: str | Text = "", *, public: str | Text | None = None) -> None:
        super().__init__(str(message))
        self.text = message
        self.public_text = message if public is None else public

    @property
    def public(self) -> str:
        """The sentence without what a server sent, in English."""
        return str(self.public_text)

    def localized(self, gettext: Callable[[str], str], public: bool = False, lang: str = "en") -> str:
        """The sentence (or its public form) in the language of ``gettext``; English for plain strings."""
        text = self.public_text if public else self.text
        return text.translated(gettext, lang) if isinstance(text, Text) else str(text)


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
