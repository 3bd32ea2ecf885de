"""How long Dovecot itself takes to announce new mail to an IDLE connection (reports, asserts nothing).

    python bench/dovecot_idle_delay.py [--appends 20] [--json FILE]

A private Dovecot; one bare imapclient connection IDLEs in INBOX while a second one APPENDs a mail; measured is
the time from the APPEND's return to the EXISTS arriving. It is the part of the watch service's IMAP latency
(bench/watch_bench.py) that no client can take away.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import Dovecot  # noqa: E402


def main() -> None:
    from imapclient import IMAPClient

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--appends", type=int, default=20)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "dovecot-idle-last-run.json")
    args = parser.parse_args()
    server = Dovecot({"delay": "bench-Pa55"}).start()
    delays = []
    try:
        watching = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
        watching.login("delay", "bench-Pa55")
        watching.select_folder("INBOX")
        writing = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
        writing.login("delay", "bench-Pa55")
        for _ in range(args.appends):
            watching.idle()
            time.sleep(0.3)
            writing.append("INBOX", b"Subject: delay\r\n\r\nhello\r\n")
            started = time.monotonic()
            if any(r[1:2] == (b"EXISTS",) for r in watching.idle_check(timeout=10)):
                delays.append(time.monotonic() - started)
            watching.idle_done()
    finally:
        server.stop()
    results = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "appends": args.appends,
               "announced": len(delays), "median_s": round(statistics.median(delays), 3),
               "min_s": round(min(delays), 3), "max_s": round(max(delays), 3)}
    print(json.dumps(results, indent=2))
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
