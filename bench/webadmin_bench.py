"""WebAdmin under load (reports, asserts nothing): gunicorn with 2 workers, 20 concurrent clients,
an archive of 100,000 documents; median and p95 latency of the search page and the document view.

    python bench/webadmin_bench.py [--documents 100000] [--requests 2000] [--clients 20]

The archive is filled through the importer's own save path (generated mails, 30% with a PDF);
the clients are threads in this process, each logged in with its own session, keeping its
connection open. Search queries mix a word every mail has, a sender (1 in 17 mails), a word of
one mail, and one found only in PDF text; views open random document numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from mailfactory import make_mail  # noqa: E402
from servers import free_port  # noqa: E402


def fill(data: Path, documents: int) -> int:
    """Import generated mails until the archive holds ``documents`` documents."""
    from archivista_mail.archive.embedded import EmbeddedArchive
    from archivista_mail.config import Config
    from archivista_mail.importer import Importer
    from archivista_mail.model import RawMail
    from archivista_mail.pipeline import prepare_all
    from archivista_mail.state import State

    archive = EmbeddedArchive(data)
    archive.ensure_schema()
    n, total = 0, 0
    while total < documents:
        raws = []
        for _ in range(200):
            raw = make_mail(n, body_words=150, attachment="pdf" if n % 10 < 3 else None, secret_word=f"needle{n}")
            raws.append(RawMail(raw, "bench", "INBOX", f"bench:{n}"))
            n += 1
        good, _, _ = prepare_all(raws, [])
        archive.save_batch(good)
        total += sum(len(plans) for _, plans in good)
    state = State(data)
    state.ensure_schema()
    Importer(Config(data_dir=data), archive, state).extract_pending()
    return total


class Client(threading.Thread):
    def __init__(self, port: int, jobs: list[tuple[str, str]], results: dict[str, list[float]]) -> None:
        super().__init__(daemon=True)
        self.port, self.jobs, self.results = port, jobs, results

    def request(self, method: str, path: str, body: str | None = None, headers: dict | None = None):
        self.conn.request(method, path, body=body, headers={**(headers or {}), "Cookie": self.cookie})
        response = self.conn.getresponse()
        data = response.read()
        for value in response.headers.get_all("Set-Cookie") or []:
            self.cookie = value.split(";")[0]
        return response.status, data

    def run(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.cookie = ""
        _, page = self.request("GET", "/login")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
        form = urllib.parse.urlencode({"username": "bench", "password": "bench-password", "csrf_token": token})
        status, _ = self.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 302, status
        for kind, path in self.jobs:
            start = time.perf_counter()
            status, _ = self.request("GET", path)
            elapsed = time.perf_counter() - start
            if status == 200:
                self.results[kind].append(elapsed)
            else:
                self.results["errors"].append(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="of each kind")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="reuse (or create) the archive in this directory")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="amwb-"))
    data = args.keep or work / "data"
    if not (data / "archive.db").exists():
        t = time.perf_counter()
        count = fill(data, args.documents)
        print(f"archive filled: {count} documents in {time.perf_counter() - t:.0f} s", flush=True)
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data))
    subprocess.run([sys.executable, "-m", "archivista_mail", "admin", "create", "bench", "--password-stdin"],
                   input="bench-password\n", text=True, env=env, check=True, capture_output=True)
    with __import__("sqlite3").connect(data / "archive.db") as db:
        top = db.execute("SELECT max(number) FROM documents").fetchone()[0]
        mails = db.execute("SELECT count(*) FROM documents WHERE kind='mail'").fetchone()[0]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2",
                               "webadmin:create_app()"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.05)
        rng = random.Random(1)
        words = ["invoice", "sender3", f"mail{rng.randrange(mails)}", f"needle{rng.randrange(mails)}"]
        jobs = [("search", f"/documents?q={words[i % 4] if i % 4 != 2 else f'mail{rng.randrange(mails)}'}")
                for i in range(args.requests)]
        jobs += [("view", f"/documents/{rng.randrange(1, top + 1)}") for _ in range(args.requests)]
        rng.shuffle(jobs)
        results: dict[str, list] = {"search": [], "view": [], "errors": []}
        clients = [Client(port, jobs[i::args.clients], results) for i in range(args.clients)]
        start = time.perf_counter()
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        elapsed = time.perf_counter() - start
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    figures = {"documents": top, "clients": args.clients, "requests_per_s": round(2 * args.requests / elapsed),
               "errors": len(results["errors"])}
    for kind in ("search", "view"):
        lat = sorted(results[kind])
        figures[f"{kind}_median_ms"] = round(statistics.median(lat) * 1000, 1)
        figures[f"{kind}_p95_ms"] = round(lat[int(len(lat) * 0.95)] * 1000, 1)
        print(f"{kind}: median {figures[f'{kind}_median_ms']} ms, p95 {figures[f'{kind}_p95_ms']} ms "
              f"({len(lat)} requests)", flush=True)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
