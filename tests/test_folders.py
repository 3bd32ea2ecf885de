"""Folder names as a mail client shows them, mapped to a server's namespace (RFC 2342) and back."""

from __future__ import annotations

import pytest

from archivista_mail.folders import FolderNameError, Namespace, check_folder_name

DOVECOT = Namespace("", ".")  # Dovecot's default Maildir++ namespace
CYRUS = Namespace("INBOX.", ".")  # Cyrus (Debian defaults) and Courier
SLASH = Namespace("", "/")  # Dovecot with "/", Cyrus with unixhierarchysep, Exchange


@pytest.mark.parametrize("namespace,written,server", [
    (CYRUS, "INBOX", "INBOX"),
    (CYRUS, "inbox", "INBOX"),
    (CYRUS, "Entwürfe", "INBOX.Entwürfe"),
    (CYRUS, "Archiv/Alt", "INBOX.Archiv.Alt"),
    (CYRUS, "INBOX/Entwürfe", "INBOX.Entwürfe"),
    (CYRUS, "INBOX.Entwürfe", "INBOX.Entwürfe"),  # the server's own spelling keeps working
    (DOVECOT, "Archiv/Alt", "Archiv.Alt"),
    (DOVECOT, "INBOX/Sub", "INBOX.Sub"),
    (SLASH, "Archiv/Alt", "Archiv/Alt"),
    (SLASH, "Rechnungen 2024.01", "Rechnungen 2024.01"),
    (Namespace("", None), "a/b", "a/b"),  # a flat server: "/" is just a character
])
def test_names_written_as_a_client_shows_them_map_to_the_servers_names(namespace, written, server):
    assert namespace.to_server(written) == server


@pytest.mark.parametrize("namespace,server,shown", [
    (CYRUS, "INBOX", "INBOX"),
    (CYRUS, "INBOX.Archiv.Alt", "Archiv/Alt"),
    (DOVECOT, "Archiv.Alt", "Archiv/Alt"),
    (DOVECOT, "INBOX.Sub", "INBOX/Sub"),
    (SLASH, "Archiv/Alt", "Archiv/Alt"),
])
def test_server_names_are_shown_as_a_client_shows_them_and_map_back(namespace, server, shown):
    assert namespace.to_display(server) == shown
    assert namespace.to_server(shown) == server


def test_a_name_holding_the_servers_separator_cannot_exist_and_the_error_says_what_to_write():
    with pytest.raises(FolderNameError) as e:
        CYRUS.to_server("Rechnungen 2024.01")
    assert "separates folder levels with '.'" in str(e.value) and "(Rechnungen 2024/01)" in str(e.value)


@pytest.mark.parametrize("name", ["", "  ", "/Archiv", "Archiv/", "Archiv//Alt", "Bad\x00Name", "a\u202eb"])
def test_names_no_server_can_hold_are_refused_without_a_server(name):
    with pytest.raises(FolderNameError):
        check_folder_name(name)


def test_account_add_refuses_a_folder_name_no_server_can_hold(run):
    result = run("account", "add", "imap", "x", "--host", "h", "--user", "u", "--password-stdin",
                 "--folder", "Archiv//Alt", input="pw\n")
    assert result.exit_code == 2
    assert "'Archiv//Alt' has an empty level" in result.output
