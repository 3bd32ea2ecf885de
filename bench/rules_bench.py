"""Rules benchmark: the import with and without 50 rules loaded (reports figures, asserts nothing).

    .venv/bin/python bench/rules_bench.py [--mails 4000] [--rules 50] [--rounds 2] [--json FILE]

Seeds --mails generated mails (as bench/import_bench.py) into a private Dovecot, then imports them
into fresh data directories, alternately without rules and with --rules rules loaded (a mix of
every field and operator, regular expressions included; about one mail in ten matches one that sets
a title, a field and a tag), --rounds times each, and reports the median mails per second of each
and their ratio. The rules are evaluated in the planning step of every mail.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from import_bench import PASSWORD, add_account, bench_mail, run_cli_rss  # noqa: E402
from servers import Dovecot  # noqa: E402

FIELDS = ["from", "to", "subject", "body", "header:X-Mailer", "attachment_name", "attachment_type", "folder"]
OPS = ["contains", "equals", "starts_with", "ends_with", "regex"]


def rule_set(count: int) -> list[dict]:
    """``count`` rules over every field and operator; most match nothing, some match about one mail in ten."""
    rules = []
    for n in range(count):
        field = FIELDS[n % len(FIELDS)]
        op = OPS[n % len(OPS)]
        value = {"regex": rf"(?P<w>Lieferant{n})\s+(\d+)", "equals": f"nobody{n}@example.com"}.get(op, f"word{n}x")
        rules.append({"name": f"rule {n}", "when": {"all": [{"field": field, "op": op, "value": value},
                                                            {"field": "size", "op": "gt", "value": 100}]},
                      "then": [{"set": "title", "value": "{subject} ({from_address})"}, {"tag": f"t{n}"}]})
    rules.append({"name": "matches some", "when": {"any": [{"field": "subject", "op": "regex",
                                                            "value": r"Test mail \d*7 (?P<word>\w+)"}]},
                  "then": [{"set": "field:Wort", "value": "{word}"}, {"tag": "sieben"},
                           {"set": "title", "value": "Mail {word} {date:%Y-%m}"}]})
    return rules[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=4000)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    server = Dovecot({"bench": PASSWORD}).start()
    work = Path(tempfile.mkdtemp(prefix="amr-"))
    rules_file = work / "rules.json"
    rules_file.write_text(json.dumps(rule_set(args.rules)))
    speeds: dict[str, list[float]] = {"none": [], "rules": []}
    try:
        server.write_maildir("bench", [bench_mail(i) for i in range(args.mails)])
        for n in range(args.rounds):
            for which in ("none", "rules"):
                data = work / f"{which}-{n}"
                add_account(data, server, "bench")
                if which == "rules":
                    subprocess.run([sys.executable, "-m", "archivista_mail", "--data-dir", str(data), "rules", "load",
                                    str(rules_file)], check=True, capture_output=True)
                seconds, _ = run_cli_rss(data, "import", "--no-extract")
                speeds[which].append(args.mails / seconds)
                print(f"round {n + 1}, {'without rules' if which == 'none' else f'{args.rules} rules'}: "
                      f"{args.mails / seconds:.0f} mails/s", flush=True)
    finally:
        server.stop()
    none, rules = statistics.median(speeds["none"]), statistics.median(speeds["rules"])
    figures = {"mails": args.mails, "rules": args.rules, "import_mails_per_s_without_rules": round(none),
               "import_mails_per_s_with_rules": round(rules), "with_vs_without": round(rules / none, 3)}
    print(f"median: {none:.0f} mails/s without rules, {rules:.0f} with {args.rules} rules = {rules / none:.3f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
