"""The document view of a mail with very many inline images (reports, asserts nothing).

    .venv/bin/python bench/inline_images_bench.py [--parts 12000] [--repeat 5] [--no-gunicorn] [--json FILE]

A pen-test found that a 4.7 MB HTML mail with 12,000 ``cid:`` images made the body frame
(/documents/<n>/body) take 30 s, so gunicorn killed the worker. This builds such a mail
(deterministic: multipart/related, one HTML part referring to every image, tiny distinct PNGs),
archives it with ``archivista-mail import --from`` into a temporary data directory and reports:
  1. the mail's size and the import's wall time;
  2. parse_mail of the mail (what the view and the body frame each do once per request);
  3. GET of the view page and of the body frame through the Flask test client;
  4. the same through gunicorn (2 workers, its default 30 s worker timeout), as WebAdmin runs.
Times are median and max over --repeat requests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from mailfactory import make_inline_images_mail  # noqa: E402
from servers import free_port  # noqa: E402


def timed(fn, repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def figures(name: str, times: list[float], extra: str = "") -> dict:
    median, worst = statistics.median(times), max(times)
    print(f"{name}: median {median * 1000:.0f} ms, max {worst * 1000:.0f} ms ({len(times)} runs){extra}", flush=True)
    return {f"{name}_median_ms": round(median * 1000, 1), f"{name}_max_ms": round(worst * 1000, 1)}


def login_form(page: bytes) -> str:
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
    return urllib.parse.urlencode({"username": "bench", "password": "bench-password", "csrf_token": token})


def flask_client(data: Path, number: int, repeat: int) -> dict:
    from archivista_mail.config import Config
    from webadmin import create_app

    client = create_app(Config(data_dir=data)).test_client()
    page = client.get("/login").data
    assert client.post("/login", data=urllib.parse.parse_qs(login_form(page))).status_code == 302
    results = {}
    for name, path in (("flask_view", f"/documents/{number}"), ("flask_body", f"/documents/{number}/body")):
        times, response = timed(lambda path=path: client.get(path), repeat)
        results.update(figures(name, times, f", status {response.status_code}, {len(response.data):,} bytes"))
        results[f"{name}_status"] = response.status_code
    return results


def gunicorn(data: Path, number: int, repeat: int, env: dict) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2",
                               "webadmin:create_app()"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    results: dict = {}
    try:
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.05)
        cookie = ""

        def get(method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
            nonlocal cookie
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)  # a killed worker closes it
            headers = {"Cookie": cookie}
            if body:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                return 0, b""  # the worker was killed mid-request
            finally:
                conn.close()
            for value in response.headers.get_all("Set-Cookie") or []:
                cookie = value.split(";")[0]
            return response.status, data

        _, page = get("GET", "/login")
        assert get("POST", "/login", login_form(page))[0] == 302
        for name, path in (("gunicorn_view", f"/documents/{number}"), ("gunicorn_body", f"/documents/{number}/body")):
            times, (status, data) = timed(lambda path=path: get("GET", path), repeat)
            results.update(figures(name, times, f", status {status or 'connection closed'}, {len(data):,} bytes"))
            results[f"{name}_status"] = status
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=12_000, help="inline images in the mail")
    parser.add_argument("--repeat", type=int, default=5, help="requests of each kind")
    parser.add_argument("--no-gunicorn", action="store_true", help="only the Flask test client")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="amib-"))
    try:
        data, mails = work / "data", work / "mails"
        mails.mkdir()
        raw = make_inline_images_mail(args.parts)
        (mails / "inline-images.eml").write_bytes(raw)
        env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data))
        # import refuses a directory without an archive (since d6102ab): create it first
        subprocess.run([sys.executable, "-m", "archivista_mail", "init"], env=env, check=True, capture_output=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "archivista_mail", "import", "--from", str(mails)], env=env,
                       check=True, capture_output=True)
        imported = time.perf_counter() - start
        subprocess.run([sys.executable, "-m", "archivista_mail", "admin", "create", "bench", "--password-stdin"],
                       input=b"bench-password\n", env=env, check=True, capture_output=True)
        with __import__("sqlite3").connect(data / "archive.db") as db:
            number = db.execute("SELECT number FROM documents WHERE kind='mail' AND parent IS NULL").fetchone()[0]
            documents = db.execute("SELECT count(*) FROM documents").fetchone()[0]
        print(f"mail: {len(raw):,} bytes, {args.parts} inline images; imported as {documents} documents "
              f"in {imported:.1f} s", flush=True)
        results = {"parts": args.parts, "mail_bytes": len(raw), "documents": documents,
                   "import_s": round(imported, 2)}

        from archivista_mail.mime import parse_mail

        times, parsed = timed(lambda: parse_mail(raw), args.repeat)
        results.update(figures("parse_mail", times, f", {len(parsed.parts)} parts"))
        results.update(flask_client(data, number, args.repeat))
        if not args.no_gunicorn:
            results.update(gunicorn(data, number, args.repeat, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
