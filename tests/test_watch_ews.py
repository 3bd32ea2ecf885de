"""The watch service with Exchange streaming notifications: the real exchangelib in the watcher's process against
the EWS emulator (Subscribe, GetStreamingEvents held open as a chunked response, Unsubscribe); a dropped stream, a
server restart that forgets the subscriptions, kill -9 with cron beside, and polling where Exchange refuses
streaming."""

from __future__ import annotations

import random
import threading
import time

from mailfactory import make_mail
from test_faults import archived_mail_hashes, sha
from test_watch import config_file, cron_beside, killed_and_started_again, start_watcher, stop, wait_for, watch_status


def streaming(run) -> bool:
    status = watch_status(run)
    return bool(status) and all(s["mode"] == "streaming" and s["last_seen"] and not s["error"] for s in status)


def streamed(run, exchange, data_dir, tmp_path, *options: str):
    """An EWS account (``options`` for account add), the watch switched on and a watcher started, no polling to
    help; returns the watcher's process."""
    exchange.add_account(run, *options)
    assert run("settings", "set", "watch_enabled", "1").exit_code == 0
    return start_watcher(data_dir, config_file(tmp_path, watch_poll_seconds=3600))


def test_new_mail_is_archived_on_a_streamed_notification(run, exchange, data_dir, tmp_path):
    exchange.server.add_folder(exchange.mailbox, "inbox/Kunden")
    exchange.deliver([make_mail(1)])
    proc = streamed(run, exchange, data_dir, tmp_path, "--folder", "inbox", "--folder", "Posteingang/Kunden")
    try:
        wait_for(lambda: len(archived_mail_hashes(data_dir)) == 1, what="the mail there before")
        wait_for(lambda: len(watch_status(run)) == 2 and streaming(run), what="both folders streamed")
        assert len(exchange.server.subscriptions) == 1  # one stream for the mailbox's folders
        for n, folder in ((2, "inbox"), (3, "Posteingang/Kunden")):
            mail = make_mail(n)
            exchange.deliver([mail], folder=folder)
            assert wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what=f"the mail in {folder}") < 5
        status = {s["folder"]: s for s in watch_status(run)}
        assert status[f"{exchange.mailbox}/Posteingang/Kunden"]["last_latency"] is not None
        time.sleep(1)  # the import's last page
        syncs = sum(op == "SyncFolderItems" for op, _ in exchange.server.requests)
        time.sleep(2)
        assert sum(op == "SyncFolderItems" for op, _ in exchange.server.requests) == syncs  # quiet: no polling
    finally:
        took = stop(proc)
    assert took < 5
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(make_mail(n)) for n in (1, 2, 3))


def test_the_stream_names_the_folder_with_new_mail_not_the_one_a_mail_left(exchange, tmp_path):
    """The source itself: a delivery names its folder; the after-archive move out of it (a MovedEvent whose old
    folder is the watched one) is no news, so it starts no further import."""
    from archivista_mail.accounts import Account
    from archivista_mail.config import load_config

    acc = Account(name="x", kind="ews", settings={
        "url": exchange.server.url, "user": exchange.SERVICE, "auth": "ntlm", "mailboxes": [exchange.mailbox],
        "folders": ["inbox"], "ca_file": str(exchange.server.ca_file)})
    stop = threading.Event()
    with acc.source(acc, exchange.PASSWORD, load_config(tmp_path, config_file(tmp_path))) as source:
        sid = source.stream_subscribe(exchange.mailbox)
        ids = exchange.deliver([make_mail(60)])
        stream = source.stream(exchange.mailbox, sid, 1, stop)
        assert next(stream) == {f"{exchange.mailbox}/inbox"}
        exchange.server.move(exchange.mailbox, ids[0], "archive")
        assert next(stream) == set()
        exchange.deliver([make_mail(61)])
        assert next(stream) == {f"{exchange.mailbox}/inbox"}
        stop.set()
        started = time.monotonic()
        assert list(stream) == [] and time.monotonic() - started < 3  # a stop breaks the stream at once
        source.stream_unsubscribe(exchange.mailbox, sid)
    assert exchange.server.subscriptions == {}


def test_switching_the_watch_off_ends_the_streams_at_once(run, exchange, data_dir, tmp_path):
    proc = streamed(run, exchange, data_dir, tmp_path)
    try:
        wait_for(lambda: streaming(run) and exchange.server.streams_served == 1, what="the stream")
        run("settings", "set", "watch_enabled", "0")
        wait_for(lambda: watch_status(run) == [] and exchange.server.subscriptions == {}, what="the watch ended")
        mail = make_mail(62)
        exchange.deliver([mail])  # no stream left to hear of it
        time.sleep(3)
        assert archived_mail_hashes(data_dir) == [] and watch_status(run) == []
    finally:
        stop(proc)


def test_five_mailboxes_stream_side_by_side_and_the_imports_still_get_connections(run, exchange, data_dir, tmp_path):
    # exchangelib's shared pool has 4 connections: five streams held open in it would leave none for the import
    others = [f"user{i}@example.test" for i in range(4)]
    for address in others:
        exchange.server.add_mailbox(address)
    proc = streamed(run, exchange, data_dir, tmp_path, *[x for a in others for x in ("--mailbox", a)])
    try:
        wait_for(lambda: len(watch_status(run)) == 5 and streaming(run) and exchange.server.streams_served >= 5,
                 what="five streams")
        time.sleep(1)  # the first imports are done
        mails = {address: make_mail(50 + i) for i, address in enumerate([exchange.mailbox, *others])}
        for address, mail in mails.items():
            exchange.deliver([mail], mailbox=address)
        assert wait_for(lambda: all(sha(m) in archived_mail_hashes(data_dir) for m in mails.values()),
                        what="a mail in each mailbox") < 10
    finally:
        stop(proc)
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in mails.values())


def test_a_dropped_stream_loses_and_doubles_nothing(run, exchange, data_dir, tmp_path):
    proc = streamed(run, exchange, data_dir, tmp_path)
    try:
        wait_for(lambda: streaming(run) and exchange.server.streams_served == 1, what="the stream")
        exchange.server.cut_streams()  # the connection drops mid-response
        mails = [make_mail(10), make_mail(11)]
        exchange.deliver([mails[0]])  # while nobody listens
        wait_for(lambda: sha(mails[0]) in archived_mail_hashes(data_dir), timeout=30, what="the mail after the drop")
        wait_for(lambda: streaming(run) and exchange.server.streams_served >= 2, what="a new stream")
        exchange.deliver([mails[1]])
        assert wait_for(lambda: sha(mails[1]) in archived_mail_hashes(data_dir), what="a streamed mail again") < 5
    finally:
        stop(proc)
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in mails)


def test_a_server_restart_that_forgets_the_subscription_is_survived(run, exchange, data_dir, tmp_path):
    proc = streamed(run, exchange, data_dir, tmp_path)
    try:
        wait_for(lambda: streaming(run) and exchange.server.streams_served == 1, what="the stream")
        first = set(exchange.server.subscriptions)
        exchange.server.stop()  # a restart: Exchange forgets the streaming subscriptions
        mails = [make_mail(12), make_mail(13)]
        exchange.deliver([mails[0]])
        time.sleep(8)  # away while the watch tries again (5 s): it must not give up for polling
        exchange.server.start()
        wait_for(lambda: sha(mails[0]) in archived_mail_hashes(data_dir), timeout=40, what="the mail after the restart")
        wait_for(lambda: exchange.server.subscriptions and not set(exchange.server.subscriptions) & first,
                 what="a new subscription")
        wait_for(lambda: streaming(run), what="streaming again")
        exchange.deliver([mails[1]])
        assert wait_for(lambda: sha(mails[1]) in archived_mail_hashes(data_dir), what="a streamed mail again") < 5
    finally:
        stop(proc)
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in mails)


def test_where_exchange_refuses_streaming_the_mailbox_is_polled(run, exchange, data_dir, tmp_path):
    exchange.add_account(run)
    # a throttling policy that allows the service account no more subscriptions
    exchange.server.fail_next.append(("Subscribe", "ErrorExceededSubscriptionCount"))
    run("settings", "set", "watch_enabled", "1")
    proc = start_watcher(data_dir, config_file(tmp_path))  # polling every second
    try:
        wait_for(lambda: [(s["mode"], bool(s["error"])) for s in watch_status(run)] == [("polling", True)],
                 what="the fallback")
        assert "ErrorExceededSubscriptionCount" in watch_status(run)[0]["error"]
        mail = make_mail(20)
        exchange.deliver([mail])
        assert wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="the polled mail") < 6
    finally:
        stop(proc)


def test_kills_and_cron_beside_the_ews_stream_lose_and_double_nothing(run, exchange, data_dir, tmp_path):
    exchange.add_account(run)
    run("settings", "set", "watch_enabled", "1")
    config = config_file(tmp_path, watch_poll_seconds=3600)
    rng = random.Random(15)
    mails = [make_mail(600 + i, body_words=rng.randrange(50, 2000)) for i in range(60)]
    with cron_beside(data_dir, config, 0.5):
        proc = start_watcher(data_dir, config)
        for start in range(0, len(mails), 15):
            exchange.deliver(mails[start:start + 15])
            time.sleep(rng.uniform(0.1, 1.0))
            proc = killed_and_started_again(proc, data_dir, config)
        wait_for(lambda: len(archived_mail_hashes(data_dir)) >= len(mails), timeout=60, what="every mail")
        stop(proc)
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in mails)
