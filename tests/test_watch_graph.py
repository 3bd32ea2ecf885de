"""The watch service with Microsoft Graph change notifications: the real O365 library subscribing at the Graph
emulator, which validates WebAdmin's /graph/notify (served over HTTPS by gunicorn) and posts notifications and
lifecycle events there; renewals; forged notifications; the polling fallback."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from mailfactory import make_mail
from servers import WebAdmin
from test_faults import archived_mail_hashes, sha
from test_watch import config_file, cron_beside, killed_and_started_again, start_watcher, stop, wait_for, watch_status
from testca import throwaway_ca


@pytest.fixture
def https_webadmin(data_dir, tmp_path, graph_server):
    """WebAdmin over HTTPS on 127.0.0.1 (a throw-away CA the emulator trusts), set as the direct links' DNS name."""
    (tmp_path / "tls").mkdir()
    ca_file, _, _ = throwaway_ca(tmp_path / "tls", ("localhost",), ("127.0.0.1",), name="appliance CA")
    server = WebAdmin(data_dir, tls=(tmp_path / "tls" / "leaf.pem", tmp_path / "tls" / "leaf.key", ca_file))
    graph_server.notify_ca = ca_file
    yield server
    server.stop()
    graph_server.notify_ca = None


def subscriptions(tenant) -> list[dict]:
    return [s for s in tenant.server.subscriptions.values() if s["tenant"] == tenant.tenant]


def test_new_mail_is_archived_on_a_graph_notification(run, tenant, data_dir, tmp_path, https_webadmin):
    tenant.add_account(run)
    assert run("settings", "set", "link_base_url", https_webadmin.base).exit_code == 0
    assert run("settings", "set", "watch_enabled", "1").exit_code == 0
    tenant.deliver([make_mail(1)])
    proc = start_watcher(data_dir, config_file(tmp_path, watch_poll_seconds=3600))  # no polling to help
    try:
        wait_for(lambda: len(subscriptions(tenant)) == 1, what="the subscription")
        sub = subscriptions(tenant)[0]
        assert sub["notificationUrl"] == f"{https_webadmin.base}/graph/notify"
        assert sub["folder"] == "inbox" and len(sub["clientState"]) >= 32
        assert f"{https_webadmin.base}/graph/notify" in tenant.server.validations  # the handshake was answered
        wait_for(lambda: len(archived_mail_hashes(data_dir)) == 1, what="the mail there before")
        mail = make_mail(2)
        tenant.deliver([mail])
        took = wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="the notified mail")
        assert took < 5
        status = watch_status(run)
        assert [(s["folder"], s["mode"]) for s in status] == [(f"{tenant.mailbox}/inbox", "notifications")]
        assert status[0]["last_latency"] is not None
    finally:
        stop(proc)
    assert subscriptions(tenant) == []  # deleted on the way out
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in (make_mail(1), make_mail(2)))


def test_subscriptions_are_renewed_and_made_again_after_graph_removes_them(run, tenant, data_dir, tmp_path,
                                                                           https_webadmin):
    tenant.add_account(run)
    run("settings", "set", "link_base_url", https_webadmin.base)
    run("settings", "set", "watch_enabled", "1")
    tenant.server.subscription_max_seconds = 4  # Graph grants 4 s: renewed every 2 s
    proc = start_watcher(data_dir, config_file(tmp_path, watch_poll_seconds=3600))
    try:
        wait_for(lambda: len(subscriptions(tenant)) == 1, what="the subscription")
        first = subscriptions(tenant)[0]["id"]
        time.sleep(7)  # beyond the granted lifetime: alive only if renewed
        assert [s["id"] for s in subscriptions(tenant)] == [first]
        assert subscriptions(tenant)[0]["expires"] > time.time()
        assert sum(1 for m, p in tenant.server.requests if m == "PATCH" and "subscriptions" in p) >= 2
        mail = make_mail(3)
        tenant.deliver([mail])
        wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="a mail after renewals")
        assert tenant.server.lifecycle(first, "subscriptionRemoved") == 202
        wait_for(lambda: [s["id"] for s in subscriptions(tenant)] not in ([], [first]), what="a new subscription")
        mail = make_mail(4)
        tenant.deliver([mail])
        wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="a mail on the new subscription")
        missed = make_mail(5)
        tenant.server.subscription_max_seconds = 10080 * 60 - 60
        tenant.deliver([missed], folder="inbox")
        wait_for(lambda: sha(missed) in archived_mail_hashes(data_dir), what="the next mail")
    finally:
        tenant.server.subscription_max_seconds = 10080 * 60 - 60
        stop(proc)
    hashes = archived_mail_hashes(data_dir)
    assert len(hashes) == len(set(hashes)) == 3


def test_an_outage_of_microsoft_loses_and_doubles_nothing(run, tenant, data_dir, tmp_path, https_webadmin):
    tenant.add_account(run)
    run("settings", "set", "link_base_url", https_webadmin.base)
    run("settings", "set", "watch_enabled", "1")
    tenant.server.subscription_max_seconds = 4  # renewed every 2 s: the outage hits renewals
    proc = start_watcher(data_dir, config_file(tmp_path, watch_poll_seconds=3600))  # no polling to help

    def live() -> list[dict]:
        return [s for s in subscriptions(tenant) if s["expires"] > time.time()]

    try:
        wait_for(lambda: len(live()) == 1, what="the subscription")
        first = live()[0]["id"]
        tenant.server.set_outage(True)  # open connections break, new ones are refused
        mails = [make_mail(40), make_mail(41)]
        tenant.deliver([mails[0]])  # Graph may still post it: the delta read then fails, too
        wait_for(lambda: any(s["error"] for s in watch_status(run)), what="the outage noticed")
        time.sleep(12)  # longer than the first pauses: the watch must not give up for polling
        assert live() == []  # the subscription ran out unrenewed
        tenant.server.set_outage(False)
        wait_for(lambda: sha(mails[0]) in archived_mail_hashes(data_dir), timeout=40, what="the mail of the outage")
        wait_for(lambda: [s["id"] for s in live()] not in ([], [first]), timeout=30, what="a new subscription")
        tenant.deliver([mails[1]])
        assert wait_for(lambda: sha(mails[1]) in archived_mail_hashes(data_dir), what="a notified mail after") < 5
        wait_for(lambda: [(s["mode"], s["error"]) for s in watch_status(run)] == [("notifications", None)],
                 what="the problem cleared")
    finally:
        tenant.server.set_outage(False)
        tenant.server.subscription_max_seconds = 10080 * 60 - 60
        stop(proc)
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in mails)


def test_forged_notifications_trigger_nothing_and_the_handshake_echoes_only_text(run, tenant, data_dir, tmp_path,
                                                                                 https_webadmin):
    import ssl

    tenant.add_account(run)
    run("settings", "set", "link_base_url", https_webadmin.base)
    run("settings", "set", "watch_enabled", "1")
    proc = start_watcher(data_dir, config_file(tmp_path, watch_poll_seconds=3600))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(
        context=ssl.create_default_context(cafile=str(tenant.server.notify_ca))))

    def post(payload: dict, query: str = "") -> tuple[int, str, str]:
        request = urllib.request.Request(f"{https_webadmin.base}/graph/notify{query}", json.dumps(payload).encode(),
                                         {"Content-Type": "application/json"})
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()

    try:
        wait_for(lambda: len(subscriptions(tenant)) == 1, what="the subscription")
        sid = subscriptions(tenant)[0]["id"]
        wait_for(lambda: any(p.endswith("/messages/delta") for _, p in tenant.server.requests),
                 what="the catch-up's delta read")
        time.sleep(1)  # and its end
        delta_reads = sum(1 for m, p in tenant.server.requests if p.endswith("/messages/delta"))
        for forged in ({"value": [{"subscriptionId": sid, "clientState": "guessed", "changeType": "created"}]},
                       {"value": [{"subscriptionId": "other", "clientState": "x", "changeType": "created"}]},
                       {"value": "nonsense"}, {"value": [{"lifecycleEvent": "subscriptionRemoved",
                                                          "subscriptionId": sid, "clientState": ""}]}):
            try:
                status, _, _ = post(forged)
            except urllib.error.HTTPError as e:
                status = e.code
            assert status in (202, 400)
        time.sleep(1.5)
        assert sum(1 for m, p in tenant.server.requests if p.endswith("/messages/delta")) == delta_reads
        assert [s["id"] for s in subscriptions(tenant)] == [sid]  # a forged "removed" changed nothing
        status, ctype, body = post({}, "?validationToken=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        assert (status, body) == (200, "<script>alert(1)</script>") and ctype.startswith("text/plain")
    finally:
        stop(proc)


def test_without_an_https_dns_name_graph_accounts_are_polled(run, tenant, data_dir, tmp_path):
    tenant.add_account(run)
    run("settings", "set", "watch_enabled", "1")
    proc = start_watcher(data_dir, config_file(tmp_path))  # polling every second
    try:
        wait_for(lambda: [s["mode"] for s in watch_status(run)] == ["polling"], what="polling")
        mail = make_mail(6)
        tenant.deliver([mail])
        assert wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="the polled mail") < 5
        assert subscriptions(tenant) == []
    finally:
        stop(proc)


def test_kills_and_cron_beside_the_graph_watch_lose_and_double_nothing(run, tenant, data_dir, tmp_path,
                                                                        https_webadmin):
    import random

    tenant.add_account(run)
    run("settings", "set", "link_base_url", https_webadmin.base)
    run("settings", "set", "watch_enabled", "1")
    config = config_file(tmp_path, watch_poll_seconds=3600)
    rng = random.Random(365)
    mails = [make_mail(300 + i, body_words=rng.randrange(50, 2000)) for i in range(60)]
    with cron_beside(data_dir, config, 0.5):
        proc = start_watcher(data_dir, config)
        for start in range(0, len(mails), 15):
            wait_for(lambda: len(subscriptions(tenant)) >= 1, what="a subscription")
            tenant.deliver(mails[start:start + 15])
            time.sleep(rng.uniform(0.1, 1.0))
            proc = killed_and_started_again(proc, data_dir, config)
        wait_for(lambda: len(archived_mail_hashes(data_dir)) >= len(mails), timeout=60, what="every mail")
        wait_for(lambda: len(subscriptions(tenant)) == 1, what="the killed runs' subscriptions deleted")
        stop(proc)
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in mails)
