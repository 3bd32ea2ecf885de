"""Exchange (EWS) import benchmark against the EWS emulator with added latency (reports, asserts nothing).

    python bench/ews_bench.py [--latency 0.05] [--mails-per-mailbox 300] [--naive-mails 60] [--json FILE]

Reports mails per second, for 1 mailbox and for 4, of
  1. exchangelib used the naive way, in a process of its own: a service account with NTLM and the default retry
     policy, each mailbox by impersonation (no autodiscover), `account.inbox.all().only("id", "changekey")`,
     then each item's MIME content with its own GetItem (`account.fetch([(id, changekey)],
     only_fields=["mime_content"])`), one after another; the mailboxes one after another (--naive-mails per
     mailbox; mails/s = mails / time). The emulator's CA is trusted through exchangelib's HTTP adapter class;
  2. our source, as cron runs `archivista-mail import` (SyncFolderItems pages, many items per GetItem, up to 4
     mailboxes side by side), with the mails lost or archived twice (sha256 of each archived mail against the
     delivered bytes) and the most SOAP requests in flight for one mailbox;
and the ratio ours / naive for each case.
"""

from __future__ import annotations

import argparse
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

from ews_emulator import EwsEmulator  # noqa: E402
from mailfactory import make_mail  # noqa: E402

CASES = (1, 4)  # mailboxes; the importer archives up to 4 side by side
SERVICE, PASSWORD = "EXAMPLE\\svc-archiv", "Dienst-Pa55"


def naive_child() -> None:
    """In the child process: reads {url, ca_file, user, password, mailboxes, count} on stdin, prints
    {seconds, fetched, bytes}."""
    spec = json.loads(sys.stdin.read())
    import requests
    from exchangelib import IMPERSONATION, NTLM, Account, Configuration, Credentials
    from exchangelib.protocol import BaseProtocol

    class TrustingAdapter(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):
            kwargs["verify"] = spec["ca_file"]
            return super().send(request, **kwargs)

    BaseProtocol.HTTP_ADAPTER_CLS = TrustingAdapter
    start = time.perf_counter()
    fetched = size = 0
    config = Configuration(service_endpoint=spec["url"], credentials=Credentials(spec["user"], spec["password"]),
                           auth_type=NTLM)  # the default retry policy
    for mailbox in spec["mailboxes"]:  # one after another
        account = Account(primary_smtp_address=mailbox, config=config, autodiscover=False,
                          access_type=IMPERSONATION)
        for n, item in enumerate(account.inbox.all().only("id", "changekey")):
            if n >= spec["count"]:
                break
            full = next(iter(account.fetch([(item.id, item.changekey)], only_fields=["mime_content"])))
            fetched += len(full.mime_content or b"") > 0
            size += len(full.mime_content or b"")
    print(json.dumps({"seconds": time.perf_counter() - start, "fetched": fetched, "bytes": size}))


def naive(emulator: EwsEmulator, mailboxes: list[str], count: int) -> float:
    """exchangelib the naive way in a child process: returns mails per second."""
    spec = {"url": emulator.url, "ca_file": str(emulator.ca_file), "user": SERVICE, "password": PASSWORD,
            "mailboxes": mailboxes, "count": count}
    result = subprocess.run([sys.executable, __file__, "--naive-child"], input=json.dumps(spec), text=True,
                            capture_output=True)
    if result.returncode:
        print(f"naive run failed (exit {result.returncode}):\n{result.stdout}{result.stderr}", flush=True)
        return 0.0
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return out["fetched"] / out["seconds"]


def cli(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archivista_mail", "--data-dir", str(data), *args],
                          env=dict(os.environ), input=stdin, text=True, capture_output=True)


def ours(emulator: EwsEmulator, mailboxes: list[str], sent: set[str], work: Path, name: str) -> dict[str, object]:
    """The CLI import in its own process, as cron runs it: returns its figures."""
    data = work / name
    for args, stdin in ((["init"], None),
                        (["account", "add", "ews", name, "--url", emulator.url, "--user", SERVICE, "--password-stdin",
                          *[a for m in mailboxes for a in ("--mailbox", m)], "--ca-file", str(emulator.ca_file)],
                         PASSWORD + "\n")):
        result = cli(data, *args, stdin=stdin)
        if result.returncode:
            raise SystemExit(f"archivista-mail {' '.join(args)} failed (exit {result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
    with emulator._lock:
        emulator.requests.clear()
        emulator.max_concurrent.clear()
    start = time.perf_counter()
    result = cli(data, "import")
    seconds = time.perf_counter() - start
    figures: dict[str, object] = {"seconds": round(seconds, 2), "exit_code": result.returncode}
    if result.returncode:
        figures["error"] = (result.stdout + result.stderr).strip()
    listed = cli(data, "docs", "list", "--json", "--kind", "mail", "--limit", "100000")
    archived = Counter(d["sha256"] for d in json.loads(listed.stdout)) if listed.returncode == 0 else Counter()
    figures["mails_per_s"] = round(sum(archived[s] > 0 for s in sent) / seconds, 1)
    figures["lost"] = len(sent - set(archived))
    figures["doubled"] = sum(n - 1 for n in archived.values() if n > 1)
    figures["foreign"] = sum(n for s, n in archived.items() if s not in sent)
    figures["max_concurrent"] = max((emulator.max_concurrent.get(m.lower(), 0) for m in mailboxes), default=0)
    operations = Counter(op for op, _ in emulator.requests)
    figures["get_item_requests"] = operations["GetItem"]
    figures["soap_requests"] = sum(operations.values())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--mails-per-mailbox", type=int, default=300)
    parser.add_argument("--naive-mails", type=int, default=60, help="mails per mailbox for the naive way")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--naive-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_child:
        naive_child()
        return
    emulator = EwsEmulator(auth=("ntlm", "basic")).start()
    work = Path(tempfile.mkdtemp(prefix="amewb-"))
    figures: dict[str, object] = {"latency_s": args.latency, "mails_per_mailbox": args.mails_per_mailbox,
                                  "naive_mails_per_mailbox": args.naive_mails}
    rows = []
    try:
        emulator.latency = args.latency
        emulator.add_user(SERVICE, PASSWORD)
        emulator.grant_impersonation(SERVICE, "all")
        n = 0
        for boxes in CASES:
            naive_boxes = [f"naive{boxes}-{i}@example.test" for i in range(boxes)]
            our_boxes = [f"ours{boxes}-{i}@example.test" for i in range(boxes)]
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

            rate = naive(emulator, naive_boxes, args.naive_mails)
            figures[f"naive_mails_per_s_{label}"] = round(rate, 1)
            print(f"{boxes} mailbox(es), exchangelib the naive way: {rate:.1f} mails/s "
                  f"({args.naive_mails} mails per mailbox, {args.latency * 1000:.0f} ms latency)", flush=True)

            got = ours(emulator, our_boxes, sent, work, f"ours{boxes}")
            speedup = round(got["mails_per_s"] / rate, 1) if rate else None
            figures.update({f"ours_{k}_{label}": v for k, v in got.items()})
            figures[f"speedup_{label}"] = speedup
            print(f"{boxes} mailbox(es), our import: {got['mails_per_s']} mails/s ({args.mails_per_mailbox} mails "
                  f"per mailbox, {got['seconds']} s, exit {got['exit_code']}) = {speedup}x naive; lost "
                  f"{got['lost']}, archived twice {got['doubled']}, at most {got['max_concurrent']} requests in "
                  f"flight per mailbox, {got['get_item_requests']} GetItem of {got['soap_requests']} SOAP requests",
                  flush=True)
            if got.get("error"):
                print(f"  import output:\n{got['error']}", flush=True)
            rows.append((boxes, rate, got, speedup))
        figures["emulator_errors"] = len(emulator.errors)
        for error in emulator.errors:
            print(f"emulator error:\n{error}", flush=True)
    finally:
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(emulator.dir, ignore_errors=True)
    print()
    print(f"{'mailboxes':>9} {'naive/s':>8} {'ours/s':>8} {'ratio':>6} {'lost':>5} {'twice':>5} {'inflight':>8}")
    for boxes, rate, got, speedup in rows:
        print(f"{boxes:>9} {rate:>8.1f} {got['mails_per_s']:>8} {speedup!s:>6} {got['lost']:>5} {got['doubled']:>5} "
              f"{got['max_concurrent']:>8}")
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
