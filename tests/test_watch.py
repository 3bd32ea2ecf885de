"""The watch service against a real Dovecot: IMAP IDLE and polling, exactly once with kills, cron beside it,
a mail server restart, and SIGTERM. The watcher is the real command in its own process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
from conftest import PASSWORD, Mailbox, fresh_mailbox
from mailfactory import make_mail
from servers import CuttingProxy, Dovecot
from test_faults import archived_mail_hashes, sha


def config_file(tmp_path, **settings) -> str:
    values = {"watch_poll_seconds": 1, "watch_idle_renew_seconds": 5, "extract_on_import": "false", **settings}
    path = tmp_path / "watch.conf"
    path.write_text("[archivista-mail]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    return str(path)


def start_watcher(data_dir, config: str) -> subprocess.Popen:
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir), ARCHIVISTA_MAIL_CONFIG=config)
    return subprocess.Popen([sys.executable, "-m", "archivista_mail", "watch"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@contextmanager
def cron_beside(data_dir, config: str, pause: float):
    """A cron-like loop running 'archivista-mail import' every ``pause`` seconds, beside the watcher; killed after,
    with the import it may be running."""
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir), ARCHIVISTA_MAIL_CONFIG=config)
    cron = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\nwhile True:\n"
                             "    subprocess.run([sys.executable, '-m', 'archivista_mail', 'import'], "
                             f"stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n    time.sleep({pause})\n"],
                            env=env, start_new_session=True)
    try:
        yield cron
    finally:
        os.killpg(cron.pid, signal.SIGKILL)  # the loop and the import it may be running: its own process group
        cron.wait()


def killed_and_started_again(proc: subprocess.Popen, data_dir, config: str) -> subprocess.Popen:
    """SIGKILL the watcher, then start a new one."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return start_watcher(data_dir, config)


def watch_status(run) -> list[dict]:
    return json.loads(run("watch-status", "--json").output)


def wait_for(condition, timeout: float = 20.0, what: str = "") -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"not within {timeout} s: {what}")


def add_imap(run, box: Mailbox, *folders: str, name: str = "acct", port: int | None = None) -> None:
    options = [x for f in folders for x in ("--folder", f)]
    result = run("account", "add", "imap", name, "--host", "127.0.0.1", "--port",
                 str(port or box.server.ports["imaps"]), "--user", box.user, "--password-stdin", "--ca-file",
                 str(box.server.cert), *options, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output


def stop(proc: subprocess.Popen) -> float:
    """SIGTERM; returns how long it took to end."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    proc.stderr.close()
    return time.monotonic() - started


def test_mail_delivered_while_watching_is_archived_within_seconds_exactly_once(run, mailbox, data_dir, tmp_path):
    add_imap(run, mailbox, "INBOX", "Rechnungen")
    mailbox.append([make_mail(1)], folder="Rechnungen")
    assert run("settings", "set", "watch_enabled", "1").exit_code == 0
    proc = start_watcher(data_dir, config_file(tmp_path, watch_idle_renew_seconds=1500))
    try:
        wait_for(lambda: len(archived_mail_hashes(data_dir)) == 1, what="the mail there before the start")
        wait_for(lambda: sum(1 for s in watch_status(run) if s["mode"] == "idle" and s["last_seen"]) == 2,
                 what="both folders in IDLE")
        mails = [make_mail(2), make_mail(3)]
        mailbox.append([mails[0]])
        latency = wait_for(lambda: sha(mails[0]) in archived_mail_hashes(data_dir), what="the INBOX mail")
        assert latency < 5  # no poll interval in between: IDLE told the watcher (polling is 1 s here, not used)
        mailbox.append([mails[1]], folder="Rechnungen")
        wait_for(lambda: sha(mails[1]) in archived_mail_hashes(data_dir), what="the Rechnungen mail")
        status = {s["folder"]: s for s in watch_status(run)}
        assert status["INBOX"]["mode"] == "idle" and status["INBOX"]["last_latency"] is not None
    finally:
        took = stop(proc)
    assert took < 5
    hashes = archived_mail_hashes(data_dir)
    assert len(hashes) == len(set(hashes)) == 3


def test_without_the_setting_the_watcher_waits_and_archives_nothing(run, mailbox, data_dir, tmp_path):
    add_imap(run, mailbox, "INBOX")
    mailbox.append([make_mail(1)])
    proc = start_watcher(data_dir, config_file(tmp_path))
    try:
        time.sleep(2)
        assert archived_mail_hashes(data_dir) == []
        assert run("settings", "set", "watch_enabled", "1").exit_code == 0  # read again within 10 s
        wait_for(lambda: len(archived_mail_hashes(data_dir)) == 1, timeout=20, what="the switch to take effect")
    finally:
        stop(proc)


def test_pop3_is_polled(run, mailbox, data_dir, tmp_path):
    result = run("account", "add", "pop3", "pop", "--host", "127.0.0.1", "--port",
                 str(mailbox.server.ports["pop3s"]), "--user", mailbox.user, "--password-stdin", "--ca-file",
                 str(mailbox.server.cert), input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert run("settings", "set", "watch_enabled", "1").exit_code == 0
    proc = start_watcher(data_dir, config_file(tmp_path))
    try:
        wait_for(lambda: [s["mode"] for s in watch_status(run)] == ["polling"], what="the POP3 poll")
        time.sleep(0.5)
        mail = make_mail(7)
        mailbox.append([mail])
        assert wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="the POP3 mail") < 5
    finally:
        stop(proc)


def test_kills_restarts_and_cron_beside_the_watcher_lose_and_double_nothing(run, mailbox, data_dir, tmp_path):
    add_imap(run, mailbox, "INBOX", "Rechnungen")
    assert run("settings", "set", "watch_enabled", "1").exit_code == 0
    config = config_file(tmp_path)
    rng = random.Random(14)
    mails = [make_mail(100 + i, body_words=rng.randrange(50, 3000)) for i in range(120)]
    kills = 0
    with cron_beside(data_dir, config, 0.3):
        proc = start_watcher(data_dir, config)
        for start in range(0, len(mails), 20):
            mailbox.append(mails[start:start + 10])
            mailbox.append(mails[start + 10:start + 20], folder="Rechnungen")
            time.sleep(rng.uniform(0.2, 1.5))  # mid-import, mid-IDLE, between
            proc = killed_and_started_again(proc, data_dir, config)
            kills += 1
        wait_for(lambda: len(archived_mail_hashes(data_dir)) >= len(mails), timeout=60, what="every mail")
        time.sleep(1)
        stop(proc)
    hashes = archived_mail_hashes(data_dir)
    assert kills == 6
    assert sorted(hashes) == sorted(sha(m) for m in mails)  # every one, none twice


def test_a_mail_server_restart_is_survived(run, data_dir, tmp_path):
    server = Dovecot({"w001": PASSWORD}).start()
    try:
        box = fresh_mailbox(server)
        add_imap(run, box, "INBOX")
        assert run("settings", "set", "watch_enabled", "1").exit_code == 0
        # IDLE renewed only every 25 minutes: the closed connection must be noticed by itself, not at renewal
        proc = start_watcher(data_dir, config_file(tmp_path, network_timeout=5, watch_idle_renew_seconds=1500,
                                                   watch_poll_seconds=3600))
        try:
            wait_for(lambda: any(s["last_seen"] for s in watch_status(run)), what="IDLE")
            server.kill()
            time.sleep(1)
            server.start()  # same ports, same mail
            mail = make_mail(9)
            box.append([mail])
            wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), timeout=30, what="the mail after the restart")
            assert [s["mode"] for s in watch_status(run)] == ["idle"]
        finally:
            stop(proc)
    finally:
        server.stop()
    assert len(archived_mail_hashes(data_dir)) == 1


def test_webadmin_switches_the_watch_on_and_shows_how_each_folder_is_watched(run, mailbox, data_dir, tmp_path):
    from test_webadmin import csrf
    from test_webadmin_gmail_ews import admin_client

    add_imap(run, mailbox, "INBOX", "Rechnungen")
    client = admin_client(run, data_dir)
    page = client.get("/imports/")
    assert "Sofort archivieren (Push)" in page.data.decode() and 'id="watch" checked' not in page.data.decode()
    assert client.post("/imports/watch", data={"csrf_token": csrf(page.data), "watch": "1"}).status_code == 302
    assert run("settings", "show", "--json").output.count('"watch_enabled": "1"') == 1
    proc = start_watcher(data_dir, config_file(tmp_path, watch_idle_folders=1))
    try:
        wait_for(lambda: {(s["folder"], s["mode"]) for s in watch_status(run) if s["last_seen"]} ==
                 {("INBOX", "idle"), ("Rechnungen", "notify")}, what="IDLE and NOTIFY")
        mail = make_mail(5)
        mailbox.append([mail], folder="Rechnungen")  # beyond the IDLE limit: Dovecot offers NOTIFY
        wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="the notified folder's mail")
        shown = client.get("/imports/").data.decode()
        assert 'id="watch" checked' in shown and "IMAP IDLE" in shown and "Abfrage alle" not in shown
        assert "<td>Rechnungen</td><td>IMAP NOTIFY" in shown
    finally:
        stop(proc)


def test_folders_beyond_the_idle_limit_share_one_connection_with_notify(run, mailbox, data_dir, tmp_path):
    folders = ["INBOX", "Rechnungen", "Lieferscheine", "2026", "Überweisungen"]
    for folder in folders[1:]:
        mailbox.append([], folder=folder)
    add_imap(run, mailbox, *folders)
    assert run("settings", "set", "watch_enabled", "1").exit_code == 0
    # polling once an hour: only NOTIFY can bring these mails within seconds
    proc = start_watcher(data_dir, config_file(tmp_path, watch_idle_folders=1, watch_poll_seconds=3600,
                                               watch_idle_renew_seconds=1500))
    try:
        expected = {"INBOX": "idle", "Rechnungen": "notify", "Lieferscheine": "notify", "2026": "notify",
                    "Überweisungen": "polling"}  # Dovecot 2.3 announces no names beyond ASCII: polled
        wait_for(lambda: {s["folder"]: s["mode"] for s in watch_status(run) if s["last_seen"]} == expected,
                 what="IDLE, NOTIFY and polling")
        mails = {folder: make_mail(40 + i) for i, folder in enumerate(["Lieferscheine", "2026", "Rechnungen"])}
        for folder, mail in mails.items():
            mailbox.append([mail], folder=folder)
            assert wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what=f"the mail in {folder}") < 5
        status = {s["folder"]: s for s in watch_status(run)}
        assert status["2026"]["last_latency"] is not None
    finally:
        stop(proc)
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in mails.values())


def test_notify_announces_new_mail_not_expunges_and_survives_announcements_between_commands(mailbox, tmp_path):
    """The source itself against Dovecot: NOTIFY's STATUS says which folder got mail; an expunge there (the
    after-archive move) is no news; a STATUS that arrives while no IDLE runs is kept, not taken for an error."""
    from archivista_mail.accounts import Account
    from archivista_mail.config import load_config

    mailbox.append([], folder="Rechnungen")
    mailbox.append([], folder="Lieferscheine")
    acc = Account(name="n", kind="imap", settings={
        "host": "127.0.0.1", "port": mailbox.server.ports["imaps"], "security": "ssl", "user": mailbox.user,
        "ca_file": str(mailbox.server.cert), "folders": ["Rechnungen", "Lieferscheine"]})
    never = threading.Event()
    with acc.source(acc, PASSWORD, load_config(tmp_path, config_file(tmp_path))) as source:
        assert source.notify(["Rechnungen", "Lieferscheine"]) == ["Rechnungen", "Lieferscheine"]
        assert source.idle(never, 1.5) == set()  # quiet: nothing announced
        mailbox.append([make_mail(1)], folder="Lieferscheine")
        assert source.idle(never, 5) == {"Lieferscheine"}
        with mailbox.client() as other:  # the after-archive action: gone from the folder
            other.select_folder("Lieferscheine")
            other.delete_messages(other.search())
            other.expunge()
        assert source.idle(never, 2) == set()
        mailbox.append([make_mail(2)], folder="Rechnungen")  # between two IDLEs: arrives before the "+"
        time.sleep(0.5)
        assert source.idle(never, 5) == {"Rechnungen"}
        assert source.idle(never, 1) == set()


def test_without_notify_folders_beyond_the_idle_limit_are_polled_with_status(run, cyrus_box, data_dir, tmp_path):
    add_imap(run, cyrus_box, "INBOX", "Rechnungen", port=cyrus_box.server.ports["imaps"])
    cyrus_box.append([], folder="INBOX.Rechnungen")
    assert run("settings", "set", "watch_enabled", "1").exit_code == 0
    proc = start_watcher(data_dir, config_file(tmp_path, watch_idle_folders=1, watch_poll_seconds=2))
    try:
        wait_for(lambda: {(s["folder"], s["mode"]) for s in watch_status(run) if s["last_seen"]} ==
                 {("INBOX", "idle"), ("Rechnungen", "polling")}, what="IDLE and STATUS polling")
        mail = make_mail(6)
        cyrus_box.append([mail], folder="INBOX.Rechnungen")
        wait_for(lambda: sha(mail) in archived_mail_hashes(data_dir), what="the polled folder's mail")
    finally:
        stop(proc)
    assert archived_mail_hashes(data_dir) == [sha(mail)]


def test_sigterm_ends_the_watcher_within_seconds_after_a_commit_and_a_restart_goes_on(run, mailbox, data_dir,
                                                                                      tmp_path):
    mails = [make_mail(1000 + i, body_words=800) for i in range(1500)]
    mailbox.server.write_maildir(mailbox.user, mails)
    add_imap(run, mailbox, "INBOX")
    assert run("settings", "set", "watch_enabled", "1").exit_code == 0
    config = config_file(tmp_path)
    proc = start_watcher(data_dir, config)
    wait_for(lambda: len(archived_mail_hashes(data_dir)) >= 100, timeout=60, what="the catch-up to be under way")
    took = stop(proc)
    assert proc.returncode == 0 and took < 5, took
    done = len(archived_mail_hashes(data_dir))
    assert done < len(mails), "the backlog was done before SIGTERM came: nothing to prove"
    proc = start_watcher(data_dir, config)
    try:
        wait_for(lambda: len(archived_mail_hashes(data_dir)) == len(mails), timeout=120, what="the rest")
    finally:
        stop(proc)
    assert sorted(archived_mail_hashes(data_dir)) == sorted(sha(m) for m in mails)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_the_watchers_memory_stays_flat_over_many_idle_and_reconnect_cycles(run, data_dir, tmp_path):
    """IDLE re-issued every second, the connection dropped 40 times (a proxy cuts it: the server never notices)
    and the server killed and started again twice: RSS after the first cycles and at the end differ by little.
    bench/watch_soak.py runs the same for an hour."""
    server = Dovecot({"m001": PASSWORD}).start()
    proxy = CuttingProxy(server.ports["imaps"])
    try:
        box = fresh_mailbox(server)
        add_imap(run, box, "INBOX", port=proxy.port)
        assert run("settings", "set", "watch_enabled", "1").exit_code == 0
        proc = start_watcher(data_dir, config_file(tmp_path, watch_idle_renew_seconds=1, network_timeout=5))
        try:
            wait_for(lambda: any(s["last_seen"] for s in watch_status(run)), what="IDLE")
            samples = []
            for cycle in range(40):
                connected = proxy.connections
                if cycle in (15, 30):
                    server.kill()
                    time.sleep(0.3)
                    server.start()  # same ports, same mail
                else:
                    proxy.cut_all()
                box.append([make_mail(cycle)])
                wait_for(lambda: proxy.connections > connected and sha(make_mail(cycle)) in
                         archived_mail_hashes(data_dir), timeout=30, what=f"cycle {cycle}: connected again")
                samples.append(rss_kb(proc.pid))
        finally:
            stop(proc)
    finally:
        proxy.close()
        server.stop()
    assert len(archived_mail_hashes(data_dir)) == 40
    print(f"watcher RSS after each cycle (KB): {samples}")
    growth = samples[-1] - samples[4]
    assert growth < 2048, f"RSS grew by {growth} KB over the cycles: {samples}"
