"""Microsoft 365 import benchmark against the Graph emulator with added latency (reports, asserts nothing).

    python bench/graph_bench.py [--latency 0.05] [--mails 400] [--naive-mails 60]

Reports mails per second for
  1. O365 used the naive way: its defaults (200 ms between requests), pages of 25 from
     get_messages, then each message's MIME (/$value), one request after another;
  2. our source, as `archivista-mail import` runs it (delta pages, up to 4 requests in flight);
  3. our source again with 10% of Graph requests answered 429 (Retry-After 0.5 s): mails lost or
     archived twice, and the most requests in flight for the mailbox.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from graph_emulator import GraphEmulator  # noqa: E402
from mailfactory import make_mail  # noqa: E402


def routed_env(emulator: GraphEmulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CURL_CA_BUNDLE", "NO_PROXY", "no_proxy")}
    env.update(emulator.environ())
    return env


def naive(emulator: GraphEmulator, tenant: str, mailbox: str, count: int) -> float:
    """O365 with its defaults, sequential: returns mails per second."""
    os.environ.update(routed_env(emulator))
    for name in ("CURL_CA_BUNDLE", "NO_PROXY", "no_proxy"):
        os.environ.pop(name, None)
    from O365 import Account
    from O365.utils.token import MemoryTokenBackend

    start = time.perf_counter()
    account = Account((f"client-{tenant}", "secret"), auth_flow_type="credentials", tenant_id=tenant,
                      token_backend=MemoryTokenBackend())  # memory only; everything else left at its default
    account.authenticate()
    inbox = account.mailbox(resource=mailbox).inbox_folder()
    fetched = 0
    for message in inbox.get_messages(limit=count, batch=25):
        response = account.con.get(f"https://graph.microsoft.com/v1.0/users/{mailbox}/messages/"
                                   f"{message.object_id}/$value")
        fetched += len(response.content) > 0
    return fetched / (time.perf_counter() - start)


def ours(emulator: GraphEmulator, tenant: str, mailbox: str, work: Path, name: str) -> tuple[float, Path]:
    """The CLI import in its own process: returns (mails per second, data dir)."""
    data = work / name
    env = dict(routed_env(emulator), ARCHIVISTA_MAIL_DATA=str(data))
    subprocess.run([sys.executable, "-m", "archivista_mail", "init"], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "archivista_mail", "account", "add", "o365", "m", "--tenant", tenant,
                    "--client-id", f"client-{tenant}", "--client-secret-stdin", "--mailbox", mailbox],
                   input="secret\n", text=True, env=env, check=True, capture_output=True)
    count = len(emulator.mailboxes[mailbox].folder("inbox").messages)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "archivista_mail", "import", "--no-extract"], env=env, check=True,
                   capture_output=True)
    return count / (time.perf_counter() - start), data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--mails", type=int, default=400)
    parser.add_argument("--naive-mails", type=int, default=60)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    emulator = GraphEmulator().start()
    work = Path(tempfile.mkdtemp(prefix="amgb-"))
    figures: dict[str, object] = {"latency_s": args.latency}
    try:
        emulator.latency = args.latency
        for tenant, count in (("naive", args.naive_mails), ("ours", args.mails), ("storm", args.mails // 2)):
            emulator.add_app(tenant, f"client-{tenant}", "secret")
            emulator.add_mailbox(f"{tenant}@contoso.example")
            emulator.deliver(f"{tenant}@contoso.example", [make_mail(i, body_words=400) for i in range(count)])

        rate = naive(emulator, "naive", "naive@contoso.example", args.naive_mails)
        figures["naive_mails_per_s"] = round(rate, 1)
        print(f"O365 the naive way: {rate:.1f} mails/s ({args.naive_mails} mails, {args.latency * 1000:.0f} ms "
              "latency)", flush=True)

        rate, _ = ours(emulator, "ours", "ours@contoso.example", work, "ours")
        figures["ours_mails_per_s"] = round(rate, 1)
        figures["speedup"] = round(rate / figures["naive_mails_per_s"], 1)
        figures["ours_max_concurrent"] = emulator.max_concurrent["ours@contoso.example"]
        print(f"our source: {rate:.1f} mails/s ({args.mails} mails) = {figures['speedup']}x naive, at most "
              f"{figures['ours_max_concurrent']} requests in flight", flush=True)

        emulator.throttle, emulator.retry_after = 0.10, "0.5"
        rate, data = ours(emulator, "storm", "storm@contoso.example", work, "storm")
        emulator.throttle = 0.0
        with sqlite3.connect(data / "archive.db") as db:
            archived = [r[0] for r in db.execute("SELECT sha256 FROM documents WHERE parent IS NULL")]
        sent = {hashlib.sha256(m.mime).hexdigest()
                for m in emulator.mailboxes["storm@contoso.example"].folder("inbox").messages.values()}
        figures["storm_mails_per_s"] = round(rate, 1)
        figures["storm_lost"] = len(sent - set(archived))
        figures["storm_duplicated"] = len(archived) - len(set(archived))
        figures["storm_max_concurrent"] = emulator.max_concurrent["storm@contoso.example"]
        print(f"with 10% answered 429: {rate:.1f} mails/s, lost {figures['storm_lost']}, archived twice "
              f"{figures['storm_duplicated']}, at most {figures['storm_max_concurrent']} requests in flight", flush=True)
    finally:
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(emulator.dir, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
