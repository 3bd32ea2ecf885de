#!/usr/bin/env python3
"""Connectivity test an installer runs by hand: log in and show the inbox, change nothing.

    python3 mailtest.py                       the importer's accounts (Microsoft 365 first), from its data dir
    python3 mailtest.py --account NAME        one account
    python3 mailtest.py --tenant T --client-id C --mailbox M    Microsoft 365 settings given here
                                              (the client secret is asked for, or read with --client-secret-stdin)

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
    import getpass

    from archivista_mail.accounts import GRAPH_HOST, Account, validate
    from archivista_mail.config import load_config
    from archivista_mail.errors import ArchivistaMailError, ConfigError
    from archivista_mail.probe import mailtest
    from archivista_mail.state import State
    from archivista_mail.vault import Vault

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("ARCHIVISTA_MAIL_DATA"),
                        help="the importer's data directory (default: as the importer)")
    parser.add_argument("--config", default=os.environ.get("ARCHIVISTA_MAIL_CONFIG"), help="configuration file")
    parser.add_argument("--account", help="test only this account")
    parser.add_argument("--tenant", help="Microsoft 365 tenant (Directory) ID")
    parser.add_argument("--client-id", help="Microsoft 365 application (client) ID")
    parser.add_argument("--mailbox", action="append", help="Microsoft 365 mailbox address (repeatable)")
    parser.add_argument("--client-secret-stdin", action="store_true", help="read the client secret from stdin")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.data_dir, args.config)
        if args.tenant or args.client_id or args.mailbox:
            if args.client_secret_stdin:
                secret = sys.stdin.readline().rstrip("\r\n")
            else:
                secret = getpass.getpass("Client secret: ")
            acc = validate(Account(name="mailtest", kind="o365", host=GRAPH_HOST, port=443, security="ssl",
                                   username=args.client_id or "", secret="", tenant=args.tenant,
                                   mailboxes=tuple(args.mailbox or ()), folders=("inbox",)))
            tests = [(acc, secret)]
        else:
            if not (config.data_dir / "state.db").exists():
                raise ConfigError(f"No archivista-mail settings in {config.data_dir}. Give --data-dir, or the "
                                  "Microsoft 365 settings with --tenant, --client-id and --mailbox.")
            state = State(config.data_dir)
            state.ensure_schema()
            accounts = [state.account(args.account)] if args.account else state.accounts()
            if not accounts:
                raise ConfigError("No accounts are configured yet. Add one in WebAdmin or with "
                                  "'archivista-mail account add'.")
            accounts.sort(key=lambda a: a.kind != "o365")
            vault = Vault(config.key_path)
            tests = [(a, vault.secret_of(a)) for a in accounts]
    except ArchivistaMailError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for acc, secret in tests:
        if len(tests) > 1:
            print(f"== {acc.name} ({acc.kind})")
        try:
            for line in mailtest(acc, secret, config.network_timeout):
                print(line)
        except ArchivistaMailError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
