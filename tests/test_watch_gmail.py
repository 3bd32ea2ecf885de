"""The watch service with Gmail push: users.watch publishing to a Cloud Pub/Sub topic and a pull subscription, the
real Google client libraries against the emulator; re-watching; the polling fallback when Pub/Sub is refused."""

from __future__ import annotations

import time

import pytest
from gmail_emulator import SCOPE_MODIFY, SCOPE_READONLY
from mailfactory import make_mail
from test_faults import archived_mail_hashes, sha
from test_watch import config_file, cron_beside, killed_and_started_again, start_watcher, stop, wait_for, watch_status

TOPIC, SUBSCRIPTION = "projects/archiv-test/topics/gmail-{n}", "projects/archiv-test/subscriptions/archiv-{n}"


@pytest.fixture
def pushed(workspace):
    workspace.authorize(SCOPE_MODIFY, SCOPE_READONLY)
    n = workspace.server.port + len(workspace.server.topics)
    topic, subscription = TOPIC.format(n=n), SUBSCRIPTION.format(n=n)
    workspace.server.add_topic(topic, subscription)
    return workspace, topic, subscription


def test_new_gmail_is_archived_on_a_pubsub_message(run, pushed, data_dir, tmp_path):
    workspace, topic, subscription = pushed
    workspace.add_account(run, "--pubsub-topic", topic, "--pubsub-subscription", subscription)
    assert run("settings", "set", "watch_enabled", "1").exit_code == 0
    workspace.deliver([make_mail(1)])
    proc = start_watcher(data_dir, config_file(tmp_path, watch_poll_seconds=3600))  # no polling to help
    try:
        wait_for(lambda: workspace.box.watch is not None, what="users.watch")
        assert workspace.box.watch["topicName"] == topic and workspace.box.watch["labelIds"] == ["INBOX"]
        wait_for(lambda: len(archived_mail_hashes(data_dir)) == 1, what="the mail there before")
        mail = make_mail(2)
        workspace.deliver([mail])
        assert wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="the pushed mail") < 5
        status = watch_status(run)
        assert [(s["folder"], s["mode"]) for s in status] == [(f"{workspace.mailbox}/INBOX", "push")]
        wait_for(lambda: not workspace.server.pubsub[subscription]["outstanding"], what="the acknowledgement")
        workspace.deliver([make_mail(3)], labels=("SENT",))  # a label not archived: Gmail does not publish
        time.sleep(1)
        assert not workspace.server.pubsub[subscription]["queue"]
    finally:
        stop(proc)
    assert workspace.box.watch is None  # users.stop on the way out
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in (make_mail(1), make_mail(2)))


def test_the_watch_is_renewed(run, pushed, data_dir, tmp_path):
    workspace, topic, subscription = pushed
    workspace.add_account(run, "--pubsub-topic", topic, "--pubsub-subscription", subscription)
    run("settings", "set", "watch_enabled", "1")
    proc = start_watcher(data_dir, config_file(tmp_path, watch_poll_seconds=3600, watch_gmail_rewatch_seconds=1))
    try:
        wait_for(lambda: workspace.server.watch_calls.count(workspace.box.address) >= 3, what="users.watch again")
        mail = make_mail(4)
        workspace.deliver([mail])
        wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="a mail after re-watching")
    finally:
        stop(proc)


def refused_topic(run, workspace, name: str) -> tuple[str, str]:
    """An account whose topic Gmail may not publish to, with the watch switched on; (topic, subscription)."""
    workspace.authorize(SCOPE_MODIFY, SCOPE_READONLY)
    topic, subscription = TOPIC.format(n=name), SUBSCRIPTION.format(n=name)
    workspace.server.add_topic(topic, subscription, gmail_may_publish=False)
    workspace.add_account(run, "--pubsub-topic", topic, "--pubsub-subscription", subscription)
    run("settings", "set", "watch_enabled", "1")
    return topic, subscription


def test_without_gmails_right_to_publish_the_account_is_polled(run, workspace, data_dir, tmp_path):
    refused_topic(run, workspace, "closed")
    proc = start_watcher(data_dir, config_file(tmp_path))  # polling every second
    try:
        wait_for(lambda: [(s["mode"], bool(s["error"])) for s in watch_status(run)] == [("polling", True)],
                 what="the fallback")
        assert "User not authorized" in watch_status(run)[0]["error"]
        mail = make_mail(5)
        workspace.deliver([mail])
        assert wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="the polled mail") < 6
    finally:
        stop(proc)


@pytest.mark.parametrize("options", [["--pubsub-topic", "projects/archiv-test/topics/gmail"],
                                     ["--pubsub-topic", "gmail", "--pubsub-subscription", "archiv"]])
def test_pubsub_names_are_checked(run, workspace, options):
    result = run("account", "add", "gmail", "w", "--service-account-file", str(workspace.key_file), "--mailbox",
                 workspace.mailbox, *options)
    assert result.exit_code == 2 and "give both the Pub/Sub topic" in result.output


def test_kills_and_cron_beside_the_gmail_push_lose_and_double_nothing(run, pushed, data_dir, tmp_path):
    import random

    workspace, topic, subscription = pushed
    workspace.add_account(run, "--pubsub-topic", topic, "--pubsub-subscription", subscription)
    run("settings", "set", "watch_enabled", "1")
    config = config_file(tmp_path, watch_poll_seconds=3600)
    rng = random.Random(7)
    mails = [make_mail(500 + i, body_words=rng.randrange(50, 2000)) for i in range(60)]
    with cron_beside(data_dir, config, 0.5):
        proc = start_watcher(data_dir, config)
        for start in range(0, len(mails), 15):
            wait_for(lambda: workspace.box.watch is not None, what="users.watch")
            workspace.deliver(mails[start:start + 15])
            time.sleep(rng.uniform(0.1, 1.0))
            proc = killed_and_started_again(proc, data_dir, config)
        wait_for(lambda: len(archived_mail_hashes(data_dir)) >= len(mails), timeout=60, what="every mail")
        stop(proc)
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in mails)


def test_a_dropped_connection_and_an_outage_of_google_lose_and_double_nothing(run, pushed, data_dir, tmp_path):
    workspace, topic, subscription = pushed
    workspace.add_account(run, "--pubsub-topic", topic, "--pubsub-subscription", subscription)
    run("settings", "set", "watch_enabled", "1")
    proc = start_watcher(data_dir, config_file(tmp_path, watch_poll_seconds=3600))  # no polling to help
    server = workspace.server
    try:
        wait_for(lambda: workspace.box.watch is not None, what="users.watch")
        pulls = sum(1 for _, path in server.requests if path.endswith(":pull"))
        wait_for(lambda: sum(1 for _, path in server.requests if path.endswith(":pull")) > pulls + 1,
                 what="a pull waiting")
        time.sleep(0.5)
        assert server.cut_connections() >= 1  # the waiting pull breaks, kept-alive connections too
        mails = [make_mail(30), make_mail(31), make_mail(32)]
        workspace.deliver([mails[0]])
        wait_for(lambda: sha(mails[0]) in archived_mail_hashes(data_dir), timeout=30, what="the mail of the drop")
        watches = server.watch_calls.count(workspace.box.address)
        server.set_outage(True)  # longer than the first pauses: the watch must not give up for polling
        workspace.deliver([mails[1]])
        wait_for(lambda: any(s["error"] for s in watch_status(run)), what="the outage noticed")
        time.sleep(12)
        server.set_outage(False)
        wait_for(lambda: sha(mails[1]) in archived_mail_hashes(data_dir), timeout=40, what="the mail of the outage")
        wait_for(lambda: server.watch_calls.count(workspace.box.address) > watches, timeout=40, what="watched again")
        wait_for(lambda: [(s["mode"], s["error"]) for s in watch_status(run)] == [("push", None)], what="push again")
        workspace.deliver([mails[2]])
        assert wait_for(lambda: sha(mails[2]) in archived_mail_hashes(data_dir), what="a pushed mail after") < 5
    finally:
        server.set_outage(False)
        stop(proc)
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in mails)


def test_push_is_tried_again_after_a_refusal(run, workspace, data_dir, tmp_path):
    topic, subscription = refused_topic(run, workspace, "later")
    proc = start_watcher(data_dir, config_file(tmp_path, watch_poll_seconds=1, watch_push_retry_seconds=3))
    try:
        wait_for(lambda: [s["mode"] for s in watch_status(run)] == ["polling"], what="polling after the refusal")
        workspace.server.add_topic(topic, subscription)  # the administrator grants Gmail the right to publish
        wait_for(lambda: [(s["mode"], s["error"]) for s in watch_status(run)] == [("push", None)], timeout=30,
                 what="push, tried again")
        mail = make_mail(33)
        workspace.deliver([mail])
        wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="the mail")
    finally:
        stop(proc)
