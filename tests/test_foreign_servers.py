"""Smoke tests of the Courier and Cyrus fixtures with the real client libraries (imapclient, poplib).

They also pin down what these servers (Debian 12: Courier-IMAP 5.0.13, Courier-POP3 1.0.16 and
authlib 0.71.4 with userdb; Cyrus IMAP 3.6.1 with sasldb) do where they differ from Dovecot, so the
importer's tests can rely on it. Needs root and ``make foreign-servers``.
"""

from __future__ import annotations

import os
import poplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from foreign_servers import Courier, Cyrus
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

ASCII_PASSWORD = "s3cret-Pa55"
UTF8_PASSWORD = "pässwörd-Ä1"
USERS = {
    "alice": ASCII_PASSWORD,   # LOGIN, folders
    "joerg": UTF8_PASSWORD,    # AUTHENTICATE PLAIN / POP3 PASS with a non-ASCII password
    "fetch": ASCII_PASSWORD,   # byte-for-byte FETCH
    "select": ASCII_PASSWORD,  # SELECT/STATUS answers
    "popu8": UTF8_PASSWORD,    # POP3 with raw 8-bit headers
    "popseen": ASCII_PASSWORD,  # POP3 RETR and the \\Seen flag
}

ASCII_MAIL = (b"From: Anna <anna@example.com>\r\nTo: alice@example.com\r\nSubject: plain\r\n"
              b"Message-ID: <ascii-1@example.com>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody line\r\n")
# Raw (unencoded) UTF-8 in the headers, as some mailers send it.
UTF8_MAIL = ("From: Jörg <j@example.com>\r\nTo: popu8@example.com\r\nSubject: Grüße\r\n"
             "Message-ID: <utf8-1@example.com>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
             "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
             "Hallo Jörg, schöne Grüße.\r\n").encode()


@pytest.fixture(scope="module")
def courier():
    try:
        server = Courier(USERS).start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()


def context(server) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.cert))


def imaps(server, user: str) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True, ssl_context=context(server), timeout=10)
    client.login(user, USERS[user])
    return client


def pop3s(server, user: str) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=context(server), timeout=10)
    client.user(user)
    client.pass_(USERS[user])
    return client


def instance_pids(server) -> list[int]:
    """PIDs (host view) of unshare and the processes in its namespace (their command lines name its dir)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(server.dir).encode() in cmdline:
                pids.append(int(entry))
    return pids


def test_starts_in_seconds_and_stop_ends_every_process():
    server = Courier({"someone": ASCII_PASSWORD})
    try:
        server.start()
        assert server.start_seconds < 5
        assert len(instance_pids(server)) >= 6  # unshare, bash (PID 1 inside), four couriertcpd
    finally:
        began = time.monotonic()
        server.stop(keep_logs=True)
        stopped = time.monotonic() - began
    try:
        assert stopped < 2
        time.sleep(0.1)
        assert instance_pids(server) == []
        for port in server.ports.values():
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    finally:
        server.stop()  # removes the directory


def test_missing_tree_says_what_to_run(monkeypatch, tmp_path):
    import foreign_servers

    monkeypatch.setattr(foreign_servers, "ROOT", tmp_path / "root")
    for server in (Courier, Cyrus):
        with pytest.raises(RuntimeError, match=r"^[^\n]*run 'make foreign-servers'$"):
            server({"someone": ASCII_PASSWORD})


def test_imaps_login_ascii_and_authenticate_plain_non_ascii(courier):
    with imaps(courier, "alice") as client:
        caps = set(client.capabilities())
        # What this Courier offers: no MOVE, no CONDSTORE, no SPECIAL-USE; UTF8=ACCEPT; AUTH=PLAIN over TLS.
        assert {b"IMAP4REV1", b"UIDPLUS", b"NAMESPACE", b"IDLE", b"ACL", b"ENABLE", b"UTF8=ACCEPT",
                b"AUTH=PLAIN"} <= caps
        assert not caps & {b"MOVE", b"CONDSTORE", b"SPECIAL-USE", b"LITERAL+", b"STARTTLS"}
    with IMAPClient("127.0.0.1", port=courier.ports["imaps"], ssl=True, ssl_context=context(courier)) as client:
        assert client.plain_login("joerg", UTF8_PASSWORD) == b"LOGIN Ok."
    with IMAPClient("127.0.0.1", port=courier.ports["imaps"], ssl=True, ssl_context=context(courier)) as client:
        with pytest.raises(UnicodeEncodeError):  # imaplib sends LOGIN arguments as ASCII: never reaches the server
            client.login("joerg", UTF8_PASSWORD)


def test_starttls_on_the_plain_ports(courier):
    with IMAPClient("127.0.0.1", port=courier.ports["imap"], ssl=False, timeout=10) as client:
        before = set(client.capabilities())
        assert b"STARTTLS" in before and b"AUTH=PLAIN" not in before and b"LOGINDISABLED" not in before
        client.starttls(context(courier))
        assert b"AUTH=PLAIN" in client.capabilities()
        assert client.plain_login("joerg", UTF8_PASSWORD) == b"LOGIN Ok."
    client = poplib.POP3("127.0.0.1", courier.ports["pop3"], timeout=10)
    assert "STLS" in client.capa()
    client.stls(context(courier))
    client.user("joerg")
    assert client.pass_(UTF8_PASSWORD) == b"+OK logged in."
    client.quit()


def test_wrong_passwords_are_refused_after_five_seconds(courier):
    def imap_attempt():
        with IMAPClient("127.0.0.1", port=courier.ports["imaps"], ssl=True, ssl_context=context(courier)) as c:
            with pytest.raises(LoginError):
                c.plain_login("joerg", "pässwörd-Ä2")

    def pop3_attempt():
        c = poplib.POP3_SSL("127.0.0.1", courier.ports["pop3s"], context=context(courier), timeout=20)
        c.user("joerg")
        with pytest.raises(poplib.error_proto, match="Login failed"):
            c.pass_("wrong")
        c.close()

    began = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(imap_attempt), pool.submit(pop3_attempt)]:
            future.result()
    assert 4.5 < time.monotonic() - began < 10  # Courier's fixed delay after a failed login (not configurable)


def test_namespace_separator_and_implicit_noselect_parent(courier):
    path = courier.create_folder("alice", "INBOX.Kunden.2024")
    assert path == courier.home("alice") / "Maildir" / ".Kunden.2024"
    assert path.stat().st_uid == courier.uid and (path / "new").stat().st_uid == courier.uid
    with imaps(courier, "alice") as client:
        personal, _other, _shared = client.namespace()
        assert personal == (("INBOX.", "."),)
        folders = {name: set(flags) for flags, delimiter, name in client.list_folders()}
        assert {delimiter for _f, delimiter, _n in client.list_folders()} == {b"."}
        assert folders["INBOX.Kunden.2024"] == {b"\\HasNoChildren"}
        assert folders["INBOX.Kunden"] == {b"\\Noselect", b"\\HasChildren"}  # no such directory exists
        assert b"\\HasChildren" in folders["INBOX"]
        with pytest.raises(IMAPClient.Error, match="does not exist"):
            client.select_folder("INBOX.Kunden")
        with pytest.raises(IMAPClient.Error, match="Invalid mailbox name"):
            client.create_folder("Kunden")  # everything lives under INBOX.
        with pytest.raises(IMAPClient.Error, match="Invalid mailbox name"):
            client.create_folder("INBOX.a/b")
        client.create_folder('INBOX.Team "Nord"')
        client.create_folder("INBOX.Grüße")
    # Courier 5 stores folder names as UTF-8 directory names (not modified UTF-7).
    assert {".Kunden.2024", '.Team "Nord"', ".Grüße"} <= set(os.listdir(courier.home("alice") / "Maildir"))


def test_select_answers_without_uidnext(courier):
    courier.deliver("select", ASCII_MAIL)
    with imaps(courier, "select") as client:
        answer = client.select_folder("INBOX")
        assert set(answer) == {b"PERMANENTFLAGS", b"FLAGS", b"EXISTS", b"RECENT", b"UIDVALIDITY", b"MYRIGHTS",
                               b"READ-WRITE"}
        assert b"UIDNEXT" not in answer and answer[b"EXISTS"] == 1
        assert answer[b"MYRIGHTS"] == [b'"acdilrsw"']
        status = client.folder_status("INBOX", [b"UIDNEXT", b"UIDVALIDITY", b"MESSAGES"])
        assert status[b"UIDNEXT"] == 2 and status[b"UIDVALIDITY"] == answer[b"UIDVALIDITY"]


def test_fetch_body_peek_is_byte_for_byte(courier):
    courier.deliver("fetch", ASCII_MAIL)
    courier.deliver("fetch", UTF8_MAIL, folder="INBOX.Archiv.2023")
    with imaps(courier, "fetch") as client:
        client.select_folder("INBOX", readonly=True)
        data = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS"])
        assert [d[b"BODY[]"] for d in data.values()] == [ASCII_MAIL]
        assert [d[b"FLAGS"] for d in data.values()] == [(b"\\Recent",)]
        client.select_folder("INBOX.Archiv.2023")
        (uid,) = client.search("ALL")
        data = client.fetch([uid], ["BODY.PEEK[]", "ENVELOPE", "FLAGS"])[uid]
        assert data[b"BODY[]"] == UTF8_MAIL  # raw 8-bit headers served as they are, without ENABLE
        assert data[b"ENVELOPE"].subject == b"=?utf-8?B?R3LDvMOfZQ==?="  # ENVELOPE encodes them (RFC 2047)
        assert b"\\Seen" not in data[b"FLAGS"]
    with imaps(courier, "fetch") as client:
        assert client.enable("UTF8=ACCEPT") == [b"UTF8=ACCEPT"]
        client.select_folder("INBOX.Archiv.2023", readonly=True)
        (uid,) = client.search("ALL")
        assert client.fetch([uid], ["ENVELOPE"])[uid][b"ENVELOPE"].subject == "Grüße".encode()


def test_imapclient_folder_names_after_enable_utf8(courier):
    """imapclient pitfall: it keeps modified UTF-7 folder names after ENABLE UTF8=ACCEPT."""
    courier.create_folder("fetch", "INBOX.Grüße")  # Courier 5 stores the name as UTF-8
    with imaps(courier, "fetch") as client:
        assert "INBOX.Grüße" in [name for _f, _d, name in client.list_folders()]
    with imaps(courier, "fetch") as client:
        client.enable("UTF8=ACCEPT")
        names = [name for _f, _d, name in client.list_folders()]
        assert "INBOX.Grüße".encode().decode("latin-1") in names  # raw UTF-8 decoded as Latin-1
        client.create_folder("INBOX.Neu-ä")  # sent as INBOX.Neu-&AOQ-, which Courier now takes literally
        assert "INBOX.Neu-ä" in [name for _f, _d, name in client.list_folders()]  # round trip hides it
    assert (courier.home("fetch") / "Maildir" / ".Neu-&AOQ-").is_dir()


def test_pop3s_non_ascii_login_and_capabilities(courier):
    client = pop3s(courier, "joerg")
    capa = client.capa()
    assert capa["UTF8"] == ["USER"]  # RFC 6856, advertised before and after login
    assert capa["IMPLEMENTATION"] == ["Courier", "Mail", "Server"]
    assert "SASL" not in capa and "STLS" not in capa  # Debian: POP3AUTH="" (USER/PASS only); already TLS
    assert client.stat() == (0, 0)
    client.quit()


def test_pop3_raw_8bit_headers_need_utf8(courier):
    courier.deliver("popu8", UTF8_MAIL)
    client = pop3s(courier, "popu8")
    _, lines, _ = client.retr(1)
    substitute = b"\r\n".join(lines)
    assert b"Subject: Cannot display Unicode content" in substitute
    assert b"From: Mail Delivery Subsystem <postmaster>" in substitute
    assert b"Content-Type: message/global" in substitute  # the original, attached
    assert UTF8_MAIL.rstrip(b"\r\n") in substitute
    client.quit()

    client = poplib.POP3_SSL("127.0.0.1", courier.ports["pop3s"], context=context(courier), timeout=10)
    assert client.utf8() == b"+OK UTF8 enabled"  # before USER/PASS (RFC 6856)
    client.user("popu8")
    client.pass_(USERS["popu8"])
    _, lines, _ = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == UTF8_MAIL
    client.quit()


def test_pop3_retr_marks_seen_even_without_quit(courier):
    cur = courier.home("popseen") / "Maildir" / "cur"
    for i in range(3):
        courier.deliver("popseen", ASCII_MAIL.replace(b"ascii-1", f"seen-{i}".encode()))
    client = pop3s(courier, "popseen")
    client.top(3, 0)
    client.retr(1)
    client.dele(2)
    client.file.close()
    client.sock.close()  # the connection drops: no QUIT
    time.sleep(0.3)
    names = sorted(os.listdir(cur))
    assert [n.split(":")[1] for n in names] == ["2,S", "2,", "2,"]  # RETR set \Seen at once; TOP did not
    assert os.listdir(cur.parent / "new") == []  # the POP3 login moved new/ to cur/
    client = pop3s(courier, "popseen")
    assert client.stat()[0] == 3  # DELE without QUIT is forgotten
    client.quit()
    with imaps(courier, "popseen") as imap:
        imap.select_folder("INBOX", readonly=True)
        flags = imap.get_flags(imap.search("ALL"))
        assert [b"\\Seen" in f for f in flags.values()] == [True, False, False]


# Cyrus IMAP 3.6 (Debian 12) ---------------------------------------------------------------------

CYRUS_USERS = {
    "anna": ASCII_PASSWORD,    # LOGIN, folders, ACL
    "joerg": UTF8_PASSWORD,    # AUTHENTICATE PLAIN / POP3 PASS with a non-ASCII password
    "eight": ASCII_PASSWORD,   # 8-bit headers
    "pop": UTF8_PASSWORD,      # POP3 (one login a minute: popminpoll)
}


def munged(raw: bytes) -> bytes:
    """What Cyrus's munge8bit makes of a message: each 8-bit byte in the header becomes X."""
    header, body = raw.split(b"\r\n\r\n", 1)
    return bytes(b if b < 0x80 else ord("X") for b in header) + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def cyrus():
    try:
        server = Cyrus(CYRUS_USERS).start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()


def cyrus_imaps(server, user: str) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True, ssl_context=context(server), timeout=10)
    client.plain_login(user, CYRUS_USERS[user])
    return client


def test_cyrus_debian_namespace_and_folder_names(cyrus):
    assert cyrus.start_seconds < 5
    cyrus.create_folder("anna", "INBOX.Kunden.2024")
    with cyrus_imaps(cyrus, "anna") as client:
        assert client.namespace() == ((("INBOX.", "."),), (("user.", "."),), (("", "."),))
        folders = {name: set(flags) for flags, _d, name in client.list_folders()}
        assert folders["INBOX.Kunden.2024"] == {b"\\HasNoChildren"}
        assert folders["INBOX.Kunden"] == {b"\\HasChildren"}  # Cyrus creates the parent: a real, empty folder
        assert client.select_folder("INBOX.Kunden")[b"EXISTS"] == 0
        for bad in ('INBOX.Team "Nord"', "INBOX.a/b"):
            with pytest.raises(IMAPClient.Error, match="Invalid mailbox name"):
                client.create_folder(bad)
        with pytest.raises(IMAPClient.Error, match="Permission denied"):
            client.create_folder("Kunden")  # a top-level (shared) folder: users may not
        client.create_folder("INBOX.Grüße")
        assert "INBOX.Grüße" in [name for _f, _d, name in client.list_folders()]


def test_cyrus_logins(cyrus):
    with IMAPClient("127.0.0.1", port=cyrus.ports["imaps"], ssl=True, ssl_context=context(cyrus)) as client:
        assert b"User logged in" in client.login("anna", ASCII_PASSWORD)
    with IMAPClient("127.0.0.1", port=cyrus.ports["imaps"], ssl=True, ssl_context=context(cyrus)) as client:
        assert b"Success" in client.plain_login("joerg", UTF8_PASSWORD)
    with IMAPClient("127.0.0.1", port=cyrus.ports["imap"], ssl=False) as client:
        assert {b"STARTTLS", b"AUTH=PLAIN"} <= set(client.capabilities())  # Debian: allowplaintext: yes
        client.starttls(context(cyrus))
        client.plain_login("joerg", UTF8_PASSWORD)
    began = time.monotonic()
    with IMAPClient("127.0.0.1", port=cyrus.ports["imaps"], ssl=True, ssl_context=context(cyrus)) as client:
        with pytest.raises(LoginError):
            client.plain_login("joerg", "pässwörd-Ä2")
    assert 2.5 < time.monotonic() - began < 6  # failedloginpause: 3 (Cyrus default; configurable)


def test_cyrus_select_and_8bit_headers(cyrus):
    cyrus.deliver("eight", ASCII_MAIL)
    cyrus.deliver("eight", UTF8_MAIL)
    with cyrus_imaps(cyrus, "eight") as client:
        caps = set(client.capabilities())
        assert {b"MOVE", b"CONDSTORE", b"QRESYNC", b"SPECIAL-USE", b"LITERAL+"} <= caps
        assert b"UTF8=ACCEPT" not in caps
        answer = client.select_folder("INBOX", readonly=True)
        assert answer[b"UIDNEXT"] == 3 and answer[b"EXISTS"] == 2 and b"HIGHESTMODSEQ" in answer
        data = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
        bodies = [d[b"BODY[]"] for d in data.values()]
        assert bodies == [ASCII_MAIL, munged(UTF8_MAIL)]  # munge8bit on APPEND: Subject: GrXXXXe
        assert b"Subject: GrXXXXe\r\n" in bodies[1] and "schöne".encode() in bodies[1]


def test_cyrus_pop3(cyrus):
    cyrus.deliver("pop", UTF8_MAIL)
    client = poplib.POP3_SSL("127.0.0.1", cyrus.ports["pop3s"], context=context(cyrus), timeout=10)
    capa = client.capa()
    assert capa["SASL"] == ["PLAIN", "LOGIN"] and capa["LOGIN-DELAY"] == ["60"] and "UTF8" not in capa
    client.user("pop")
    assert client.pass_(UTF8_PASSWORD).startswith(b"+OK Mailbox locked and ready")
    _, lines, _ = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == munged(UTF8_MAIL)
    client.quit()
    with cyrus_imaps(cyrus, "pop") as imap:
        imap.select_folder("INBOX", readonly=True)
        assert [b"\\Seen" in f for f in imap.get_flags(imap.search("ALL")).values()] == [False]  # RETR: still unseen
    client = poplib.POP3_SSL("127.0.0.1", cyrus.ports["pop3s"], context=context(cyrus), timeout=10)
    client.user("pop")
    with pytest.raises(poplib.error_proto, match=r"LOGIN-DELAY.*1 minute"):  # Debian: popminpoll: 1
        client.pass_(UTF8_PASSWORD)
    client.close()


def test_cyrus_acl_can_forbid_expunge(cyrus):
    cyrus.deliver("anna", ASCII_MAIL, folder="INBOX.Locked")
    cyrus.set_acl("anna", "INBOX.Locked", "anna", "lrswa")
    with cyrus_imaps(cyrus, "anna") as client:
        assert client.getacl("INBOX.Locked") == [(b"anna", b"lrswkxcan")]  # the owner keeps k x c a n
        answer = client.select_folder("INBOX.Locked")
        assert b"\\Deleted" not in answer[b"PERMANENTFLAGS"]
        (uid,) = client.search("ALL")
        with pytest.raises(IMAPClient.Error, match="Permission denied"):
            client.add_flags([uid], [b"\\Deleted"])
        with pytest.raises(IMAPClient.Error, match="Permission denied"):
            client.expunge()
        with pytest.raises(IMAPClient.Error, match="Permission denied"):
            client.move([uid], "INBOX")
        assert client.search("ALL") == [uid]


def test_cyrus_altnamespace_with_unix_separator():
    try:
        server = Cyrus({"anna": ASCII_PASSWORD}, unixhierarchysep=True, altnamespace=True).start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        server.create_folder("anna", "Kunden/2024")
        server.deliver("anna", ASCII_MAIL, folder="Kunden/2024")
        with cyrus_imaps(server, "anna") as client:
            assert client.namespace() == ((("", "/"),), (("Other Users/", "/"),), (("Shared Folders/", "/"),))
            client.create_folder("a.b")  # "." is an ordinary character here
            with pytest.raises(IMAPClient.Error, match="Invalid mailbox name"):
                client.create_folder('Team "Nord"')
            folders = {name: set(flags) for flags, delimiter, name in client.list_folders()}
            assert {"INBOX", "Kunden", "Kunden/2024", "a.b"} <= set(folders)
            assert folders["Kunden"] == {b"\\HasChildren"}
            client.select_folder("Kunden/2024", readonly=True)
            data = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
            assert [d[b"BODY[]"] for d in data.values()] == [ASCII_MAIL]
    finally:
        server.stop()
