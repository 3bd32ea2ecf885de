"""archivista-mail: archive IMAP, POP3 and Microsoft 365 mail into a document archive."""

__version__ = "0.1.0"
