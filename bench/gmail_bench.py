"""Google Workspace import benchmark against the Gmail emulator with added latency (reports, asserts nothing).

    python bench/gmail_bench.py [--latency 0.05] [--mails-per-mailbox 200] [--naive-mails 60] [--json FILE]

Reports mails per second, for 1 mailbox and for 4, of
  1. Google's client library used the naive way, in a process of its own (httplib2 reads its CA bundle at
     import): a service account's credentials with_subject(mailbox), build("gmail", "v1") with its defaults,
     messages.list pages of INBOX (default maxResults), then messages.get format=raw one message after another,
     base64-decoded; the mailboxes one after another (--naive-mails per mailbox; mails/s = mails / time);
  2. our source, as cron runs `archivista-mail import` (HTTP batches within Gmail's per-user quota of 250 units
     a second, messages.get costing 5: at most 50 mails/s per mailbox; up to 4 mailboxes side by side), with
     the mails lost or archived twice (sha256 of each archived mail against the delivered bytes), the
     emulator's refusals for quota (over_quota, should be 0), the most quota units one mailbox spent within a
     second (Gmail allows 250) and the largest HTTP batch;
and the ratio ours / naive for each case.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gmail_emulator import SCOPE_READONLY, GmailEmulator  # noqa: E402
from mailfactory import make_mail  # noqa: E402

CASES = (1, 4)  # mailboxes; the importer archives up to 4 side by side


def routed_env(emulator: GmailEmulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CURL_CA_BUNDLE", "NO_PROXY", "no_proxy")}
    env.update(emulator.environ())
    return env


def naive_child() -> None:
    """In the child process (environment routed to the emulator): reads {info, mailboxes, count} on stdin,
    prints {seconds, fetched, bytes}."""
    spec = json.loads(sys.stdin.read())
    from google.oauth2 import service_account
    from googleapiclient.discovery import build

    start = time.perf_counter()
    fetched = size = 0
    for mailbox in spec["mailboxes"]:  # one after another, everything at the library's defaults
        credentials = service_account.Credentials.from_service_account_info(
            spec["info"], scopes=[SCOPE_READONLY]).with_subject(mailbox)
        service = build("gmail", "v1", credentials=credentials, cache_discovery=False)
        messages = service.users().messages()
        ids: list[str] = []
        token = None
        while len(ids) < spec["count"]:
            page = messages.list(userId="me", labelIds=["INBOX"], pageToken=token).execute()
            ids += [m["id"] for m in page.get("messages", [])]
            token = page.get("nextPageToken")
            if not token:
                break
        for mid in ids[:spec["count"]]:
            message = messages.get(userId="me", id=mid, format="raw").execute()
            raw = base64.urlsafe_b64decode(message["raw"])
            fetched += len(raw) > 0
            size += len(raw)
    print(json.dumps({"seconds": time.perf_counter() - start, "fetched": fetched, "bytes": size}))


def naive(emulator: GmailEmulator, info: dict, mailboxes: list[str], count: int) -> float:
    """google-api-python-client the naive way in a child process: returns mails per second."""
    result = subprocess.run([sys.executable, __file__, "--naive-child"], env=routed_env(emulator), text=True,
                            input=json.dumps({"info": info, "mailboxes": mailboxes, "count": count}),
                            capture_output=True)
    if result.returncode:
        print(f"naive run failed (exit {result.returncode}):\n{result.stdout}{result.stderr}", flush=True)
        return 0.0
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return out["fetched"] / out["seconds"]


def cli(env: dict[str, str], data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archivista_mail", "--data-dir", str(data), *args], env=env,
                          input=stdin, text=True, capture_output=True)


def ours(emulator: GmailEmulator, key_file: Path, mailboxes: list[str], sent: set[str], work: Path,
         name: str) -> dict[str, object]:
    """The CLI import in its own process, as cron runs it: returns its figures."""
    data = work / name
    env = routed_env(emulator)
    for args in (["init"], ["account", "add", "gmail", name, "--service-account-file", str(key_file),
                            *[a for m in mailboxes for a in ("--mailbox", m)]]):
        result = cli(env, data, *args)
        if result.returncode:
            raise SystemExit(f"archivista-mail {' '.join(args)} failed (exit {result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
    emulator.reset_stats()
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "archivista_mail", "--data-dir", str(data), "import"], env=env,
                            text=True, capture_output=True)
    seconds = time.perf_counter() - start
    figures: dict[str, object] = {"seconds": round(seconds, 2), "exit_code": result.returncode}
    if result.returncode:
        figures["error"] = (result.stdout + result.stderr).strip()
    listed = cli(env, data, "docs", "list", "--json", "--kind", "mail", "--limit", "100000")
    archived = Counter(d["sha256"] for d in json.loads(listed.stdout)) if listed.returncode == 0 else Counter()
    figures["mails_per_s"] = round(sum(archived[s] > 0 for s in sent) / seconds, 1)
    figures["lost"] = len(sent - set(archived))
    figures["doubled"] = sum(n - 1 for n in archived.values() if n > 1)
    figures["foreign"] = sum(n for s, n in archived.items() if s not in sent)
    figures["over_quota"] = emulator.over_quota
    figures["max_units_per_s"] = max((emulator.max_units_per_second.get(m.lower(), 0) for m in mailboxes),
                                     default=0)
    figures["largest_batch"] = max(emulator.batch_sizes, default=0)
    figures["max_concurrent"] = max((emulator.max_concurrent.get(m.lower(), 0) for m in mailboxes), default=0)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--mails-per-mailbox", type=int, default=200)
    parser.add_argument("--naive-mails", type=int, default=60, help="mails per mailbox for the naive way")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--naive-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_child:
        naive_child()
        return
    emulator = GmailEmulator().start()
    work = Path(tempfile.mkdtemp(prefix="amgmb-"))
    figures: dict[str, object] = {"latency_s": args.latency, "mails_per_mailbox": args.mails_per_mailbox,
                                  "naive_mails_per_mailbox": args.naive_mails}
    rows = []
    try:
        emulator.latency = args.latency
        info = emulator.add_service_account("archivista-bench@bench-project.iam.gserviceaccount.com")
        emulator.authorize(info["client_id"], [SCOPE_READONLY])
        key_file = work / "service-account.json"
        key_file.write_text(json.dumps(info))
        n = 0
        for boxes in CASES:
            naive_boxes = [f"naive{boxes}-{i}@kanzlei.example" for i in range(boxes)]
            our_boxes = [f"ours{boxes}-{i}@kanzlei.example" for i in range(boxes)]
            sent: set[str] = set()
            for address, count in [(a, args.naive_mails) for a in naive_boxes] + \
                                  [(a, args.mails_per_mailbox) for a in our_boxes]:
                emulator.add_mailbox(address)
                mails = [make_mail(i) for i in range(n, n + count)]
                n += count
                emulator.deliver(address, mails)
                if address in our_boxes:
                    sent |= {hashlib.sha256(m).hexdigest() for m in mails}
            label = f"{boxes}_mailbox" + ("es" if boxes > 1 else "")

            emulator.reset_stats()
            rate = naive(emulator, info, naive_boxes, args.naive_mails)
            figures[f"naive_mails_per_s_{label}"] = round(rate, 1)
            figures[f"naive_max_units_per_s_{label}"] = max(emulator.max_units_per_second.values(), default=0)
            print(f"{boxes} mailbox(es), Google's library the naive way: {rate:.1f} mails/s "
                  f"({args.naive_mails} mails per mailbox, {args.latency * 1000:.0f} ms latency)", flush=True)

            got = ours(emulator, key_file, our_boxes, sent, work, f"ours{boxes}")
            speedup = round(got["mails_per_s"] / rate, 1) if rate else None
            figures.update({f"ours_{k}_{label}": v for k, v in got.items()})
            figures[f"speedup_{label}"] = speedup
            print(f"{boxes} mailbox(es), our import: {got['mails_per_s']} mails/s ({args.mails_per_mailbox} mails "
                  f"per mailbox, {got['seconds']} s, exit {got['exit_code']}) = {speedup}x naive; lost "
                  f"{got['lost']}, archived twice {got['doubled']}, over quota {got['over_quota']}, at most "
                  f"{got['max_units_per_s']} units/s per mailbox, largest batch {got['largest_batch']}", flush=True)
            if got.get("error"):
                print(f"  import output:\n{got['error']}", flush=True)
            rows.append((boxes, rate, got, speedup))
    finally:
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(emulator.dir, ignore_errors=True)
    print()
    print(f"{'mailboxes':>9} {'naive/s':>8} {'ours/s':>8} {'ratio':>6} {'lost':>5} {'twice':>5} {'overq':>5} "
          f"{'units/s':>7} {'batch':>5}")
    for boxes, rate, got, speedup in rows:
        print(f"{boxes:>9} {rate:>8.1f} {got['mails_per_s']:>8} {speedup!s:>6} {got['lost']:>5} {got['doubled']:>5} "
              f"{got['over_quota']:>5} {got['max_units_per_s']:>7} {got['largest_batch']:>5}")
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
