#!/usr/bin/env python3
"""Connectivity test an installer runs by hand: log in and show the inbox, change nothing.

    python3 mailtest.py                       the importer's accounts, from its data dir
    python3 mailtest.py --account NAME        one account
    python3 mailtest.py --tenant T --client-id C --mailbox M    Microsoft 365 settings given here
                                              (the client secret is asked for, or read with --client-secret-stdin)
    python3 mailtest.py --kind imap --host H --user U           any kind's settings, as 'account add' takes them
                                              (--help lists them per kind)

Prints 'Authenticated!', the mailbox, the inbox and the subject of its first message. Exits 0 when
every account tested answered, 1 when one failed (with a sentence saying what to check), 2 when the
settings are incomplete. Secrets are never printed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

INSTALLED_VENV = "/usr/lib/archivista-mail"


def _bootstrap() -> None:
    """Run with the package's own Python when installed; from a checkout, import the package beside us."""
    try:
        import archivista_mail  # noqa: F401
        return
    except ImportError:
        pass
    python = os.path.join(INSTALLED_VENV, "bin", "python")
    # The venv's python is a symlink to Debian's: compare environments, not executables.
    if os.path.exists(python) and sys.prefix != INSTALLED_VENV and not os.environ.get("ARCHIVISTA_MAILTEST_EXEC"):
        os.environ["ARCHIVISTA_MAILTEST_EXEC"] = "1"
        os.execv(python, [python, *sys.argv])
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    _bootstrap()
    import argparse

    from archivista_mail.config import load_config
    from archivista_mail.errors import ArchivistaMailError, ConfigError
    from archivista_mail.probe import inbox_report, mailtest_lines
    from archivista_mail.sources import registry
    from archivista_mail.state import State

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument("--data-dir", default=os.environ.get("ARCHIVISTA_MAIL_DATA"),
                        help="the importer's data directory (default: as the importer)")
    parser.add_argument("--config", default=os.environ.get("ARCHIVISTA_MAIL_CONFIG"), help="configuration file")
    parser.add_argument("--account", help="test only this account")
    parser.add_argument("--kind", choices=list(registry()),
                        help="the kind of the settings given here (found from the options when they fit one kind)")
    args, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        _help(parser)
        return 0
    try:
        config = load_config(args.data_dir, args.config)
        if rest:
            tests = [_given_account(args.kind, rest, config)]
        else:
            if not State.exists(config.data_dir):
                raise ConfigError(f"No archivista-mail settings in {config.data_dir}. Give --data-dir, or the "
                                  "account's settings (e.g. --tenant, --client-id and --mailbox for Microsoft 365).")
            state = State(config.data_dir)
            state.ensure_schema()
            accounts = [state.account(args.account)] if args.account else \
                [a for a in state.accounts() if not a.source.outgoing]  # SMTP accounts have no inbox
            if not accounts:
                raise ConfigError("No accounts are configured yet. Add one in WebAdmin or with "
                                  "'archivista-mail account add'.")
            kinds = list(registry())  # in the order of WebAdmin's account pages
            accounts.sort(key=lambda a: (kinds.index(a.kind) if a.kind in kinds else len(kinds), a.name))
            tests = [(a, None) for a in accounts]
    except ArchivistaMailError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for acc, secret in tests:
        if len(tests) > 1:
            print(f"== {acc.name} ({acc.kind})")
        try:
            for line in mailtest_lines(inbox_report(acc, config, secret)):
                print(line)
        except ArchivistaMailError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _help(parser) -> None:
    from archivista_mail.sources import registry

    parser.print_help()
    for kind, source in registry().items():
        flags = " ".join(f"[{s.flag}{'' if s.type in ('bool',) or s.secret_from == 'stdin' and s.type == 'secret' else ' ...'}]"
                         for s in source.settings if s.type != "after")
        print(f"\n  --kind {kind}: {flags}")


def _given_account(kind: str | None, rest: list[str], config):
    """An account from settings given on the command line (for one kind), and its secret (asked for if need be)."""
    import argparse
    import getpass

    from archivista_mail.accounts import account_from_input
    from archivista_mail.errors import ConfigError
    from archivista_mail.sources import registry

    flags = {arg.split("=", 1)[0] for arg in rest if arg.startswith("--")}
    if kind is None:
        fitting = [k for k, source in registry().items() if flags <= {s.flag for s in source.settings}]
        if len(fitting) != 1:
            raise ConfigError(f"Say which kind of account these settings are for with --kind ({', '.join(registry())}).")
        kind = fitting[0]
    source = registry()[kind]
    parser = argparse.ArgumentParser(prog="mailtest.py")
    for s in source.settings:
        if s.type == "secret":
            parser.add_argument(s.flag, dest="secret_input", action="store_true" if s.secret_from == "stdin" else None)
        elif s.type == "bool":
            parser.add_argument(s.flag, dest=s.name, action="store_true", default=None)
        elif s.type == "list":
            parser.add_argument(s.flag, dest=s.name, action="append")
        else:
            parser.add_argument(s.flag, dest=s.name)
    given = vars(parser.parse_args(rest))
    secret_input = given.pop("secret_input", None)
    acc = account_from_input(kind, "mailtest", given)
    secret = ""
    secret_setting = source.secret_setting()
    if secret_setting is not None:
        if secret_setting.secret_from == "file":
            if not secret_input:
                raise ConfigError(f"Give the {secret_setting.label.en.lower()} with {secret_setting.flag} FILE.")
            secret = Path(secret_input).read_text(encoding="utf-8")
        elif secret_input:
            secret = sys.stdin.readline().rstrip("\r\n")
        else:
            secret = getpass.getpass(f"{secret_setting.label.en}: ")
    return acc, secret


if __name__ == "__main__":
    sys.exit(main())
