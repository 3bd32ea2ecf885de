"""Watch service soak: the watcher's memory over many reconnect cycles (reports, asserts nothing).

    python bench/watch_soak.py [--minutes 60] [--json FILE]

A private Dovecot behind a TCP proxy; one IMAP account with three folders, two watched with IDLE and the third
with NOTIFY (watch_idle_folders = 2), IDLE renewed every 5 s. `archivista-mail watch` runs in its own process.
Each cycle the proxy drops every connection (the server never notices: like a router restart), a mail is
appended to a random folder, and the cycle ends when the watcher has connected again and archived that mail;
then its RSS (VmRSS) is read. Every 200th cycle Dovecot itself is killed and started again.

Reported: cycles, mails archived, lost or twice, RSS after 20 cycles (warm), at the end and at most, and the
growth per 1000 cycles over the second half (least squares).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mailfactory import make_mail  # noqa: E402
from servers import CuttingProxy, Dovecot  # noqa: E402

PASSWORD = "bench-Pa55"
FOLDERS = ["INBOX", "Rechnungen", "Lieferscheine"]


def cli(data_dir: Path, *args: str, input: str | None = None) -> None:
    subprocess.run([sys.executable, "-m", "archivista_mail", "--data-dir", str(data_dir), *args], input=input,
                   text=True, check=True, capture_output=True)


def archived(data_dir: Path) -> list[str]:
    with closing(sqlite3.connect(f"file:{data_dir / 'archive.db'}?mode=ro", uri=True)) as db:
        return [r[0] for r in db.execute("SELECT sha256 FROM documents WHERE kind='mail' AND parent IS NULL")]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def slope_per_1000(samples: list[int]) -> float:
    half = samples[len(samples) // 2:]
    n = len(half)
    mean_x, mean_y = (n - 1) / 2, sum(half) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(half))
    den = sum((x - mean_x) ** 2 for x in range(n)) or 1
    return num / den * 1000


def main() -> None:
    import hashlib

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "watch-soak-last-run.json")
    args = parser.parse_args()
    rng = random.Random(14)
    server = Dovecot({"soak": PASSWORD}).start()
    proxy = CuttingProxy(server.ports["imaps"])
    samples: list[int] = []
    delivered: list[str] = []
    try:
        from imapclient import IMAPClient

        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            config = Path(tmp) / "watch.conf"
            config.write_text("[archivista-mail]\nwatch_idle_folders = 2\nwatch_idle_renew_seconds = 5\n"
                              "network_timeout = 10\nextract_on_import = false\n")
            cli(data, "init")
            client = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
            client.login("soak", PASSWORD)
            for f in FOLDERS[1:]:
                client.create_folder(f)
            client.logout()
            cli(data, "account", "add", "imap", "soak", "--host", "127.0.0.1", "--port", str(proxy.port),
                "--user", "soak", "--password-stdin", "--ca-file", str(server.cert),
                *[x for f in FOLDERS for x in ("--folder", f)], input=PASSWORD + "\n")
            cli(data, "settings", "set", "watch_enabled", "1")
            env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data), ARCHIVISTA_MAIL_CONFIG=str(config))
            watcher = subprocess.Popen([sys.executable, "-m", "archivista_mail", "watch"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started = time.monotonic()
            try:
                time.sleep(3)
                cycle = 0
                while time.monotonic() - started < args.minutes * 60:
                    cycle += 1
                    connected = proxy.connections
                    if cycle % 200 == 0:
                        server.kill()
                        time.sleep(0.3)
                        server.start()
                    else:
                        proxy.cut_all()
                    raw = make_mail(cycle, body_words=rng.randrange(50, 1500))
                    delivered.append(hashlib.sha256(raw).hexdigest())
                    client = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
                    client.login("soak", PASSWORD)
                    client.append(rng.choice(FOLDERS), raw)
                    client.logout()
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline and not (proxy.connections >= connected + len(FOLDERS) and
                                                               delivered[-1] in archived(data)):
                        time.sleep(0.05)
                    samples.append(rss_kb(watcher.pid))
                    if cycle % 100 == 0:
                        print(f"cycle {cycle}: RSS {samples[-1]} KB", flush=True)
            finally:
                watcher.send_signal(signal.SIGTERM)
                watcher.wait()
            hashes = archived(data)
    finally:
        proxy.close()
        server.stop()
    results = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "minutes": args.minutes,
               "cycles": len(samples), "mails": len(delivered),
               "lost": sum(1 for h in delivered if h not in hashes), "twice": len(hashes) - len(set(hashes)),
               "rss_kb_warm": samples[min(19, len(samples) - 1)], "rss_kb_end": samples[-1],
               "rss_kb_max": max(samples), "growth_kb_per_1000_cycles_second_half": round(slope_per_1000(samples), 1)}
    print(json.dumps(results, indent=2))
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
