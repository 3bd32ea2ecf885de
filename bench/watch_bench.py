"""Watch service latency benchmark: from a mail's delivery to its committed document (reports, asserts nothing).

    python bench/watch_bench.py [--mails 100] [--folders 5] [--pop3-mails 12] [--ews-mails 50] [--json FILE]

1. IMAP IDLE: a private Dovecot, one account with --folders folders, all watched with IDLE; --mails mails
   delivered one by one (IMAP APPEND) into random folders at random intervals of 0.2-1.5 s while
   `archivista-mail watch` runs in its own process with the default settings.
2. Polling: a POP3 account (POP3 has no push), polled every watch_poll_seconds (default 30); --pop3-mails
   mails delivered at random intervals of 0-20 s.
3. Exchange streaming notifications: the EWS emulator (tests/ews_emulator.py) in this process, one account
   with two folders of one mailbox; --ews-mails mails delivered into random folders at random intervals of
   0.2-1.5 s.

The latency of a mail is from the moment its APPEND returned to the moment its document is visible in
the archive database (read every 10 ms by the benchmark); reported as median, p95 and max, with the
mails lost or archived twice (sha256 of the archived mails against the delivered bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from ews_emulator import EwsEmulator  # noqa: E402
from mailfactory import make_mail  # noqa: E402
from servers import Dovecot  # noqa: E402

PASSWORD = "bench-Pa55"


def cli(data_dir: Path, *args: str, input: str | None = None) -> None:
    subprocess.run([sys.executable, "-m", "archivista_mail", "--data-dir", str(data_dir), *args], input=input,
                   text=True, check=True, capture_output=True)


class Arrivals:
    """Reads the archive database every 10 ms and notes when each mail's sha256 first appears."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "archive.db"
        self.seen: dict[str, float] = {}
        self.counts: Counter = Counter()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
                    rows = db.execute("SELECT sha256 FROM documents WHERE kind='mail' AND parent IS NULL").fetchall()
                now = time.time()
                self.counts = Counter(r[0] for r in rows)
                for (sha,) in rows:
                    self.seen.setdefault(sha, now)
            except sqlite3.Error:
                pass
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


def measure(data_dir: Path, deliver, mails: list[bytes], pause: tuple[float, float], rng: random.Random,
            settle: float) -> dict:
    arrivals = Arrivals(data_dir)
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    watcher = subprocess.Popen([sys.executable, "-m", "archivista_mail", "watch"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(settle)  # the watches start (IDLE set up, first poll scheduled)
    delivered: dict[str, float] = {}
    try:
        for raw in mails:
            time.sleep(rng.uniform(*pause))
            deliver(raw)
            delivered[hashlib.sha256(raw).hexdigest()] = time.time()
        deadline = time.time() + 120
        while time.time() < deadline and not all(s in arrivals.seen for s in delivered):
            time.sleep(0.1)
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait()
        arrivals.stop()
    latencies = sorted(arrivals.seen[s] - t for s, t in delivered.items() if s in arrivals.seen)
    return {"mails": len(mails), "median_s": round(statistics.median(latencies), 3),
            "p95_s": round(latencies[max(0, int(len(latencies) * 0.95) - 1)], 3), "max_s": round(latencies[-1], 3),
            "lost": sum(1 for s in delivered if s not in arrivals.seen),
            "twice": sum(1 for s in delivered if arrivals.counts.get(s, 0) > 1)}


def imap_idle(server: Dovecot, count: int, folder_count: int, rng: random.Random) -> dict:
    from imapclient import IMAPClient

    folders = ["INBOX"] + [f"Ordner{i}" for i in range(1, folder_count)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        cli(data, "init")
        cli(data, "account", "add", "imap", "idle", "--host", "127.0.0.1", "--port", str(server.ports["imaps"]),
            "--user", "idle", "--password-stdin", "--ca-file", str(server.cert),
            *[x for f in folders for x in ("--folder", f)], input=PASSWORD + "\n")
        cli(data, "settings", "set", "watch_enabled", "1")
        client = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
        client.login("idle", PASSWORD)
        for f in folders[1:]:
            client.create_folder(f)
        mails = [make_mail(i, body_words=rng.randrange(100, 2000)) for i in range(count)]
        result = {"folders": len(folders), **measure(
            data, lambda raw: client.append(rng.choice(folders), raw), mails, (0.2, 1.5), rng, settle=3)}
        client.logout()
    return result


def pop3_polling(server: Dovecot, count: int, rng: random.Random) -> dict:
    from imapclient import IMAPClient

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        cli(data, "init")
        cli(data, "account", "add", "pop3", "pop", "--host", "127.0.0.1", "--port", str(server.ports["pop3s"]),
            "--user", "pop", "--password-stdin", "--ca-file", str(server.cert), input=PASSWORD + "\n")
        cli(data, "settings", "set", "watch_enabled", "1")
        client = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
        client.login("pop", PASSWORD)
        mails = [make_mail(1000 + i) for i in range(count)]
        result = {"poll_seconds": 30, **measure(
            data, lambda raw: client.append("INBOX", raw), mails, (0.0, 20.0), rng, settle=1)}
        client.logout()
    return result


def ews_streaming(count: int, rng: random.Random) -> dict:
    service, mailbox = "EXAMPLE\\svc-archiv", "anna@example.test"
    with EwsEmulator() as ews, tempfile.TemporaryDirectory() as tmp:
        ews.add_mailbox(mailbox, language="de")
        ews.add_user(service, PASSWORD)
        ews.grant_impersonation(service, "all")
        ews.add_folder(mailbox, "inbox/Kunden")
        data = Path(tmp) / "data"
        cli(data, "init")
        cli(data, "account", "add", "ews", "ews", "--url", ews.url, "--user", service, "--password-stdin",
            "--mailbox", mailbox, "--folder", "inbox", "--folder", "Posteingang/Kunden", "--ca-file",
            str(ews.ca_file), input=PASSWORD + "\n")
        cli(data, "settings", "set", "watch_enabled", "1")
        mails = [make_mail(2000 + i, body_words=rng.randrange(100, 2000)) for i in range(count)]
        return {"folders": 2, **measure(
            data, lambda raw: ews.deliver(mailbox, [raw], folder=rng.choice(["inbox", "inbox/Kunden"])), mails,
            (0.2, 1.5), rng, settle=4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=100, help="IMAP IDLE mails (0: leave this part out)")
    parser.add_argument("--folders", type=int, default=5)
    parser.add_argument("--pop3-mails", type=int, default=12, help="POP3 mails (0: leave this part out)")
    parser.add_argument("--ews-mails", type=int, default=50, help="EWS mails (0: leave this part out)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "watch-last-run.json")
    args = parser.parse_args()
    rng = random.Random(14)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    server = Dovecot({"idle": PASSWORD, "pop": PASSWORD}).start()
    try:
        if args.mails:
            results["imap_idle"] = imap_idle(server, args.mails, args.folders, rng)
            print("IMAP IDLE:", results["imap_idle"], flush=True)
        if args.pop3_mails:
            results["pop3_polling"] = pop3_polling(server, args.pop3_mails, rng)
            print("POP3 polling:", results["pop3_polling"], flush=True)
    finally:
        server.stop()
    if args.ews_mails:
        results["ews_streaming"] = ews_streaming(args.ews_mails, rng)
        print("EWS streaming:", results["ews_streaming"], flush=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
