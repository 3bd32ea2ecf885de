"""Exchange (EWS): the real exchangelib against the EWS emulator.

Each test gets its own emulator on its own port, so exchangelib's protocol cache (keyed by endpoint and credentials,
ignoring auth type and retry policy) never hands one test's settings to another; the cache is cleared afterwards.
"""

from __future__ import annotations

import base64
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
import requests.adapters
from ews_emulator import EwsEmulator
from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    Account,
    Configuration,
    Credentials,
    FaultTolerance,
    Folder,
)
from exchangelib.errors import (
    ErrorAccessDenied,
    ErrorFolderExists,
    ErrorImpersonateUserDenied,
    ErrorInvalidSyncStateData,
    ErrorIrresolvableConflict,
    ErrorItemNotFound,
    ErrorNonExistentMailbox,
    ErrorServerBusy,
    ErrorTimeoutExpired,
    RateLimitError,
    UnauthorizedError,
)
from exchangelib.folders import DeletedItems, FolderCollection, Inbox, Messages, SentItems
from exchangelib.items import HARD_DELETE, SOFT_DELETE
from exchangelib.protocol import BaseProtocol, close_connections
from exchangelib.version import Build
from mailfactory import make_mail

ANNA, BERT = "anna@example.test", "bert@example.test"  # German and English mailboxes
SVC, SVC_PW = "EXAMPLE\\svc-archiv", "Dienst-Pa55"  # service account without a mailbox
ANNA_LOGIN, ANNA_PW = "EXAMPLE\\anna", "pässwörd-Ä1"


class TrustingAdapter(requests.adapters.HTTPAdapter):
    """exchangelib's HTTP_ADAPTER_CLS is process-global: verify each request against its emulator's CA."""

    ca_files: dict[str, str] = {}

    def send(self, request, **kwargs):
        ca_file = self.ca_files.get(urlsplit(request.url).netloc)
        if ca_file:
            kwargs["verify"] = ca_file
        return super().send(request, **kwargs)


@pytest.fixture
def trust(monkeypatch):
    monkeypatch.setattr(BaseProtocol, "HTTP_ADAPTER_CLS", TrustingAdapter)
    yield
    close_connections()


@pytest.fixture
def ews(trust):
    emulator = EwsEmulator().start()
    netloc = f"127.0.0.1:{emulator.port}"
    TrustingAdapter.ca_files[netloc] = str(emulator.ca_file)
    emulator.add_mailbox(ANNA, language="de")
    emulator.add_mailbox(BERT)
    emulator.add_user(SVC, SVC_PW)
    emulator.add_user(ANNA_LOGIN, ANNA_PW, mailbox=ANNA)
    yield emulator
    emulator.stop()
    TrustingAdapter.ca_files.pop(netloc, None)
    assert emulator.errors == []  # emulator bugs surface here, not as mysterious client errors


def account(ews, address=ANNA, login=ANNA_LOGIN, password=ANNA_PW, access_type=DELEGATE, auth_type=NTLM,
            retry_policy=None, **config):
    if retry_policy is not None:
        config["retry_policy"] = retry_policy
    cfg = Configuration(service_endpoint=ews.url, credentials=Credentials(login, password), auth_type=auth_type,
                        **config)
    return Account(primary_smtp_address=address, config=cfg, autodiscover=False, access_type=access_type,
                   locale="de_DE" if address == ANNA else "en_US")


def mails(count: int, start: int = 0) -> list[bytes]:
    return [make_mail(start + i, body_words=20) for i in range(count)]


def item_ids(ids: list[str]) -> list[tuple[str, None]]:
    return [(i, None) for i in ids]  # a bare string would be unpacked into characters by exchangelib


def ops(ews, name: str) -> int:
    return sum(op == name for op, _ in ews.requests)


# -- login --------------------------------------------------------------------------------------------------------
def test_version_probe_and_ntlm_login(ews):
    acc = account(ews, auth_type=None)  # exchangelib probes the offered schemes and prefers NTLM
    assert acc.protocol.auth_type == NTLM
    assert acc.version.build == Build(15, 2, 1118, 7)
    assert acc.version.api_version == "Exchange2016"  # "V2017_07_11" from the header is not a request version
    assert acc.inbox.name == "Posteingang"
    assert acc.inbox.total_count == 0
    assert ews.requests[0] == ("ConvertId", None)  # the version probe, before any mailbox
    assert ews.requests[1:] == [("GetFolder", ANNA)] * 2  # root, then inbox (cached by the account)
    assert set(ews.auth_used) == {"ntlm"}
    assert ews.ntlm_handshakes == 1  # the connection stays authenticated across requests


def test_basic_login_with_upn(ews):
    ews.auth = {"basic"}
    ews.add_user("carla@example.test", "c-Pa55", mailbox=BERT)
    acc = account(ews, BERT, "carla@example.test", "c-Pa55", auth_type=None)
    assert acc.protocol.auth_type == BASIC
    assert acc.inbox.name == "Inbox"
    assert set(ews.auth_used) == {"basic"} and ews.ntlm_handshakes == 0


def test_basic_login_with_a_non_ascii_password(ews):
    # requests sends Basic credentials in Latin-1, IIS reads them in the server's code page (cp1252): umlauts work
    assert account(ews, auth_type=BASIC).inbox.name == "Posteingang"
    ews.add_user("EXAMPLE\\snow", "Schnee-☃", mailbox=BERT)
    with pytest.raises(UnicodeEncodeError):  # not in Latin-1: requests refuses before sending anything
        account(ews, BERT, "EXAMPLE\\snow", "Schnee-☃", auth_type=BASIC).inbox
    close_connections()  # otherwise the cached protocol (same endpoint and login) would stay on Basic
    assert account(ews, BERT, "EXAMPLE\\snow", "Schnee-☃", auth_type=NTLM).inbox.name == "Inbox"  # NTLM: UTF-16


def test_ntlm_login_with_upn(ews):
    ews.add_user("carla@example.test", "c-Pa55", mailbox=BERT)  # sent as user "carla@example.test", no domain
    assert account(ews, BERT, "carla@example.test", "c-Pa55").inbox.total_count == 0
    assert ews.ntlm_handshakes == 1


@pytest.mark.parametrize("auth_type", [NTLM, BASIC])
def test_wrong_password_is_unauthorized(ews, auth_type):
    with pytest.raises(UnauthorizedError, match="Invalid credentials"):
        account(ews, password="wrong", auth_type=auth_type).inbox
    assert ews.requests == [] and ews.auth_used == []


def test_ntlm_against_a_basic_only_server_looks_like_a_wrong_password(ews):
    ews.auth = {"basic"}
    with pytest.raises(UnauthorizedError, match="Invalid credentials"):  # requests_ntlm gives up silently
        account(ews, auth_type=NTLM).inbox
    assert ews.requests == []


def test_wrong_password_with_fault_tolerance_is_a_rate_limit_error(ews):
    # FaultTolerance takes a 401 for throttling and backs off 10 s, doubling; a max_wait below 10 s gives up at once
    with pytest.raises(RateLimitError):
        account(ews, password="wrong", retry_policy=FaultTolerance(max_wait=1)).inbox


# -- mailbox access -----------------------------------------------------------------------------------------------
def test_impersonation_granted_and_denied(ews):
    ews.grant_impersonation(SVC, [ANNA])
    anna = account(ews, ANNA, SVC, SVC_PW, access_type=IMPERSONATION)
    assert anna.inbox.name == "Posteingang"
    assert ("GetFolder", ANNA) in ews.requests
    with pytest.raises(ErrorImpersonateUserDenied, match="does not have permission to impersonate"):
        account(ews, BERT, SVC, SVC_PW, access_type=IMPERSONATION).inbox
    with pytest.raises(ErrorNonExistentMailbox):
        account(ews, "nobody@example.test", SVC, SVC_PW, access_type=IMPERSONATION).inbox
    ews.grant_impersonation(SVC, "all")
    assert account(ews, BERT, SVC, SVC_PW, access_type=IMPERSONATION).inbox.name == "Inbox"


def test_delegate_access_needs_own_mailbox_or_full_access(ews):
    assert account(ews).inbox.name == "Posteingang"  # no impersonation header: the user's own mailbox
    with pytest.raises(ErrorAccessDenied):
        account(ews, BERT).inbox
    with pytest.raises(ErrorAccessDenied):
        account(ews, ANNA, SVC, SVC_PW).inbox  # a service account has no mailbox of its own
    ews.grant_full_access(ANNA_LOGIN, [BERT])
    assert account(ews, BERT).inbox.name == "Inbox"


def test_account_without_access_type_defaults_to_impersonation(ews):
    cfg = Configuration(service_endpoint=ews.url, credentials=Credentials(ANNA_LOGIN, ANNA_PW), auth_type=NTLM)
    acc = Account(ANNA, config=cfg, autodiscover=False)  # credentials only in the config
    assert acc.access_type == IMPERSONATION
    with pytest.raises(ErrorImpersonateUserDenied):
        acc.inbox


# -- folders ------------------------------------------------------------------------------------------------------
def test_german_well_known_folders(ews):
    kunden_id = ews.add_folder(ANNA, "Posteingang/Kunden")
    ews.add_folder(ANNA, "Posteingang/Kunden/2024")
    ews.add_folder(ANNA, "Projekte")
    acc = account(ews)
    assert (acc.inbox.name, acc.trash.name, acc.sent.name, acc.drafts.name, acc.junk.name) == (
        "Posteingang", "Gelöschte Elemente", "Gesendete Elemente", "Entwürfe", "Junk-E-Mail")
    assert acc.msg_folder_root.name == "Oberste Ebene des Informationsspeichers"
    by_name = {f.name: f for f in acc.root.walk()}  # GetFolder for the distinguished ids, FindFolder Deep
    assert isinstance(by_name["Posteingang"], Inbox)
    assert isinstance(by_name["Gelöschte Elemente"], DeletedItems)
    assert isinstance(by_name["Gesendete Elemente"], SentItems)
    assert type(by_name["Kunden"]) is Messages and by_name["Kunden"].id == kunden_id
    assert by_name["Kunden"].parent.name == "Posteingang"
    assert (acc.msg_folder_root / "Posteingang" / "Kunden" / "2024").name == "2024"
    assert (acc.inbox // "Kunden").id == kunden_id  # FindFolder Shallow with a DisplayName restriction
    mail_folders = {f.name for f in acc.msg_folder_root.walk() if f.folder_class == "IPF.Note"}
    assert {"Posteingang", "Kunden", "2024", "Projekte", "Archiv"} <= mail_folders
    assert "Kalender" not in mail_folders


def test_english_names_and_paged_folder_listing(ews):
    ews.grant_full_access(ANNA_LOGIN, [BERT])
    for i in range(5):
        ews.add_folder(BERT, f"Inbox/Customer {i}")
    acc = account(ews, BERT)
    assert acc.inbox.name == "Inbox" and acc.trash.name == "Deleted Items"
    found = list(FolderCollection(account=acc, folders=[acc.inbox]).find_folders(page_size=2))  # 2 + 2 + 1
    assert sorted(f.name for f in found) == [f"Customer {i}" for i in range(5)]
    assert ops(ews, "FindFolder") == 3


def test_create_folder(ews):
    acc = account(ews)
    Folder(parent=acc.inbox, name="Neu").save()
    assert ews.folder_id(ANNA, "Posteingang/Neu")
    with pytest.raises(ErrorFolderExists):
        Folder(parent=acc.inbox, name="neu").save()


# -- sync and fetch -----------------------------------------------------------------------------------------------
def test_sync_items_returns_creates_then_nothing_then_changes(ews):
    ids = ews.deliver(ANNA, mails(7))
    inbox = account(ews).inbox
    assert inbox.item_sync_state is None
    changes = list(inbox.sync_items(only_fields=["subject", "is_read", "datetime_received", "size"],
                                    max_changes_returned=3))
    assert [kind for kind, _ in changes] == ["create"] * 7
    assert [item.id for _, item in changes] == ids
    assert changes[0][1].subject and changes[0][1].size == len(mails(1)[0]) and changes[0][1].is_read is False
    assert changes[0][1].mime_content is None  # SyncFolderItems never carries MIME
    assert ops(ews, "SyncFolderItems") == 3  # 3 + 3 + 1, following IncludesLastItemInRange
    first_state = inbox.item_sync_state
    assert first_state and base64.b64decode(first_state)[:3] == b"\x1f\x8b\x08"  # opaque gzip+base64, as Exchange
    assert list(inbox.sync_items()) == []
    ews.set_read(ids[0])
    ews.remove(ANNA, ids[1])
    new = ews.deliver(ANNA, mails(1, start=7))
    changes = list(inbox.sync_items(only_fields=["subject"]))
    kinds = {kind: item for kind, item in changes}
    assert set(kinds) == {"create", "delete", "read_flag_change"}
    assert kinds["create"].id == new[0]
    assert kinds["delete"].id == ids[1]
    assert kinds["read_flag_change"][0].id == ids[0] and kinds["read_flag_change"][1] is True
    assert list(inbox.sync_items(sync_state=first_state))  # an older state stays usable
    assert list(inbox.sync_items()) == []


def test_invalid_sync_state(ews):
    ews.deliver(ANNA, mails(3))
    inbox = account(ews).inbox
    assert len(list(inbox.sync_items())) == 3
    stale = inbox.item_sync_state
    ews.invalidate_sync_states()
    with pytest.raises(ErrorInvalidSyncStateData, match="corrupt or otherwise invalid"):
        list(inbox.sync_items())
    assert inbox.item_sync_state == stale  # exchangelib keeps the stale state: reset it before the resync
    inbox.item_sync_state = None
    assert len(list(inbox.sync_items())) == 3
    with pytest.raises(ErrorInvalidSyncStateData):
        list(inbox.sync_items(sync_state=base64.b64encode(b"garbled").decode()))
    with pytest.raises(ErrorInvalidSyncStateData):
        list(account(ews).trash.sync_items(sync_state=inbox.item_sync_state))  # another folder's state


def test_fetch_mime_content_returns_the_exact_bytes(ews):
    raw = [make_mail(0, attachment="pdf"), make_mail(1, attachment="docx"), *mails(2, start=2),
           b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\nSubject: Gr\xfc\xdfe 8-bit\r\n\r\nK\xe4se\n\x00\r\n"]
    ids = ews.deliver(ANNA, raw)
    acc = account(ews)
    fetched = list(acc.fetch(item_ids(ids), only_fields=["mime_content"], chunk_size=2))
    assert [item.mime_content for item in fetched] == raw
    assert ops(ews, "GetItem") == 3  # batches of chunk_size
    ews.remove(ANNA, ids[1])
    result = list(acc.fetch(item_ids(ids[:2]), only_fields=["mime_content", "subject", "datetime_received"]))
    assert result[0].mime_content == raw[0] and result[0].subject and result[0].datetime_received
    assert isinstance(result[1], ErrorItemNotFound)  # per-item errors come back as values, not raised


def test_find_item_counts_and_filters(ews):
    ids = ews.deliver(ANNA, mails(6))
    ews.set_read(ids[0])
    inbox = account(ews).inbox
    assert inbox.all().count() == 6
    assert inbox.filter(is_read=False).count() == 5
    newest = inbox.all().order_by("-datetime_received").only("subject")[0]
    assert newest.id == ids[-1]
    assert [i.id for i in inbox.all().order_by("datetime_received").only("subject")[:2]] == ids[:2]


# -- changes ------------------------------------------------------------------------------------------------------
def test_mark_read_move_and_delete(ews):
    kunden_id = ews.add_folder(ANNA, "Posteingang/Kunden")
    ids = ews.deliver(ANNA, mails(8))
    acc = account(ews)
    items = list(acc.fetch(item_ids(ids), only_fields=["is_read", "subject"]))

    items[0].is_read = True
    items[0].save(update_fields=["is_read"])  # UpdateItem SetItemField message:IsRead, AutoResolve, SaveOnly
    items[1].is_read = True
    acc.bulk_update([(items[1], ["is_read"])])
    assert ews.item(ids[0]).is_read and ews.item(ids[1]).is_read and not ews.item(ids[2]).is_read
    assert ops(ews, "UpdateItem") == 2

    kunden = acc.inbox / "Kunden"
    items[2].move(kunden)  # MoveItem to a FolderId; the item gets a new id
    assert items[2].id != ids[2] and ews.item(ids[2]) is None
    assert [i.id for i in ews.items(ANNA, "Posteingang/Kunden")] == [items[2].id]
    assert ews.item(items[2].id).folder.id == kunden_id
    (new_id, _changekey), = acc.bulk_move([items[3]], to_folder=acc.junk)  # to a DistinguishedFolderId
    assert [i.id for i in ews.items(ANNA, "junkemail")] == [new_id]

    items[4].delete()  # HardDelete: gone
    items[5].soft_delete()  # into Recoverable Items/Deletions
    items[6].move_to_trash()  # into Deleted Items
    acc.bulk_delete([items[7]], delete_type=SOFT_DELETE)
    assert [i.id for i in ews.items(ANNA, "inbox")] == ids[:2]
    assert len(ews.items(ANNA, "recoverableitemsdeletions")) == 2
    trashed = ews.items(ANNA, "deleteditems")
    assert len(trashed) == 1 and trashed[0].mime == mails(7)[6]
    acc.bulk_delete([(trashed[0].id, None)], delete_type=HARD_DELETE)
    assert ews.items(ANNA, "deleteditems") == []
    deleted = list(acc.bulk_delete([(ids[4], None)]))
    assert isinstance(deleted[0], ErrorItemNotFound)


def test_stale_changekey_with_never_overwrite_is_a_conflict(ews):
    ids = ews.deliver(ANNA, mails(1))
    acc = account(ews)
    item, = acc.fetch(item_ids(ids), only_fields=["is_read"])
    ews.set_read(ids[0], True)  # another client changed it
    item.is_read = False
    with pytest.raises(ErrorIrresolvableConflict):
        item.save(update_fields=["is_read"], conflict_resolution="NeverOverwrite")
    item.save(update_fields=["is_read"])  # AutoResolve (exchangelib's default) wins
    assert ews.item(ids[0]).is_read is False


# -- faults -------------------------------------------------------------------------------------------------------
def test_server_busy_raises_with_the_default_policy(ews):
    inbox = account(ews).inbox
    ews.busy_backoff_ms = 150
    ews.fail_next.append("ErrorServerBusy")
    with pytest.raises(ErrorServerBusy) as raised:
        inbox.refresh()
    assert raised.value.back_off == 0.15  # BackOffMilliseconds from the fault's MessageXml


def test_server_busy_is_honoured_by_fault_tolerance(ews):
    ids = ews.deliver(ANNA, mails(4))
    acc = account(ews, retry_policy=FaultTolerance(max_wait=5))
    acc.inbox
    ews.busy_backoff_ms = 120
    ews.fail_next += [("GetItem", "ErrorServerBusy"), ("GetItem", "ErrorServerBusy")]
    started = time.monotonic()
    fetched = list(acc.fetch(item_ids(ids), only_fields=["mime_content"], chunk_size=2))
    assert time.monotonic() - started >= 0.24  # two back-offs of 120 ms
    assert [f.mime_content for f in fetched] == mails(4)
    assert ops(ews, "GetItem") == 4  # 2 chunks + 2 retries


def test_random_server_busy_share(ews):
    ids = ews.deliver(ANNA, mails(10))
    acc = account(ews, retry_policy=FaultTolerance(max_wait=5))
    ews.server_busy, ews.busy_backoff_ms = 0.3, 5
    fetched = list(acc.fetch(item_ids(ids), only_fields=["mime_content"], chunk_size=1))
    assert [f.mime_content for f in fetched] == mails(10)
    assert ops(ews, "GetItem") > 10  # some were answered ErrorServerBusy and retried


def test_dropped_connection_is_not_retried_and_the_change_happened(ews):
    ids = ews.deliver(ANNA, mails(1))
    acc = account(ews, retry_policy=FaultTolerance(max_wait=5))
    item, = acc.fetch(item_ids(ids), only_fields=["is_read"])
    archive = acc.msg_folder_root / "Archiv"
    ews.drop_connection_after = 0  # the next request's answer is cut off
    with pytest.raises(ErrorTimeoutExpired):  # not retried: the session pool has a single session
        item.move(archive)
    assert ews.item(ids[0]) is None and len(ews.items(ANNA, "archive")) == 1  # the server did move it
    assert acc.inbox.refresh().total_count == 0  # the next request reconnects (and logs in again)
    assert ews.ntlm_handshakes == 2


def test_forced_answers_and_latency(ews):
    ids = ews.deliver(ANNA, mails(2))
    acc = account(ews)
    ews.fail_next.append(("GetItem", "ErrorItemNotFound"))  # per-message error for the next GetItem
    assert all(isinstance(r, ErrorItemNotFound) for r in acc.fetch(item_ids(ids), only_fields=["subject"]))
    assert len(list(acc.fetch(item_ids(ids), only_fields=["subject"]))) == 2
    ews.latency = 0.05
    started = time.monotonic()
    acc.inbox.refresh()
    assert time.monotonic() - started >= 0.05


def test_max_concurrent_per_mailbox(ews):
    acc = account(ews, max_connections=4)
    acc.inbox
    ews.latency = 0.2
    threads = [threading.Thread(target=acc.inbox.refresh) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ews.max_concurrent[ANNA] >= 2  # exchangelib opened more sessions (each with its own NTLM login)
    assert ews.ntlm_handshakes >= 2


# -- HTTP surface -------------------------------------------------------------------------------------------------
def test_http_surface_as_iis(ews):
    verify = str(ews.ca_file)
    base = ews.url.rsplit("/EWS/", 1)[0]
    assert requests.get(base + "/owa/", verify=verify, timeout=5).status_code == 404
    r = requests.post(ews.url, data=b"<x/>", verify=verify, timeout=5)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'NTLM, Basic realm="127.0.0.1"'  # two headers, joined by requests
    ews.add_user("carla@example.test", "c-Pa55", mailbox=BERT)
    r = requests.post(ews.url, data=b"not xml", auth=("carla@example.test", "c-Pa55"), verify=verify, timeout=5)
    assert r.status_code == 500 and b"a:ErrorSchemaValidation" in r.content
    envelope = (b'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
                b'envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http:'
                b'//schemas.microsoft.com/exchange/services/2006/types"><s:Header><t:RequestServerVersion Version='
                b'"Exchange2016"/></s:Header><s:Body><m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape>'
                b'</m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>'
                b'</s:Body></s:Envelope>')
    r = requests.post(ews.url.lower(), data=envelope, auth=("carla@example.test", "c-Pa55"), verify=verify,
                      headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert b'MajorVersion="15" MinorVersion="2"' in r.content and b"<t:DisplayName>Inbox</t:DisplayName>" in r.content
    assert requests.post(ews.url, data=envelope, auth=("carla@example.test", "wrong"), verify=verify,
                         timeout=5).status_code == 401


# -- streaming notifications ----------------------------------------------------------------------------------------
def test_streaming_notifications_arrive_on_an_open_chunked_response(ews):
    ews.stream_minute, ews.heartbeat_seconds = 3.0, 0.5
    anna = account(ews)
    sid = anna.inbox.subscribe_to_streaming(event_types=["NewMailEvent", "MovedEvent"])
    got: list = []
    started = time.monotonic()

    def later():
        time.sleep(1.2)  # past two heartbeats: the stream is still open
        ews.deliver(ANNA, mails(1))

    threading.Thread(target=later).start()
    for notification in anna.inbox.get_streaming_events(sid, connection_timeout=1):
        got.append((time.monotonic() - started, notification))
    assert len(got) == 1 and 1.0 < got[0][0] < 2.5  # as it happened, not at the end
    event = got[0][1].events[0]
    assert type(event).__name__ == "NewMailEvent" and event.parent_folder_id.id == anna.inbox.id
    assert got[0][1].subscription_id == sid
    assert time.monotonic() - started >= 3.0  # the connection stayed open for its minute, then Closed
    anna.inbox.unsubscribe(sid)
    assert sid not in ews.subscriptions


def test_streaming_events_only_for_the_subscribed_folders_and_types(ews):
    ews.stream_minute = 1.0
    kunden = ews.add_folder(ANNA, "inbox/Kunden")
    anna = account(ews)
    sid = anna.inbox.subscribe_to_streaming(event_types=["CreatedEvent"])
    ews.deliver(ANNA, mails(1), folder=kunden)  # another folder
    ews.deliver(ANNA, mails(2, start=5))
    notifications = list(anna.inbox.get_streaming_events(sid, connection_timeout=1))
    events = [e for n in notifications for e in n.events]
    assert [type(e).__name__ for e in events] == ["CreatedEvent", "CreatedEvent"]  # no NewMailEvent: not asked


def test_a_restart_forgets_streaming_subscriptions(ews):
    from exchangelib.errors import ErrorSubscriptionNotFound

    anna = account(ews)
    sid = anna.inbox.subscribe_to_streaming()
    ews.stop()
    ews.start()
    close_connections()
    with pytest.raises(ErrorSubscriptionNotFound):
        list(anna.inbox.get_streaming_events(sid, connection_timeout=1))


def test_a_cut_stream_fails_in_the_client(ews):
    anna = account(ews)
    sid = anna.inbox.subscribe_to_streaming()
    threading.Timer(0.5, ews.cut_streams).start()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # no last chunk: the response ended early
        list(anna.inbox.get_streaming_events(sid, connection_timeout=1))
