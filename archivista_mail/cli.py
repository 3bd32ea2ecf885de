"""The archivista-mail command line: thin click commands over the library.

Exit codes fit cron: 0 ok, 1 some messages or folders failed, 2 configuration error, 3 no
account reachable, 4 unexpected error.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from . import __version__
from .accounts import Account
from .archive import open_archive
from .config import DEFAULT_CONFIG_FILE, DEFAULT_DATA_DIR, Config, load_config
from .display import reveal_controls
from .errors import ArchivistaMailError, ConfigError, SourceError
from .runs import Progress
from .state import State, current_actor
from .vault import Vault, mask

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNREACHABLE, EXIT_UNEXPECTED = 0, 1, 2, 3, 4


class Context:
    """What every command needs, opened lazily: config, state database, archive."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._state: State | None = None
        self._archive = None

    def require_archive(self) -> None:
        """Refuse a data directory without an archive: a mistyped --data-dir must not start an empty one."""
        if not State.exists(self.config.data_dir):
            raise ConfigError(f"There is no archive in {self.config.data_dir}. Create one with 'archivista-mail "
                              f"--data-dir {self.config.data_dir} init', or check --data-dir (or "
                              "ARCHIVISTA_MAIL_DATA, or data_dir in the configuration file).")

    @property
    def state(self) -> State:
        if self._state is None:
            self.require_archive()
            self._state = State(self.config.data_dir)
            self._state.ensure_schema()
            self._state.bind_legacy_secrets(Vault(self.config.key_path))
        return self._state

    @property
    def archive(self):
        if self._archive is None:
            self.require_archive()
            self._archive = open_archive(self.config.data_dir, self.config.archive_backend)
            self._archive.ensure_schema()
        return self._archive


def _stop_writing() -> None:
    """The reader of our output went away (``archivista-mail runs | head``): end quietly.

    Standard output is pointed at /dev/null so the interpreter's final flush cannot fail again
    (Python documentation, "Note on SIGPIPE").
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class MainGroup(click.Group):
    """Maps our errors to sentences on stderr and cron-friendly exit codes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(EXIT_CONFIG)
        except SourceError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(EXIT_UNREACHABLE)
        except ArchivistaMailError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(EXIT_FAILED)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            _stop_writing()
            sys.exit(EXIT_OK)
        except Exception as e:  # noqa: BLE001 - last resort, with the type for the bug report
            click.echo(f"Unexpected error: {type(e).__name__}: {e}. Please report this with the command you ran.",
                       err=True)
            sys.exit(EXIT_UNEXPECTED)


@click.group(cls=MainGroup)
@click.version_option(__version__, prog_name="archivista-mail")
@click.option("--data-dir", envvar="ARCHIVISTA_MAIL_DATA", type=click.Path(file_okay=False, path_type=Path),
              help=f"Archive and state directory. Default: {DEFAULT_DATA_DIR} (or data_dir in the config file).")
@click.option("--config", "config_file", envvar="ARCHIVISTA_MAIL_CONFIG",
              type=click.Path(dir_okay=False, path_type=Path),
              help=f"Configuration file. Default: {DEFAULT_CONFIG_FILE} if it exists.")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, config_file: Path | None) -> None:
    """Archive IMAP, POP3 and Microsoft 365 mail, with every attachment, into a searchable document archive.

    Start with 'archivista-mail init' (the Debian package does it for you).
    """
    os.umask(0o027)  # what we create is for this user and its group only (0640 files, 0750 directories)
    ctx.obj = Context(load_config(data_dir, config_file))


@cli.command("init")
@click.pass_obj
def init_cmd(obj: Context) -> None:
    """Create the data directory (mode 0750) with an empty archive; does nothing to an existing one."""
    data_dir = obj.config.data_dir
    existed = State.exists(data_dir)
    State.create_directory(data_dir)
    state = State(data_dir)
    state.ensure_schema()
    archive = open_archive(data_dir, obj.config.archive_backend)
    archive.ensure_schema()
    if not existed:
        state.audit(current_actor(), "archive.init", str(data_dir), "")
    click.echo(f"The archive in {data_dir} exists already." if existed else f"Created the archive in {data_dir}.")


# -- accounts -------------------------------------------------------------------------------
@cli.group()
def account() -> None:
    """Add, list, test and remove mail accounts (IMAP, POP3, Microsoft 365, Gmail, EWS) and SMTP accounts to send through."""


def _read_password(from_stdin: bool, name: str, what: str = "password", flag: str = "--password-stdin") -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt(f"{what.capitalize()} for {name}", hide_input=True)
    else:
        raise ConfigError(f"No {what} given: pipe it in with {flag} (secrets are never taken from the command "
                          "line, where other users could see them).")
    if not password:
        raise ConfigError(f"The {what} for account {name} is empty.")
    return password


class _AddCommands(click.Group):
    """``account add KIND``: one subcommand per installed source, its options built from its declared settings."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from .sources import registry

        return list(registry())

    def get_command(self, ctx: click.Context, kind: str) -> click.Command | None:
        from .sources import registry

        source = registry().get(kind)
        return _add_command(source) if source is not None else None


def _add_command(source) -> click.Command:
    params: list[click.Parameter] = [click.Argument(["name"])]
    for s in source.settings:
        help_text = s.help.en
        if s.type == "secret":
            params.append(click.Option([s.flag, "secret_input"], type=click.Path(exists=True, dir_okay=False)
                                       if s.secret_from == "file" else None, is_flag=s.secret_from == "stdin",
                                       help=help_text))
        elif s.type == "bool":
            params.append(click.Option([s.flag, s.name], is_flag=True, default=None, help=help_text))
        elif s.type == "list":
            params.append(click.Option([s.flag, s.name], multiple=True, help=help_text))
        elif s.type == "pem":
            params.append(click.Option([s.flag, s.name], type=click.Path(exists=True, dir_okay=False), help=help_text))
        else:
            kind = {"int": int, "choice": click.Choice(s.choices)}.get(s.type)
            shown = f" Default: {s.default}." if s.default not in (None, "", ()) and not callable(s.default) else ""
            params.append(click.Option([s.flag, s.name], type=kind, help=help_text + shown))
    params.append(click.Option(["--disabled"], is_flag=True, help="Store the account but do not import from it yet."))

    @click.pass_obj
    def add(obj: Context, name: str, secret_input=None, disabled: bool = False, **given) -> None:
        from .accounts import account_from_input

        obj.require_archive()  # before asking for a secret
        for s in source.settings:
            if s.type == "pem" and given.get(s.name):
                given[s.name] = str(Path(given[s.name]).resolve())
        acc = account_from_input(source.kind, name, given)
        secret_setting = source.secret_setting()
        if secret_setting is not None:
            if secret_setting.secret_from == "file":
                if not secret_input:
                    raise ConfigError(f"Give the {secret_setting.label.en.lower()} with {secret_setting.flag} FILE.")
                secret = Path(secret_input).read_text(encoding="utf-8")
            else:
                secret = _read_password(bool(secret_input), name, what=secret_setting.label.en.lower(),
                                        flag=secret_setting.flag)
            acc = Vault(obj.config.key_path).seal(acc, secret)
        acc = replace(acc, enabled=not disabled)
        obj.state.save_account(acc, current_actor(), new=True)
        for warning in source.warnings(acc):
            click.echo(warning, err=True)
        click.echo(f"Added account {acc.describe()}")

    return click.Command(source.kind, params=params, callback=add,
                         help=f"Add an account of the kind {source.kind} ({source.title.en}). Secrets are stored "
                              "encrypted, sealed with the server they are for.")


account.add_command(_AddCommands("add", help="Add an account of one of the installed kinds (listed below)."))


@account.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def account_list(obj: Context, as_json: bool) -> None:
    """List accounts (passwords are never shown)."""
    accounts = obj.state.accounts()
    if as_json:
        click.echo(json.dumps([_account_json(a) for a in accounts], indent=2, ensure_ascii=False))
        return
    if not accounts:
        click.echo("No accounts yet. Add one with 'archivista-mail account add KIND NAME ...' (the kinds: "
                   "'archivista-mail account add --help').")
    for a in accounts:
        click.echo(a.describe())


def _account_json(a: Account) -> dict:
    out = {"name": a.name, "kind": a.kind, **a.settings, "enabled": a.enabled}
    secret_setting = a.source.secret_setting()
    if secret_setting is not None:
        out[secret_setting.name] = mask(a.secret)
    return out


@account.command("remove")
@click.argument("name")
@click.pass_obj
def account_remove(obj: Context, name: str) -> None:
    """Remove an account. Its archived documents stay in the archive."""
    obj.state.remove_account(name, current_actor())
    click.echo(f"Removed account {name}; its archived documents stay.")


@account.command("test")
@click.argument("name")
@click.pass_obj
def account_test(obj: Context, name: str) -> None:
    """Log in to an account and report each folder, its message count, and whether the after-archive action can
    be carried out. Exit code 1 when a folder or the action cannot work."""
    from .probe import messages, probe_account

    acc = obj.state.account(name)
    report = probe_account(acc, obj.config)
    obj.state.audit(current_actor(), "account.test", name, "ok" if report.ok else "problems found")
    click.echo(f"Account {name}: login ok.")
    for folder in report.folders:
        if folder.count is not None:
            click.echo(f"  {folder.name}: {messages(folder.count)}")
        if folder.error:
            click.echo(f"  {folder.name}: {'skipped' if folder.skipped else 'problem'}: {folder.error}")
    for note in report.notes:
        click.echo(f"  {note}")
    if report.action:
        click.echo(f"  After archive ({acc.after}): {report.action}.")
    if report.action_error:
        click.echo(f"  After archive ({acc.after}): problem: {report.action_error}")
    if not report.ok:
        sys.exit(EXIT_FAILED)


# -- import ---------------------------------------------------------------------------------
class _TerminalProgress(Progress):
    """A bar on standard error while the import runs on a terminal."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def add_total(self, n: int) -> None:
        self.total += n
        self._draw()

    def advance(self, n: int) -> None:
        self.done += n
        self._draw()

    def _draw(self) -> None:
        if self.total:
            width = 30
            filled = int(width * min(self.done, self.total) / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} mails")
        else:  # files are read as they come: a count, no total
            sys.stderr.write(f"\r{self.done} mails")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.total or self.done:
            sys.stderr.write("\n")


@cli.command("import")
@click.option("--account", "account_name", help="Import only this account.")
@click.option("--from", "from_path", type=click.Path(exists=True, path_type=Path),
              help="Import .eml/.mbox files or Maildir folders from this path instead of the accounts.")
@click.option("--no-extract", is_flag=True, help="Skip attachment text extraction after the import.")
@click.option("--scheduled", is_flag=True,
              help="Run only if the import interval has passed since the last run (cron starts this every minute).")
@click.pass_obj
def import_cmd(obj: Context, account_name: str | None, from_path: Path | None, no_extract: bool,
               scheduled: bool) -> None:
    """Fetch new mail and archive it. Quiet unless something failed (for cron)."""
    from .importer import Importer
    from .runs import import_lock
    from .schedule import import_due

    obj.require_archive()
    if scheduled and not import_due(obj.config, obj.state):
        return

    interactive = sys.stderr.isatty()
    with import_lock(obj.config.data_dir) as locked:
        if not locked:
            click.echo(f"Another import is running for {obj.config.data_dir}; this run does nothing.")
            return
        progress: Progress = _TerminalProgress() if interactive else Progress()
        importer = Importer(obj.config, obj.archive, obj.state, progress)
        summary = importer.run(account_name, from_path, actor=current_actor())
        if isinstance(progress, _TerminalProgress):
            progress.finish()
        extracted = 0
        if obj.config.extract_on_import and not no_extract:
            extracted = importer.extract_pending()
    for error in summary.errors:
        click.echo(error, err=True)
    if interactive or summary.exit_code:
        for warning in summary.warnings:
            click.echo(f"Warning: {warning}", err=True)
        extra = f", attachment texts extracted {extracted}" if extracted else ""
        if from_path is not None and not summary.fetched:
            click.echo(f"No mail found in {from_path} (.eml files, mbox files or Maildir folders).")
        elif from_path is None and not summary.accounts_ok + summary.accounts_failed:
            click.echo("No accounts to import from. Add one with 'archivista-mail account add' or in WebAdmin"
                       + (", or enable it" if account_name is None and obj.state.accounts() else "") + ".")
        else:
            click.echo(f"Import: {summary.line()}{extra}.", err=not interactive)
    sys.exit(summary.exit_code)


@cli.command("watch")
@click.pass_obj
def watch_cmd(obj: Context) -> None:
    """Archive new mail within seconds, until stopped (the service archivista-mail-watch runs this): IMAP folders
    with IDLE or NOTIFY, Microsoft 365 with Graph change notifications, Gmail with Pub/Sub push, Exchange with
    streaming notifications, POP3 by polling; each through the normal import. Only while the setting
    watch_enabled is 1 (WebAdmin's "Sofort archivieren (Push)"); cron's scheduled import stays the safety net."""
    from .watch import watch_forever

    obj.require_archive()
    watch_forever(obj.config)


@cli.command("watch-status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def watch_status_cmd(obj: Context, as_json: bool) -> None:
    """How the watch service watches each folder (idle, notify, notifications, push, streaming or polling), when it last heard from the server, and
    the last latency from notice to commit."""
    rows = obj.state.watch_status()
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("Nothing is watched: the watch service is not running, or watch_enabled is not 1.")
    for r in rows:
        latency = f", last latency {r['last_latency']:.2f} s" if r["last_latency"] is not None else ""
        click.echo(f"{r['account']}/{r['folder']}: {r['mode']}, last seen {r['last_seen'] or 'never'}{latency}"
                   + (f"; problem: {r['error']}" if r["error"] else ""))


@cli.command("extract")
@click.pass_obj
def extract_cmd(obj: Context) -> None:
    """Extract text from attachments still waiting for it (resumable)."""
    from .importer import Importer

    n = Importer(obj.config, obj.archive, obj.state).extract_pending()
    click.echo(f"Extracted text of {n} documents.")


@cli.command("runs")
@click.option("--limit", default=10, show_default=True, help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def runs_cmd(obj: Context, limit: int, as_json: bool) -> None:
    """Show the latest import runs and failed messages."""
    runs = obj.state.runs(limit)
    if as_json:
        click.echo(json.dumps({"runs": runs, "failures": [f.__dict__ for f in obj.archive.failures()]}, indent=2))
        return
    if not runs:
        click.echo("No import runs yet.")
    for r in runs:
        click.echo(f"{r['started']} {r['source']}: {r['status']}; fetched {r['fetched']}, archived {r['archived']}, "
                   f"duplicates {r['duplicates']}, failed {r['failed']}")
        for e in r["errors"]:
            click.echo(f"    {e}")
        for w in r["warnings"]:
            click.echo(f"    warning: {w}")
    for f in obj.archive.failures():
        click.echo(f"failed (retried next run): {f.account}/{f.folder} uid {f.uid}: {f.reason} "
                   f"({f.attempts} attempts)")


# -- documents --------------------------------------------------------------------------------
@cli.group()
def docs() -> None:
    """List, search, show and get archived documents."""


JSON_FIELDS = ["number", "kind", "parent", "title", "subject", "from", "to", "cc", "date", "filename", "mime_type",
               "size", "sha256", "account", "folder", "message_id", "inline", "text_status", "text_error", "defects",
               "fields", "tags", "direction", "record"]


def _public(doc: dict) -> dict:
    d = dict(doc, **{"from": doc["from_addr"], "to": doc["to_addr"], "cc": doc["cc_addr"]})
    d.setdefault("fields", {})  # an archive plugin without metadata fields
    d.setdefault("tags", [])
    d.setdefault("direction", "in")  # an archive plugin without outgoing mail
    return {k: d.get(k) for k in JSON_FIELDS}


def _echo_docs(rows: list[dict], as_json: bool, empty: str = "No documents.") -> None:
    if as_json:
        click.echo(json.dumps([_public(r) for r in rows], indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo(empty)
    for r in rows:  # names and subjects with their hidden characters shown (terminal escapes, bidi overrides)
        indent = "  " if r["parent"] else ""
        who = f"  from {reveal_controls(r['from_addr'])}" if r["kind"] == "mail" and r["from_addr"] else ""
        if r.get("direction") == "out":
            who = f"  sent to {reveal_controls(r['to_addr'] or '')}"
        click.echo(f"{r['number']:>7} {indent}{r['kind']:<10} {reveal_controls(r['title'])}{who}  "
                   f"[{r['mime_type']}, {r['size']} bytes]")


@docs.command("list")
@click.option("--limit", default=50, show_default=True, help="How many documents.")
@click.option("--offset", default=0, help="Skip this many (for paging).")
@click.option("--kind", type=click.Choice(["mail", "attachment"]), help="Only mails or only attachments.")
@click.option("--direction", type=click.Choice(["in", "out"]), help="Only archived (in) or sent (out) mails.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def docs_list(obj: Context, limit: int, offset: int, kind: str | None, direction: str | None, as_json: bool) -> None:
    """List documents, newest first."""
    extra = {"direction": direction} if direction else {}
    _echo_docs(obj.archive.list_documents(limit=limit, offset=offset, kind=kind, **extra), as_json)


@docs.command("search")
@click.argument("query", default="")
@click.option("--field", "fields", multiple=True, metavar="NAME=VALUE",
              help="Only documents whose metadata field NAME has VALUE (repeatable; NAME:VALUE in QUERY does the "
                   "same).")
@click.option("--direction", type=click.Choice(["in", "out"]), help="Only archived (in) or sent (out) mails.")
@click.option("--limit", default=50, show_default=True, help="How many results.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def docs_search(obj: Context, query: str, fields: tuple[str, ...], direction: str | None, limit: int,
                as_json: bool) -> None:
    """Full-text search over subjects, addresses, bodies and attachment text, and metadata fields
    (Kategorie:Kreditoren)."""
    wanted = {}
    for item in fields:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise click.UsageError(f"--field takes NAME=VALUE, not {item!r}.")
        wanted[name.strip()] = value.strip()
    if not query.strip() and not wanted and not direction:
        raise click.UsageError("Give at least one word, --field or --direction to search for.")
    extra: dict = {"fields": wanted} if wanted else {}
    if direction:
        extra["direction"] = direction
    rows = obj.archive.search(query, limit=limit, **extra)
    obj.state.audit(current_actor(), "docs.search", query, f"{len(rows)} results")
    _echo_docs(rows, as_json, f"No documents match {query!r}.")


@docs.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--text", "with_text", is_flag=True, help="Also print the extracted text.")
@click.pass_obj
def docs_show(obj: Context, number: int, as_json: bool, with_text: bool) -> None:
    """Show a document's metadata, its attachments and (with --text) its text."""
    doc = obj.archive.get_document(number)
    children = obj.archive.list_documents(parent=number, limit=1000)
    obj.state.audit(current_actor(), "docs.show", str(number), "")
    out = _public(doc)
    out["children"] = [c["number"] for c in reversed(children)]
    if out["direction"] == "out":
        sent = obj.archive.outbox(number=number)
        row = next((r for r in sent if r["number"] == number), None)
        if row is not None:
            out["sending"] = {k: row[k] for k in ("status", "reply", "recipients", "account", "attempts")}
    if with_text:
        out["text"] = obj.archive.get_text(number)
    if as_json:
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    for key, value in out.items():
        if key == "fields" and value:
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        if key != "text" and value not in (None, "", [], {}):
            click.echo(f"{key:>12}: {reveal_controls(str(value))}")
    if with_text:
        click.echo("")
        click.echo(out["text"])


@docs.command("get")
@click.argument("number", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write ('-' for standard output).")
@click.pass_obj
def docs_get(obj: Context, number: int, output: Path) -> None:
    """Write a document's stored bytes (for a mail: the original message) to a file."""
    data = obj.archive.read_blob(number)
    obj.state.audit(current_actor(), "docs.get", str(number), str(output))
    if str(output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)
        click.echo(f"Wrote document {number} ({len(data)} bytes) to {output}.", err=True)


@docs.command("thread")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def docs_thread(obj: Context, number: int, as_json: bool) -> None:
    """Show the conversation of a record: the record, then every mail sent from it and every reply, in order,
    with its direction."""
    rows = obj.archive.conversation(number)
    obj.state.audit(current_actor(), "docs.thread", str(number), f"{len(rows)} documents")
    if as_json:
        click.echo(json.dumps([dict(_public(r), sending=r.get("sending")) for r in rows], indent=2,
                              ensure_ascii=False))
        return
    record = rows[0]["number"]
    click.echo(f"Record {record}: {reveal_controls(rows[0]['title'])}")
    for r in rows[1:]:
        arrow = "->" if r["direction"] == "out" else "<-"
        who = r["to_addr"] if r["direction"] == "out" else r["from_addr"]
        status = f"  [{r['sending']['status']}]" if r.get("sending") else ""
        click.echo(f"{r['number']:>7} {arrow} {(r['date'] or r['archived_at'] or '')[:16]}  "
                   f"{reveal_controls(who or '')}: {reveal_controls(r['title'])}{status}")
    if len(rows) == 1:
        click.echo("No mail was sent from this record, and no reply has come in.")


# -- sending ------------------------------------------------------------------------------------
@cli.command("send")
@click.argument("number", type=int)
@click.option("--via", required=True, help="The SMTP account to send through.")
@click.option("--to", "to", multiple=True, required=True, help="A recipient (repeatable).")
@click.option("--cc", "cc", multiple=True, help="A copy recipient (repeatable).")
@click.option("--subject", help="The subject (default: the template's, from the document's title).")
@click.option("--template", default="document", show_default=True,
              help="The mail template: document, acknowledgement, or one of DATA/mail-templates/NAME.LANG.txt.")
@click.option("--text", default="", help="Your text, after the template's.")
@click.option("--lang", type=click.Choice(["de", "en"]), default="de", show_default=True,
              help="The template's language.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def send_cmd(obj: Context, number: int, via: str, to: tuple[str, ...], cc: tuple[str, ...], subject: str | None,
             template: str, text: str, lang: str, as_json: bool) -> None:
    """Send a document by mail: a mail as an attachment (message/rfc822), an attachment as itself. The sent mail
    is archived on the document's record; replies to it are filed there too. Exit code 1 unless the server
    accepted it (a deferred mail is sent again by 'outbox retry' and by cron)."""
    from .sender import Sender

    obj.require_archive()
    result = Sender(obj.config, obj.state, obj.archive, current_actor()).send_document(
        number, via, list(to), list(cc), subject, template, text, lang)
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2, ensure_ascii=False))
    else:
        click.echo(result.line())
    if result.status != "sent":
        sys.exit(EXIT_FAILED)


@cli.group()
def outbox() -> None:
    """Mails sent from the archive that are not done: deferred, failed, unconfirmed."""


@outbox.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also the mails sent.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def outbox_list(obj: Context, show_all: bool, as_json: bool) -> None:
    """List outgoing mails not sent yet (or all)."""
    rows = obj.archive.outbox(None if show_all else ["owed", "reserved", "sending", "deferred", "failed",
                                                      "unconfirmed"])
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("The outbox is empty: every mail was sent." if not show_all else "Nothing was sent yet.")
    for r in rows:
        click.echo(f"{r['status']:<11} document {r['number'] or '-'} record {r['record'] or r['answers'] or '-'} "
                   f"via {r['account']} to {reveal_controls(', '.join(r['recipients']))} <{r['message_id'] or '-'}>"
                   + (f": {reveal_controls(r['reply'])}" if r["reply"] else ""))


@outbox.command("retry")
@click.option("--all", "retry_all", is_flag=True, help="Also deferred mails whose next attempt is not due yet.")
@click.pass_obj
def outbox_retry(obj: Context, retry_all: bool) -> None:
    """Send owed automatic replies and deferred mails again (cron's import does this for the due ones)."""
    from .sender import Sender

    results = Sender(obj.config, obj.state, obj.archive, current_actor()).retry(due_only=not retry_all)
    for r in results:
        click.echo(r.line())
    if not results:
        click.echo("Nothing to send.")
    if any(r.status in ("failed", "unconfirmed", "deferred") for r in results):
        sys.exit(EXIT_FAILED)


@outbox.command("resend")
@click.argument("message_id")
@click.pass_obj
def outbox_resend(obj: Context, message_id: str) -> None:
    """Send an unconfirmed, failed or deferred mail again: the same bytes, the same Message-ID."""
    from .sender import Sender

    result = Sender(obj.config, obj.state, obj.archive, current_actor()).resend(message_id)
    click.echo(result.line())
    if result.status != "sent":
        sys.exit(EXIT_FAILED)


@cli.command("audit")
@click.option("--limit", default=50, show_default=True, help="How many entries.")
@click.option("--action", help="Only actions starting with this (e.g. 'account', 'docs.get').")
@click.option("--actor", help="Only this actor.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def audit_cmd(obj: Context, limit: int, action: str | None, actor: str | None, as_json: bool) -> None:
    """Show the audit trail: account changes, import runs, documents read."""
    rows = obj.state.audit_entries(limit, action, actor)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("No audit entries" + (" match." if action or actor else "."))
    for r in rows:
        click.echo(f"{r['at']} {r['actor']:<12} {r['action']:<16} {r['target']} {r['detail'][:100]}")


# -- WebAdmin users and direct links ------------------------------------------------------------
@cli.group()
def admin() -> None:
    """Manage WebAdmin users (there is no default password)."""


@admin.command("create")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--role", type=click.Choice(["admin", "viewer", "sender"]), default="admin", show_default=True,
              help="admin: everything; viewer: documents only; sender: documents, and sending them by mail.")
@click.pass_obj
def admin_create(obj: Context, name: str, password_stdin: bool, role: str) -> None:
    """Create a WebAdmin user, or set an existing user's password and role (their sessions end, a login lock is
    lifted)."""
    from .vault import hash_password

    obj.require_archive()  # before asking for a password
    password = _read_password(password_stdin, name)
    if len(password) < 8:
        raise ConfigError("The password is too short: use at least 8 characters.")
    obj.state.save_user(name, hash_password(password), role, current_actor())
    click.echo(f"WebAdmin user {name} ({role}) saved.")


@admin.command("list")
@click.pass_obj
def admin_list(obj: Context) -> None:
    """List WebAdmin users and their roles."""
    users = obj.state.users()
    if not users:
        click.echo("No WebAdmin users yet. Create one with 'archivista-mail admin create NAME --password-stdin'.")
    for u in users:
        click.echo(f"{u['name']} ({u['role']}){', disabled' if u['disabled'] else ''}")


@admin.command("disable")
@click.argument("name")
@click.pass_obj
def admin_disable(obj: Context, name: str) -> None:
    """Disable a WebAdmin user: their sessions end at once and they cannot log in."""
    obj.state.set_user_disabled(name, True, current_actor())
    click.echo(f"WebAdmin user {name} disabled; their sessions have ended.")


@admin.command("enable")
@click.argument("name")
@click.pass_obj
def admin_enable(obj: Context, name: str) -> None:
    """Enable a WebAdmin user again (this also lifts a lock after failed logins)."""
    obj.state.set_user_disabled(name, False, current_actor())
    click.echo(f"WebAdmin user {name} enabled.")


@admin.command("remove")
@click.argument("name")
@click.pass_obj
def admin_remove(obj: Context, name: str) -> None:
    """Remove a WebAdmin user; their sessions end at once."""
    obj.state.remove_user(name, current_actor())
    click.echo(f"WebAdmin user {name} removed.")


@cli.group()
def settings() -> None:
    """Show and change the settings kept in the database (also on WebAdmin's pages)."""


@settings.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def settings_show(obj: Context, as_json: bool) -> None:
    """Show every database setting with its value and what it does."""
    from .settings import STORED_SETTINGS

    values = {key: obj.state.setting(key) for key in STORED_SETTINGS}
    if as_json:
        click.echo(json.dumps(values, indent=2, ensure_ascii=False))
        return
    for key, setting in STORED_SETTINGS.items():
        click.echo(f"{key} = {values[key]}")
        click.echo(f"    {setting.help}")


@settings.command("set")
@click.argument("key")
@click.argument("value")
@click.pass_obj
def settings_set(obj: Context, key: str, value: str) -> None:
    """Set a database setting (an empty VALUE, '', clears it). See 'settings show' for the keys."""
    from .settings import save_setting

    stored = save_setting(obj.state, key, value, current_actor())
    click.echo(f"{key} = {stored}")


@cli.group()
def rules() -> None:
    """Incoming rules: title, fields and tags for matching mail, or not archiving it (JSON format: README)."""


def _rule_set(obj: Context):
    from .rules import load_rules

    return load_rules(obj.state.rules())


@rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the export format).")
@click.pass_obj
def rules_list(obj: Context, as_json: bool) -> None:
    """List the rules in the order they are applied."""
    stored = obj.state.rules()
    if as_json:
        click.echo(json.dumps(stored, indent=2, ensure_ascii=False))
        return
    if not stored:
        click.echo("No rules: every mail is archived as it is. Load some with 'archivista-mail rules load FILE'.")
    for n, rule in enumerate(_rule_set(obj), 1):
        scope = ", ".join(rule.accounts) if rule.accounts is not None else "all accounts"
        actions = "; ".join(f"{a.kind} {a.target} {a.value}".replace("  ", " ").strip() for a in rule.then)
        click.echo(f"{n}. {rule.name} ({scope}): {actions}{'; stop' if rule.stop else ''}")


@rules.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, writable=True))
@click.pass_obj
def rules_export(obj: Context, file: str | None) -> None:
    """Write the rules as JSON to FILE (or standard output)."""
    text = json.dumps(obj.state.rules(), indent=2, ensure_ascii=False) + "\n"
    if file:
        Path(file).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@rules.command("load")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.pass_obj
def rules_load(obj: Context, file) -> None:
    """Replace the rules with those in FILE (JSON; - reads standard input). An invalid file changes nothing."""
    from .rules import dump_rules, load_rules

    try:
        data = json.load(file)
    except ValueError as e:
        raise ConfigError(f"{file.name} is not JSON ({e}); nothing was changed.") from None
    loaded = load_rules(data)
    obj.state.save_rules(dump_rules(loaded), current_actor(), file.name)
    click.echo(f"Loaded {len(loaded)} rules.")


@rules.command("remove")
@click.argument("name")
@click.pass_obj
def rules_remove(obj: Context, name: str) -> None:
    """Remove the rule NAME."""
    stored = obj.state.rules()
    kept = [r for r in stored if r["name"] != name]
    if len(kept) == len(stored):
        raise ConfigError(f"There is no rule {name}. 'archivista-mail rules list' shows them.")
    obj.state.save_rules(kept, current_actor(), f"removed {name}")
    click.echo(f"Rule {name} removed.")


@rules.command("test")
@click.option("--account", help="Only the archived mails of this account (with --last), or the account the "
              "mails of --from count as (default: files).")
@click.option("--last", type=click.IntRange(1, 10000), help="Simulate over the last N archived mails (default 20).")
@click.option("--from", "from_path", type=click.Path(exists=True, path_type=Path),
              help="Simulate over .eml files, a directory or an mbox file instead.")
@click.option("--rules", "rules_file", type=click.File("r", encoding="utf-8"),
              help="Rules to try (JSON) instead of the stored ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def rules_test(obj: Context, account: str | None, last: int | None, from_path: Path | None, rules_file,
               as_json: bool) -> None:
    """Show what the rules would do, changing nothing: for each mail which rule matched, each condition with the
    value it saw, and the documents it would produce."""
    from .rules import load_rules
    from .simulate import simulate_archived, simulate_files

    rule_set = load_rules(json.load(rules_file)) if rules_file else _rule_set(obj)
    if from_path is not None:
        results = simulate_files(rule_set, from_path, account or "files")
    else:
        obj.require_archive()
        results = simulate_archived(rule_set, obj.archive, last or 20, account)
    if as_json:
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    if not results:
        click.echo("No mails to test the rules on.")
    for r in results:
        click.echo(f"{r['source']}: {r['subject']!r} from {r['from']}")
        for trace in r["rules"]:
            if trace["skipped_for_account"]:
                click.echo(f"  rule {trace['rule']}: not for account {r['account']}")
                continue
            verdict = "error: " + trace["error"] if trace["error"] else ("matched" if trace["matched"] else
                                                                          "did not match")
            click.echo(f"  rule {trace['rule']}: {verdict}")
            for check in trace["checks"]:
                click.echo(f"    {'yes' if check['result'] else 'no ':3}  {check['condition']}  (saw {check['seen']!r})")
        if r["archive"] == "skip":
            click.echo("  -> not archived (skipped by a rule); the mail stays on the server untouched")
        for doc in r["documents"]:
            extra = "".join([f", fields {doc['fields']}" if doc.get("fields") else "",
                             f", tags {doc['tags']}" if doc.get("tags") else "",
                             ", hidden from lists" if doc.get("hidden") else ""])
            click.echo(f"  -> {doc['kind']}: {doc['title']!r}{extra}")
        if r["after"]:
            click.echo(f"  -> after archiving: {r['after']}")
        for s in r["sends"]:
            if s["would_send"]:
                click.echo(f"  -> would send '{s['template']}' to {s['to']} via {s['via']} (at most once a day per "
                           "sender and rule)")
            else:
                click.echo(f"  -> would not send '{s['template']}': {s['refused']}")
        for error in r["errors"]:
            click.echo(f"  !! {error}")


@cli.command("link")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def link_cmd(obj: Context, number: int, as_json: bool) -> None:
    """Print the direct link to a document and its title."""
    from .links import BASE_URL_SETTING, TITLE_FIELD_SETTING, link_title, link_url

    doc = obj.archive.get_document(number)
    url = link_url(obj.state.setting(BASE_URL_SETTING), number)
    title = link_title(doc, obj.state.setting(TITLE_FIELD_SETTING))
    if as_json:
        click.echo(json.dumps({"number": number, "url": url, "title": title}, ensure_ascii=False))
    else:
        click.echo(f"{title}\n{url}")


def main() -> None:
    """Console script entry point."""
    cli(prog_name="archivista-mail")
