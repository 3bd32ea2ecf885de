"""Import benchmark against a real Dovecot (not a test: it reports figures, it asserts nothing).

    .venv/bin/python bench/import_bench.py [--mails 10000] [--big-mailbox 100000] [--big-attachment-mb 100]

In one run it seeds generated mail (about 50 KB average, 30% with a PDF or Word attachment)
into a private Dovecot and reports:
  1. raw imapclient fetch of the same mails (IMAPS, BODY.PEEK[], batches of 50): the ceiling;
  2. the import (mails durable, catalogued, body text searchable), as the CLI runs it;
  3. a no-op re-run (nothing new), whole command including interpreter start-up;
  4. attachment text extraction on all cores;
  5. peak RSS of each command;
  6. the no-op re-run again with a mailbox and archive of --big-mailbox mails;
  7. one mail with a --big-attachment-mb attachment: its import's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mailfactory import _b64, make_mail  # noqa: E402
from servers import Dovecot  # noqa: E402

PASSWORD = "bench-pw"


def bench_mail(n: int) -> bytes:
    """About 50 KB on average; 20% carry a PDF, 10% a Word document."""
    rng = random.Random(n)
    kind = rng.random()
    if kind < 0.2:
        return make_mail(n, body_words=rng.randint(300, 1500), attachment="pdf",
                         attachment_size=rng.randint(20_000, 45_000), secret_word=f"needle{n}")
    if kind < 0.3:
        return make_mail(n, body_words=rng.randint(3000, 6000), attachment="docx", secret_word=f"needle{n}")
    return make_mail(n, body_words=rng.randint(3000, 11000))


def small_mail(n: int) -> bytes:
    return make_mail(n, body_words=20)


def run_cli_rss(data_dir: Path, *args: str) -> tuple[float, float]:
    """Run the CLI as cron would (through bench/measure.py); returns (seconds, peak RSS in MB)."""
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "measure.py"), sys.executable, "-m",
                          "archivista_mail", *args], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["exit_code"] != 0:
        raise SystemExit(f"archivista-mail {' '.join(args)} exited {result['exit_code']}: {out.stderr}")
    return result["seconds"], result["peak_rss_mb"]


def add_account(data_dir: Path, server: Dovecot, user: str, kind: str = "imap") -> None:
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))
    subprocess.run([sys.executable, "-m", "archivista_mail", "init"], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "archivista_mail", "account", "add", kind, user, "--host", "127.0.0.1",
                    "--port", str(server.ports["imaps" if kind == "imap" else "pop3s"]), "--user", user,
                    "--password-stdin", "--ca-file", str(server.cert)], input=PASSWORD + "\n", text=True, env=env,
                   check=True, capture_output=True)


def raw_fetch(server: Dovecot, user: str, batch: int = 50) -> tuple[float, int, int]:
    """The ceiling: imapclient alone fetching every message. Returns (seconds, mails, bytes)."""
    import ssl

    from imapclient import IMAPClient

    start = time.perf_counter()
    ctx = ssl.create_default_context(cafile=str(server.cert))
    with IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True, ssl_context=ctx) as c:
        c.login(user, PASSWORD)
        c.select_folder("INBOX", readonly=True)
        uids = c.search(["ALL"])
        total = 0
        for i in range(0, len(uids), batch):
            for item in c.fetch(uids[i:i + batch], [b"BODY.PEEK[]"]).values():
                total += len(item[b"BODY[]"])
    return time.perf_counter() - start, len(uids), total


def raw_pop3(server: Dovecot, user: str) -> tuple[float, int]:
    """The POP3 ceiling: poplib alone retrieving every message over POP3S. Returns (seconds, mails)."""
    import poplib
    import ssl

    import archivista_mail.sources.pop3  # noqa: F401 - lifts poplib's 2,048-byte line limit, as the importer does

    start = time.perf_counter()
    client = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=ssl.create_default_context(
        cafile=str(server.cert)))
    client.user(user)
    client.pass_(PASSWORD)
    count = client.stat()[0]
    for number in range(1, count + 1):
        client.retr(number)
    client.quit()
    return time.perf_counter() - start, count


def count(data_dir: Path, sql: str) -> int:
    import sqlite3

    with sqlite3.connect(data_dir / "archive.db") as db:
        return db.execute(sql).fetchone()[0]


def big_attachment_mail(megabytes: int) -> bytes:
    data = random.Random(1).randbytes(megabytes * 1024 * 1024)
    head = ("From: Big <big@example.com>\r\nTo: archive@example.com\r\nSubject: One big attachment\r\n"
            "Message-ID: <big@example.com>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="big-b"\r\n\r\n--big-b\r\n'
            "Content-Type: text/plain\r\n\r\nSee attachment.\r\n--big-b\r\n"
            'Content-Type: application/octet-stream; name="big.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n')
    return head.encode() + _b64(data).encode() + b"\r\n--big-b--\r\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument("--big-mailbox", type=int, default=100_000, help="0 skips the scaling check")
    parser.add_argument("--big-attachment-mb", type=int, default=100, help="0 skips the large-attachment check")
    parser.add_argument("--pop3", type=int, default=1, help="0 skips the POP3 import of the same mails")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    figures: dict[str, object] = {"mails": args.mails}
    server = Dovecot({"bench": PASSWORD, "scale": PASSWORD, "big": PASSWORD, "pop": PASSWORD}).start()
    work = Path(tempfile.mkdtemp(prefix="amb-"))
    try:
        t = time.perf_counter()
        server.write_maildir("bench", [bench_mail(i) for i in range(args.mails)])
        print(f"seeded {args.mails} mails in {time.perf_counter() - t:.1f} s", flush=True)
        raw_fetch(server, "bench")  # warm Dovecot's index and the page cache, as a second cron run would see
        seconds, mails, size = raw_fetch(server, "bench")
        figures["raw_fetch_mails_per_s"] = round(mails / seconds)
        figures["raw_fetch_mb_per_s"] = round(size / seconds / 1e6, 1)
        figures["average_mail_kb"] = round(size / mails / 1024, 1)
        print(f"raw imapclient fetch: {mails / seconds:.0f} mails/s ({size / seconds / 1e6:.0f} MB/s, "
              f"avg {size / mails / 1024:.1f} KB)", flush=True)

        data = work / "data"
        add_account(data, server, "bench")
        seconds, rss = run_cli_rss(data, "import", "--no-extract")
        figures["import_mails_per_s"] = round(args.mails / seconds)
        figures["import_seconds"] = round(seconds, 2)
        figures["import_peak_rss_mb"] = round(rss)
        figures["import_vs_raw_fetch"] = round(args.mails / seconds / figures["raw_fetch_mails_per_s"], 2)
        print(f"import: {args.mails / seconds:.0f} mails/s ({seconds:.1f} s), peak RSS {rss:.0f} MB, "
              f"{figures['import_vs_raw_fetch']:.2f} of raw fetch", flush=True)

        noop = sorted(run_cli_rss(data, "import", "--no-extract")[0] for _ in range(5))
        figures["noop_rerun_s_median"] = round(noop[2], 3)
        print(f"no-op re-run: median {noop[2] * 1000:.0f} ms (of 5: {', '.join(f'{s * 1000:.0f}' for s in noop)})",
              flush=True)

        pending = count(data, "SELECT count(*) FROM documents WHERE text_status='pending'")
        pdfs = count(data, "SELECT count(*) FROM documents WHERE text_status='pending' AND mime_type='application/pdf'")
        seconds, rss = run_cli_rss(data, "extract")
        figures["extract_docs_per_s"] = round(pending / seconds)
        figures["extract_pdfs"] = pdfs
        figures["extract_peak_rss_mb"] = round(rss)
        print(f"attachment text: {pending} documents ({pdfs} PDFs) in {seconds:.1f} s = {pending / seconds:.0f}/s "
              f"on {os.cpu_count()} cores, peak RSS {rss:.0f} MB (largest process)", flush=True)

        if args.pop3:  # the same mails through POP3: since the one loop, the same fetch/parse/save pipeline
            server.write_maildir("pop", [bench_mail(i) for i in range(args.mails)])
            raw_pop3(server, "pop")  # warm the index, as for IMAP
            seconds, mails = raw_pop3(server, "pop")
            figures["raw_pop3_mails_per_s"] = round(mails / seconds)
            pop = work / "pop"
            add_account(pop, server, "pop", kind="pop3")
            seconds, rss = run_cli_rss(pop, "import", "--no-extract")
            figures["pop3_import_mails_per_s"] = round(args.mails / seconds)
            figures["pop3_import_vs_raw"] = round(args.mails / seconds / figures["raw_pop3_mails_per_s"], 2)
            figures["pop3_import_peak_rss_mb"] = round(rss)
            print(f"POP3: raw poplib RETR {figures['raw_pop3_mails_per_s']} mails/s; import {args.mails / seconds:.0f} "
                  f"mails/s ({figures['pop3_import_vs_raw']:.2f} of raw), peak RSS {rss:.0f} MB", flush=True)

        if args.big_mailbox:
            scale = work / "scale"
            t = time.perf_counter()
            server.write_maildir("scale", [small_mail(i) for i in range(args.big_mailbox)])
            add_account(scale, server, "scale")
            run_cli_rss(scale, "import", "--no-extract")
            print(f"scale mailbox: {args.big_mailbox} mails seeded and imported in {time.perf_counter() - t:.0f} s",
                  flush=True)
            big_noop = sorted(run_cli_rss(scale, "import", "--no-extract")[0] for _ in range(5))
            figures["noop_rerun_big_s_median"] = round(big_noop[2], 3)
            figures["noop_big_vs_small"] = round(big_noop[2] / noop[2], 2)
            print(f"no-op re-run at {args.big_mailbox} mails: median {big_noop[2] * 1000:.0f} ms "
                  f"= {big_noop[2] / noop[2]:.2f}x the {args.mails}-mail figure", flush=True)

        if args.big_attachment_mb:
            big = work / "big"
            server.write_maildir("big", [big_attachment_mail(args.big_attachment_mb)])
            add_account(big, server, "big")
            seconds, rss = run_cli_rss(big, "import", "--no-extract")
            figures["big_attachment_mb"] = args.big_attachment_mb
            figures["big_attachment_peak_rss_mb"] = round(rss)
            print(f"one {args.big_attachment_mb} MB attachment: imported in {seconds:.1f} s, peak RSS {rss:.0f} MB "
                  f"= {rss / args.big_attachment_mb:.1f}x its size", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    main()
