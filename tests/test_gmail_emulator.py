"""The Gmail API emulator, driven by the real google-auth and google-api-python-client.

googleapiclient talks through httplib2, which reads its CA bundle (HTTPLIB2_CA_CERTS) once, when first imported:
the client code runs in a child process with the emulator's environment. The requests-based path
(google.auth.transport.requests.AuthorizedSession) reads HTTPS_PROXY / REQUESTS_CA_BUNDLE per request and runs
in this process.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gmail_emulator import SCOPE_MODIFY, SCOPE_READONLY, GmailEmulator

PRELUDE = '''
import json, sys
from google.auth.exceptions import RefreshError
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

ARGS = json.loads(sys.stdin.read())
OUT = {}


def gmail(scopes=None, info=None, subject=None):
    creds = service_account.Credentials.from_service_account_info(info or ARGS["info"],
                                                                  scopes=scopes or ARGS["scopes"])
    return build("gmail", "v1", credentials=creds.with_subject(subject or ARGS["mailbox"]), cache_discovery=False)


def failure(call):
    try:
        call()
    except HttpError as e:
        return {"status": e.status_code, "reason": e.reason, "body": json.loads(e.content)}
    except RefreshError as e:
        return {"refresh": str(e.args[0]), "data": e.args[1] if len(e.args) > 1 else None}
    raise AssertionError("the call succeeded")
'''

_numbers = itertools.count(1)


def mail(n: int, body: bytes = b"Guten Tag.\r\n", **headers) -> bytes:
    head = {"From": "kunde@example.com", "To": "archiv@kanzlei.example", "Subject": f"Vorgang {n}",
            "Message-ID": f"<m{n}.{next(_numbers)}@example.com>", "Date": "Mon, 1 Jan 2024 10:00:00 +0100",
            **headers}
    return "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode() + b"\r\n" + body


@pytest.fixture(scope="module")
def gmail_server():
    server = GmailEmulator().start()
    yield server
    server.stop()


class Domain:
    """A fresh mailbox and a service account delegated gmail.readonly + gmail.modify, for one test."""

    def __init__(self, server: GmailEmulator) -> None:
        n = next(_numbers)
        self.server = server
        self.mailbox = f"archiv{n}@kanzlei{n}.example"
        server.add_mailbox(self.mailbox)
        self.info = server.add_service_account()
        server.authorize(self.info["client_id"], [SCOPE_READONLY, SCOPE_MODIFY])

    @property
    def box(self):
        return self.server.mailbox(self.mailbox)

    def deliver(self, mimes, **kw):
        return self.server.deliver(self.mailbox, mimes, **kw)

    def run(self, code: str, scopes=(SCOPE_MODIFY,), **args) -> dict:
        """Run ``code`` (after PRELUDE) in a child process routed to the emulator; answers its OUT."""
        env = {k: v for k, v in os.environ.items()
               if k.upper() not in ("NO_PROXY", "HTTP_PROXY", "ALL_PROXY", "CURL_CA_BUNDLE", "SSL_CERT_FILE",
                                    "GOOGLE_APPLICATION_CREDENTIALS")}
        env.update(self.server.environ())
        script = PRELUDE + textwrap.dedent(code) + "\nprint(json.dumps(OUT))\n"
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                              input=json.dumps({"info": self.info, "mailbox": self.mailbox, "scopes": list(scopes),
                                                **args}))
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def domain(gmail_server) -> Domain:
    s = gmail_server
    s.api_disabled, s.latency, s.throttle, s.drop_connection_after = False, 0.0, 0.0, None
    s.quota_per_second, s.quota_burst = 250.0, 250.0
    s.fail_next.clear()
    return Domain(s)


def test_token_profile_and_labels(domain):
    label = domain.server.add_label(domain.mailbox, "Kunden/Müller")
    domain.deliver([mail(i) for i in range(3)])
    before = domain.server.token_requests
    out = domain.run('''
        svc = gmail()
        OUT["profile"] = svc.users().getProfile(userId="me").execute()
        OUT["labels"] = svc.users().labels().list(userId="me").execute()["labels"]
        OUT["label"] = svc.users().labels().get(userId=ARGS["mailbox"], id=ARGS["label"]).execute()
    ''', label=label)
    assert out["profile"] == {"emailAddress": domain.mailbox, "messagesTotal": 3, "threadsTotal": 3,
                              "historyId": str(domain.box.history_id)}
    labels = {lb["id"]: lb for lb in out["labels"]}
    assert labels["INBOX"] == {"id": "INBOX", "name": "INBOX", "type": "system"}
    assert {"UNREAD", "TRASH", "SPAM", "SENT", "DRAFT", "STARRED", "IMPORTANT", "CATEGORY_PERSONAL"} <= set(labels)
    assert labels[label] == {"id": label, "name": "Kunden/Müller", "messageListVisibility": "show",
                             "labelListVisibility": "labelShow", "type": "user"}
    assert out["label"]["messagesTotal"] == 0 and out["label"]["name"] == "Kunden/Müller"
    assert domain.server.token_requests == before + 1  # one JWT grant, the token is reused


def test_list_pages_newest_first(domain):
    ids = domain.deliver([mail(i) for i in range(7)])
    read = domain.deliver([mail(i) for i in range(7, 9)], labels=("INBOX",))
    domain.deliver([mail(9)], labels=("SPAM",))
    out = domain.run('''
        msgs = gmail().users().messages()
        pages, token = [], None
        while True:
            page = msgs.list(userId="me", maxResults=4, pageToken=token).execute()
            pages.append(page)
            token = page.get("nextPageToken")
            if not token:
                break
        OUT["pages"] = pages
        OUT["unread"] = msgs.list(userId="me", q="is:unread").execute()
        OUT["read"] = msgs.list(userId="me", q="-is:unread", labelIds=["INBOX"]).execute()
        OUT["spam"] = msgs.list(userId="me", includeSpamTrash=True, labelIds=["SPAM"]).execute()
        OUT["all"] = msgs.list(userId="me", includeSpamTrash=True, maxResults=1000).execute()
        OUT["none"] = msgs.list(userId="me", q="is:starred").execute()
    ''')
    listed = [m["id"] for page in out["pages"] for m in page["messages"]]
    assert listed == (ids + read)[::-1]  # newest first, spam left out
    assert [len(p["messages"]) for p in out["pages"]] == [4, 4, 1]
    assert all(p["resultSizeEstimate"] == 9 for p in out["pages"])
    assert out["pages"][0]["messages"][0] == {"id": read[-1], "threadId": read[-1]}
    assert [m["id"] for m in out["unread"]["messages"]] == ids[::-1]
    assert [m["id"] for m in out["read"]["messages"]] == read[::-1]
    assert len(out["spam"]["messages"]) == 1 and len(out["all"]["messages"]) == 10
    assert out["none"] == {"resultSizeEstimate": 0}


def test_get_raw_returns_the_exact_bytes(domain):
    raws = [mail(1, body=b"Gr\xfc\xdfe aus K\xf6ln\r\nohne CR am Ende\nund Ende ohne Zeilenende"),
            mail(2, body=b"--b\r\nContent-Type: text/plain\r\n\r\nsiehe Anhang\r\n--b\r\nContent-Type: application/pdf"
                 b"\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"
                 b"\r\nJVBERi0xLjQK\r\n--b--\r\n", **{"Content-Type": 'multipart/mixed; boundary="b"',
                                                 "MIME-Version": "1.0"})]
    ids = domain.deliver(raws)
    out = domain.run('''
        msgs = gmail(scopes=["https://www.googleapis.com/auth/gmail.readonly"]).users().messages()
        OUT["raw"] = [msgs.get(userId="me", id=i, format="raw").execute() for i in ARGS["ids"]]
        OUT["minimal"] = msgs.get(userId="me", id=ARGS["ids"][0], format="minimal").execute()
        OUT["metadata"] = msgs.get(userId="me", id=ARGS["ids"][0], format="metadata",
                                   metadataHeaders=["Subject", "From"]).execute()
        full = msgs.get(userId="me", id=ARGS["ids"][1]).execute()
        OUT["full"] = full
        att = full["payload"]["parts"][1]["body"]["attachmentId"]
        OUT["attachment"] = msgs.attachments().get(userId="me", messageId=ARGS["ids"][1], id=att).execute()
        OUT["missing"] = failure(lambda: msgs.get(userId="me", id="0123456789abcdef").execute())
    ''', ids=ids, scopes=(SCOPE_READONLY,))
    for raw, got, mid in zip(raws, out["raw"], ids):
        assert base64.urlsafe_b64decode(got["raw"]) == raw
        assert got["id"] == mid and got["threadId"] == mid and got["labelIds"] == ["INBOX", "UNREAD"]
        assert got["sizeEstimate"] == len(raw) and got["historyId"] == str(domain.box.messages[mid].history_id)
        assert int(got["internalDate"]) == domain.box.messages[mid].internal_date
    assert out["raw"][0]["snippet"].startswith("Grüße aus Köln")
    assert "raw" not in out["minimal"] and "payload" not in out["minimal"] and out["minimal"]["id"] == ids[0]
    assert out["metadata"]["payload"]["headers"] == [{"name": "From", "value": "kunde@example.com"},
                                                     {"name": "Subject", "value": "Vorgang 1"}]
    parts = out["full"]["payload"]["parts"]
    assert out["full"]["payload"]["mimeType"] == "multipart/mixed"
    assert [p["partId"] for p in parts] == ["0", "1"] and parts[1]["filename"] == "r.pdf"
    assert base64.urlsafe_b64decode(parts[0]["body"]["data"]) == b"siehe Anhang"
    assert base64.urlsafe_b64decode(out["attachment"]["data"]) == b"%PDF-1.4\n"
    assert out["missing"]["status"] == 404
    assert out["missing"]["body"]["error"]["errors"][0]["reason"] == "notFound"


def test_batch_of_gets_overruns_the_quota_per_part(domain):
    raws = [mail(i) for i in range(60)]
    ids = domain.deliver(raws)
    domain.server.quota_per_second = 1.0  # the 250-unit bucket barely refills while the batch runs: 50 gets pass
    out = domain.run('''
        svc = gmail()
        results = {}

        def done(request_id, response, exception):
            if exception is None:
                results[request_id] = {"raw": response["raw"]}
            else:
                results[request_id] = {"status": exception.status_code, "content": json.loads(exception.content)}

        batch = svc.new_batch_http_request(callback=done)
        for i in ARGS["ids"]:
            batch.add(svc.users().messages().get(userId="me", id=i, format="raw"), request_id=i)
        batch.execute()
        OUT["results"] = results
        big = svc.new_batch_http_request()
        for i in range(101):
            big.add(svc.users().getProfile(userId="me"))
        OUT["big"] = failure(big.execute)
    ''', ids=ids)
    results = out["results"]
    assert set(results) == set(ids)
    ok = [i for i in ids if "raw" in results[i]]
    limited = [i for i in ids if "raw" not in results[i]]
    assert ok == ids[:50] and len(limited) == 10  # 250 units, 5 per get
    for i in ok:
        assert base64.urlsafe_b64decode(results[i]["raw"]) == raws[ids.index(i)]
    for i in limited:
        error = results[i]["content"]["error"]
        assert results[i]["status"] == 429 and error["status"] == "RESOURCE_EXHAUSTED"
        assert error["errors"][0]["reason"] == "rateLimitExceeded"
        assert error["message"].startswith("User-rate limit exceeded. Retry after ")
    assert out["big"]["status"] == 400
    server = domain.server
    assert server.batch_sizes[-2:] == [60, 101]
    assert server.max_units_per_second[domain.mailbox] == 250 and server.over_quota >= 10
    assert ("POST", "/batch") in server.requests
    assert ("GET", f"/gmail/v1/users/me/messages/{ids[0]}") in server.requests


def test_history_then_404_after_expiry(domain):
    start = domain.box.history_id
    ids = domain.deliver([mail(i) for i in range(3)])
    label = domain.server.add_label(domain.mailbox, "Archiviert")
    out = domain.run('''
        users = gmail().users()
        OUT["all"] = users.history().list(userId="me", startHistoryId=ARGS["start"]).execute()
        added, token = [], None
        while True:
            page = users.history().list(userId="me", startHistoryId=ARGS["start"], historyTypes="messageAdded",
                                        maxResults=2, pageToken=token).execute()
            added += [a["message"]["id"] for h in page.get("history", []) for a in h["messagesAdded"]]
            token = page.get("nextPageToken")
            if not token:
                break
        OUT["added"] = added
        mark = users.getProfile(userId="me").execute()["historyId"]
        users.messages().modify(userId="me", id=ARGS["ids"][0],
                                body={"addLabelIds": [ARGS["label"]], "removeLabelIds": ["UNREAD"]}).execute()
        OUT["changes"] = users.history().list(userId="me", startHistoryId=mark).execute()
        OUT["labelled"] = users.history().list(userId="me", startHistoryId=ARGS["start"],
                                               labelId=ARGS["label"]).execute()
    ''', start=str(start), ids=ids, label=label)
    records = out["all"]["history"]
    assert [r["messagesAdded"][0]["message"] for r in records] == [
        {"id": i, "threadId": i, "labelIds": ["INBOX", "UNREAD"]} for i in ids]
    assert [r["messages"] for r in records] == [[{"id": i, "threadId": i}] for i in ids]
    assert all(isinstance(r["id"], str) and int(r["id"]) > start for r in records)
    assert "nextPageToken" not in out["all"] and int(out["all"]["historyId"]) >= int(records[-1]["id"])
    assert out["added"] == ids
    (change,) = out["changes"]["history"]
    assert change["labelsAdded"] == [{"message": {"id": ids[0], "threadId": ids[0], "labelIds": ["INBOX", label]},
                                      "labelIds": [label]}]
    assert change["labelsRemoved"][0]["labelIds"] == ["UNREAD"]
    assert out["changes"]["historyId"] == change["id"] == str(domain.box.history_id)
    assert [r["id"] for r in out["labelled"]["history"]] == [change["id"]]

    domain.server.expire_history(domain.mailbox)
    out = domain.run('''
        users = gmail().users()
        OUT["old"] = failure(lambda: users.history().list(userId="me", startHistoryId=ARGS["start"]).execute())
        now = users.getProfile(userId="me").execute()["historyId"]
        OUT["now"] = users.history().list(userId="me", startHistoryId=now).execute()
    ''', start=str(start))
    assert out["old"]["status"] == 404
    assert out["old"]["body"] == {"error": {"code": 404, "message": "Requested entity was not found.", "errors": [
        {"message": "Requested entity was not found.", "domain": "global", "reason": "notFound"}],
        "status": "NOT_FOUND"}}
    assert out["now"] == {"historyId": str(domain.box.history_id)}


def test_modify_trash_and_labels(domain):
    ids = domain.deliver([mail(i) for i in range(3)])
    out = domain.run('''
        users = gmail().users()
        label = users.labels().create(userId="me", body={"name": "Kunden/Müller"}).execute()
        OUT["label"] = label
        OUT["duplicate"] = failure(lambda: users.labels().create(userId="me", body={"name": "kunden/müller"}).execute())
        OUT["modified"] = users.messages().modify(userId="me", id=ARGS["ids"][0], body={
            "addLabelIds": [label["id"], "STARRED"], "removeLabelIds": ["UNREAD"]}).execute()
        OUT["trashed"] = users.messages().trash(userId="me", id=ARGS["ids"][1]).execute()
        OUT["batch"] = users.messages().batchModify(userId="me", body={
            "ids": ARGS["ids"], "removeLabelIds": ["UNREAD"]}).execute()
        OUT["bad_label"] = failure(lambda: users.messages().modify(userId="me", id=ARGS["ids"][2], body={
            "addLabelIds": ["Label_nope"]}).execute())
        OUT["inbox"] = users.messages().list(userId="me").execute()
        OUT["trash"] = users.messages().list(userId="me", q="in:trash").execute()
        OUT["starred"] = users.messages().list(userId="me", q="is:starred label:kunden-müller").execute()
    ''', ids=ids)
    label = out["label"]
    assert label["name"] == "Kunden/Müller" and label["type"] == "user" and label["id"].startswith("Label_")
    assert out["duplicate"]["status"] == 409
    assert out["duplicate"]["body"]["error"]["errors"][0]["reason"] == "duplicate"
    assert out["modified"] == {"id": ids[0], "threadId": ids[0], "labelIds": ["INBOX", label["id"], "STARRED"]}
    assert out["trashed"]["labelIds"] == ["UNREAD", "TRASH"]
    assert out["batch"] == ""  # 204 No Content; methods without a response schema use RawModel
    assert out["bad_label"]["status"] == 400
    assert [m["id"] for m in out["inbox"]["messages"]] == [ids[2], ids[0]]
    assert [m["id"] for m in out["trash"]["messages"]] == [ids[1]]
    assert [m["id"] for m in out["starred"]["messages"]] == [ids[0]]
    box = domain.box
    assert box.messages[ids[1]].label_ids == ["TRASH"] and box.messages[ids[2]].label_ids == ["INBOX"]


def test_scope_not_delegated_is_unauthorized_client(domain):
    out = domain.run('''
        OUT["full"] = failure(lambda: gmail(scopes=["https://mail.google.com/"]).users().getProfile(
            userId="me").execute())
        OUT["mixed"] = failure(lambda: gmail(scopes=["https://www.googleapis.com/auth/gmail.readonly",
                                                     "https://mail.google.com/"]).users().getProfile(
            userId="me").execute())
    ''')
    expected = {"error": "unauthorized_client", "error_description": "Client is unauthorized to retrieve access "
                "tokens using this method, or client not authorized for any of the scopes requested."}
    for case in ("full", "mixed"):
        assert out[case]["data"] == expected
        assert out[case]["refresh"] == f"{expected['error']}: {expected['error_description']}"


def test_wrong_key_unknown_key_and_unknown_user_are_invalid_grant(domain):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    out = domain.run('''
        wrong = dict(ARGS["info"], private_key=ARGS["other"])
        OUT["wrong_key"] = failure(lambda: gmail(info=wrong).users().getProfile(userId="me").execute())
        unknown = dict(ARGS["info"], private_key_id="0" * 40)
        OUT["unknown_kid"] = failure(lambda: gmail(info=unknown).users().getProfile(userId="me").execute())
        OUT["no_user"] = failure(lambda: gmail(subject="niemand@kanzlei.example").users().getProfile(
            userId="me").execute())
        OUT["ok"] = gmail().users().getProfile(userId="me").execute()["emailAddress"]
    ''', other=other)
    assert out["wrong_key"]["data"] == {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    assert out["unknown_kid"]["refresh"] == "invalid_grant: Invalid JWT Signature."
    assert out["no_user"]["data"] == {"error": "invalid_grant", "error_description": "Invalid email or User ID"}
    assert out["ok"] == domain.mailbox


def test_api_disabled_names_the_project(domain):
    domain.server.api_disabled = True
    out = domain.run('OUT["e"] = failure(lambda: gmail().users().getProfile(userId="me").execute())')
    project = domain.server.project_number(domain.info["client_email"])
    error = out["e"]["body"]["error"]
    assert out["e"]["status"] == 403 and error["status"] == "PERMISSION_DENIED"
    assert error["message"].startswith(
        f"Gmail API has not been used in project {project} before or it is disabled. Enable it by visiting "
        f"https://console.developers.google.com/apis/api/gmail.googleapis.com/overview?project={project} then retry.")
    assert error["errors"][0]["reason"] == "accessNotConfigured" and error["errors"][0]["domain"] == "usageLimits"
    assert error["details"][0]["reason"] == "SERVICE_DISABLED"


def test_insufficient_scope_and_other_mailbox(domain):
    ids = domain.deliver([mail(1)])
    other = f"chef.{domain.mailbox}"
    domain.server.add_mailbox(other)
    out = domain.run('''
        read = gmail(scopes=["https://www.googleapis.com/auth/gmail.readonly"]).users()
        OUT["get"] = read.messages().get(userId="me", id=ARGS["id"], format="minimal").execute()["id"]
        OUT["modify"] = failure(lambda: read.messages().modify(userId="me", id=ARGS["id"], body={
            "removeLabelIds": ["UNREAD"]}).execute())
        OUT["delete"] = failure(lambda: gmail().users().messages().delete(userId="me", id=ARGS["id"]).execute())
        OUT["other"] = failure(lambda: read.getProfile(userId=ARGS["other"]).execute())
    ''', id=ids[0], other=other)
    assert out["get"] == ids[0]
    for case, method in (("modify", "ModifyMessage"), ("delete", "DeleteMessage")):
        error = out[case]["body"]["error"]
        assert out[case]["status"] == 403 and error["message"] == "Request had insufficient authentication scopes."
        assert error["errors"] == [{"message": "Insufficient Permission", "domain": "global",
                                    "reason": "insufficientPermissions"}]
        assert error["status"] == "PERMISSION_DENIED"
        assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                     "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "domain": "googleapis.com",
                                     "metadata": {"service": "gmail.googleapis.com",
                                                  "method": f"caribou.api.proto.MailboxService.{method}"}}]
    assert out["other"]["status"] == 403 and out["other"]["reason"] == f"Delegation denied for {domain.mailbox}"
    assert domain.box.messages[ids[0]].label_ids == ["INBOX", "UNREAD"]


def test_faults_retries_and_dropped_connection(domain):
    domain.deliver([mail(1)])
    server = domain.server
    unauthenticated = {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                                 "status": "UNAUTHENTICATED"}}
    server.fail_next[:] = [(401, unauthenticated), (503, {"error": {"code": 503, "message": "The service is currently unavailable.",
                                            "status": "UNAVAILABLE"}}),
                           (429, {"error": {"code": 429, "message": "Too many concurrent requests for user.",
                                            "errors": [{"reason": "rateLimitExceeded"}]}})]
    server.drop_connection_after = 5  # 401, 503, 429, the list, the profile; then a drop (tokens do not count)
    grants = server.token_requests
    out = domain.run('''
        users = gmail().users()
        req = users.messages().list(userId="me")
        req._sleep = lambda seconds: None
        OUT["retried"] = req.execute(num_retries=3)["resultSizeEstimate"]
        OUT["profile"] = users.getProfile(userId="me").execute()["messagesTotal"]
        try:
            users.getProfile(userId="me").execute()
        except Exception as e:
            OUT["dropped"] = type(e).__name__
        req = users.getProfile(userId="me")
        req._sleep = lambda seconds: None
        OUT["after"] = req.execute(num_retries=1)["messagesTotal"]
    ''')
    assert out == {"retried": 1, "profile": 1, "dropped": "IncompleteRead", "after": 1}
    assert server.drop_connection_after is None and not server.fail_next
    assert server.token_requests == grants + 2  # the forced 401 made google-auth-httplib2 fetch a new token


def test_requests_path_throttle_quota_and_concurrency(domain, monkeypatch):
    """google-auth's AuthorizedSession (requests) in this process: 401 shape, throttling, quota, concurrency."""
    from google.auth.transport.requests import AuthorizedSession
    from google.oauth2 import service_account

    for name in ("NO_PROXY", "no_proxy", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in domain.server.environ().items():
        monkeypatch.setenv(name, value)
    base = "https://gmail.googleapis.com/gmail/v1/users/me"
    anonymous = requests.get(f"{base}/profile", timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["status"] == "UNAUTHENTICATED"
    assert anonymous.json()["error"]["errors"][0]["reason"] == "authError"
    creds = service_account.Credentials.from_service_account_info(domain.info, scopes=[SCOPE_READONLY])
    session = AuthorizedSession(creds.with_subject(domain.mailbox))
    assert session.get(f"{base}/profile", timeout=10).json()["emailAddress"] == domain.mailbox

    server = domain.server
    server.throttle = 1.0
    answers = [session.get(f"{base}/profile", timeout=10) for _ in range(2)]
    assert sorted(a.status_code for a in answers) == [403, 429]
    assert {a.json()["error"]["errors"][0]["reason"] for a in answers} == {"rateLimitExceeded",
                                                                          "userRateLimitExceeded"}
    server.throttle = 0.0

    server.quota_per_second, server.quota_burst = 1.0, 3.0
    refused = server.over_quota
    codes = [session.get(f"{base}/messages", timeout=10).status_code for _ in range(2)]  # 5 units each
    assert codes == [429, 429] and server.over_quota == refused + 2
    server.quota_per_second, server.quota_burst = 250.0, 250.0

    server.latency = 1.0  # long enough that the three overlap however slowly their threads start
    sessions = [AuthorizedSession(creds.with_subject(domain.mailbox)) for _ in range(3)]
    threads = [threading.Thread(target=s.get, args=(f"{base}/profile",), kwargs={"timeout": 10}) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.max_concurrent[domain.mailbox] == 3
