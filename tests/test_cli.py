"""The command line: help everywhere, secrets kept, cron-friendly output, locks, audit trail."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import run_on_terminal

from archivista_mail.cli import cli
from archivista_mail.runs import import_lock

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "samples")


def all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))


@pytest.mark.parametrize("path", [p for p, _ in all_commands(cli)], ids=" ".join)
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    command = dict(all_commands(cli))[path]
    assert command.help and len(command.help) > 20


def add(run, name="acct", password="hunter2-secret", *extra):
    return run("account", "add", "imap", name, "--host", "mail.example.org", "--user", "u", "--password-stdin",
               *extra, input=password + "\n")


def test_password_is_encrypted_at_rest_never_shown_and_the_key_is_0600(run, data_dir):
    result = add(run)
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert stat.S_IMODE(os.stat(data_dir / "secret.key").st_mode) == 0o600
    raw_db = (data_dir / "state.db").read_bytes() + (data_dir / "state.db-wal").read_bytes()
    assert b"hunter2" not in raw_db
    listed = run("account", "list", "--json")
    assert json.loads(listed.output)[0]["password"] == "********"
    assert "hunter2" not in listed.output + run("account", "list").output + run("audit", "--json").output


def test_passwords_are_not_accepted_on_the_command_line(run):
    result = run("account", "add", "imap", "x", "--host", "h", "--user", "u", "--password", "pw")
    assert result.exit_code == 2
    result = run("account", "add", "imap", "x", "--host", "h", "--user", "u")  # no tty, no stdin flag
    assert result.exit_code == 2 and "--password-stdin" in result.output


def test_duplicate_and_unknown_accounts_are_explained(run):
    assert add(run).exit_code == 0
    again = add(run)
    assert again.exit_code == 2 and "exists already" in again.output
    missing = run("account", "test", "ghost")
    assert missing.exit_code == 2 and "no account named 'ghost'" in missing.output
    bad = add(run, "bad name!")
    assert bad.exit_code == 2 and "not usable" in bad.output
    wrong_action = add(run, "y", "pw", "--after", "shred")
    assert wrong_action.exit_code == 2 and "move:FOLDER" in wrong_action.output


def test_import_under_cron_is_silent_when_all_is_well(run):
    result = run("import", "--from", SAMPLES)
    assert result.exit_code == 0
    assert result.output == ""


def test_second_import_while_locked_exits_0_with_one_line(run, data_dir):
    with import_lock(data_dir) as locked:
        assert locked
        result = run("import", "--from", SAMPLES)
    assert result.exit_code == 0
    assert result.output.strip().count("\n") == 0 and "Another import is running" in result.output
    assert run("docs", "list", "--json").output.strip() == "[]"


def test_docs_commands_and_json_fields(run, tmp_path):
    assert run("import", "--from", SAMPLES).exit_code == 0
    docs = json.loads(run("docs", "list", "--json").output)
    for field in ("number", "kind", "parent", "title", "subject", "from", "to", "date", "filename", "mime_type",
                  "size", "sha256", "account", "folder"):
        assert field in docs[0]
    invoice = json.loads(run("docs", "search", "Quartalsabschluss", "--json").output)
    assert [d["filename"] for d in invoice] == ["Rechnung 2024-117.pdf"]
    parent = json.loads(run("docs", "show", str(invoice[0]["parent"]), "--json", "--text").output)
    assert parent["subject"] == "Rechnung 2024-117 für Beratung" and "Rechnung für die Beratung" in parent["text"]
    assert parent["children"] == [invoice[0]["number"]]
    out = tmp_path / "r.pdf"
    assert run("docs", "get", str(invoice[0]["number"]), "-o", str(out)).exit_code == 0
    assert out.read_bytes().startswith(b"%PDF-")
    newsletter = json.loads(run("docs", "search", "appliance", "--json").output)
    assert newsletter[0]["subject"] == "Our spring newsletter"  # HTML-only body is searchable as text
    assert "alert" not in run("docs", "show", str(newsletter[0]["number"]), "--text").output  # scripts dropped
    inline = [d for d in docs if d["mime_type"] == "image/png"]
    assert inline and inline[0]["inline"] is True
    missing = run("docs", "show", "99999")
    assert missing.exit_code == 1 and "no document number 99999" in missing.output


def test_malformed_sample_is_archived_raw_with_defects(run, tmp_path):
    assert run("import", "--from", SAMPLES).exit_code == 0
    docs = json.loads(run("docs", "list", "--json").output)
    broken = [d for d in docs if d["kind"] == "mail" and d["subject"].startswith("Broken")][0]
    assert any("8-bit" in d for d in broken["defects"]) and any("Date" in d for d in broken["defects"])
    out = tmp_path / "b.eml"
    run("docs", "get", str(broken["number"]), "-o", str(out))
    assert out.read_bytes() == Path(SAMPLES, "04-malformed.eml").read_bytes()
    pdf = [d for d in docs if d["parent"] == broken["number"]][0]
    shown = json.loads(run("docs", "show", str(pdf["number"]), "--json").output)
    assert shown["text_status"] == "failed" and shown["text_error"]  # broken PDF archived, reason kept


def test_audit_trail_records_account_changes_runs_and_reads(run):
    add(run)
    run("import", "--from", SAMPLES)
    run("docs", "get", "1", "-o", "-")
    run("account", "remove", "acct")
    entries = json.loads(run("audit", "--json").output)
    actions = [e["action"] for e in reversed(entries)]
    assert actions == ["archive.init", "account.add", "import.run", "docs.get", "account.remove"]
    assert all(e["actor"] and e["at"] for e in entries)
    only = json.loads(run("audit", "--json", "--action", "account").output)
    assert {e["action"] for e in only} == {"account.add", "account.remove"}


def test_get_to_stdout_writes_the_original_bytes(run, data_dir):
    run("import", "--from", SAMPLES)
    invoice = json.loads(run("docs", "search", "Beratung", "--json").output)
    mail = [d for d in invoice if d["kind"] == "mail"][0]
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "docs", "get", str(mail["number"]), "-o", "-"])
    assert result.exit_code == 0
    assert result.stdout_bytes == Path(SAMPLES, "01-invoice-with-pdf.eml").read_bytes()


def test_unknown_archive_backend_is_a_configuration_error(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("[archivista-mail]\narchive_backend = nosuchdms\n")
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "d"), "--config", str(conf), "init"])
    assert result.exit_code == 2
    assert "'nosuchdms' is not installed" in result.output and "embedded" in result.output


def test_moving_mail_into_an_archived_folder_is_refused(run):
    result = add(run, "loop", "pw", "--folder", "INBOX", "--folder", "Done", "--after", "move:Done")
    assert result.exit_code == 2 and "archived itself" in result.output


def test_a_terminal_gets_a_progress_count_and_a_summary(data_dir):
    code, shown = run_on_terminal(data_dir, "import", "--from", SAMPLES)
    assert code == 0
    assert b"4/4 mails" in shown
    assert b"Import: fetched 4, archived 4, duplicates skipped 0, failed 0" in shown


def test_a_scheduled_import_runs_only_when_the_interval_has_passed(run, data_dir, tmp_path):
    import json as _json
    from datetime import datetime, timedelta, timezone

    from archivista_mail.config import Config
    from archivista_mail.schedule import import_due
    from archivista_mail.state import State

    assert run("import", "--scheduled").exit_code == 0  # the first run is always due
    assert len(_json.loads(run("runs", "--json").output)["runs"]) == 1
    assert run("import", "--scheduled").exit_code == 0  # within 10 minutes: nothing happens
    assert len(_json.loads(run("runs", "--json").output)["runs"]) == 1
    state = State(data_dir)
    later = datetime.now(timezone.utc) + timedelta(minutes=10)
    assert import_due(Config(data_dir=data_dir), state, now=later)
    state.save_setting("import_interval_minutes", "30", "test")  # WebAdmin's value wins over the file's
    assert not import_due(Config(data_dir=data_dir), state, now=later)


# -- a first run that cannot go wrong ------------------------------------------------------------
def test_commands_refuse_a_directory_without_an_archive_and_say_to_run_init(tmp_path):
    typo = tmp_path / "arhcive"
    for args in (["docs", "list"], ["import"], ["account", "list"], ["admin", "create", "x"], ["runs"]):
        result = CliRunner().invoke(cli, ["--data-dir", str(typo), *args], input="password1\n")
        assert result.exit_code == 2, (args, result.output)
        assert f"There is no archive in {typo}. Create one with 'archivista-mail --data-dir {typo} init'" \
            in result.output
    assert not typo.exists()


def test_init_makes_a_private_directory_once(tmp_path):
    d = tmp_path / "new" / "data"
    result = CliRunner().invoke(cli, ["--data-dir", str(d), "init"])
    assert result.exit_code == 0 and f"Created the archive in {d}." in result.output
    assert d.stat().st_mode & 0o777 == 0o750
    again = CliRunner().invoke(cli, ["--data-dir", str(d), "init"])
    assert again.exit_code == 0 and "exists already" in again.output



def test_everything_the_cli_and_webadmin_create_is_private_to_their_user_and_group(tmp_path):
    d = tmp_path / "data"
    cli_ = f"{sys.executable} -m archivista_mail --data-dir {d}"
    script = (f"umask 022 && {cli_} init && {cli_} import --from {SAMPLES} && "
              f"echo pw-1234567 | {cli_} admin create anna --password-stdin && "
              f"echo secret | {cli_} account add imap a --host h --user u --password-stdin && "
              f"{sys.executable} -c \"from webadmin import create_app; from archivista_mail.config import Config; "
              f"create_app(Config(data_dir=__import__('pathlib').Path('{d}')))\"")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    created = [d, *d.rglob("*")]
    assert {p.name for p in created} >= {"archive.db", "state.db", "secret.key", "webadmin.key", "blobs"}
    for path in created:
        mode = path.stat().st_mode & 0o777
        if path.is_dir():
            assert mode == 0o750, (path, oct(mode))
        elif path.name.endswith(".key"):
            assert mode == 0o600, (path, oct(mode))
        else:
            assert mode in (0o640, 0o600), (path, oct(mode))


def test_empty_results_say_so_and_a_cron_run_stays_silent(run, data_dir, tmp_path):
    assert run("docs", "list").output == "No documents.\n"
    assert run("docs", "search", "nothing").output == "No documents match 'nothing'.\n"
    assert run("runs").output.startswith("No import runs yet.")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "report.pdf").write_bytes(b"%PDF-1.4 not a mail")
    code, shown = run_on_terminal(data_dir, "import", "--from", str(empty))
    assert code == 0 and f"No mail found in {empty}".encode() in shown
    code, shown = run_on_terminal(data_dir, "import")
    assert code == 0 and b"No accounts to import from. Add one with 'archivista-mail account add'" in shown
    result = run("import")  # not a terminal: cron
    assert (result.exit_code, result.output) == (0, "")


def test_settings_show_and_set_cover_links_and_the_import_interval(run):
    shown = run("settings", "show").output
    assert "link_base_url = " in shown and "link_title_field = " in shown and "import_interval_minutes = " in shown
    result = run("settings", "set", "link_base_url", "archiv.example.ch")
    assert result.exit_code == 0 and result.output == "link_base_url = https://archiv.example.ch\n"
    assert run("settings", "set", "link_title_field", "subject").exit_code == 0
    assert run("settings", "set", "import_interval_minutes", "15").exit_code == 0
    assert json.loads(run("settings", "show", "--json").output) == {
        "link_base_url": "https://archiv.example.ch", "link_title_field": "subject", "send_subject_token": "",
        "watch_enabled": "", "import_interval_minutes": "15"}
    bad = run("settings", "set", "import_interval_minutes", "0")
    assert bad.exit_code == 2 and "1 to 1440" in bad.output
    assert run("settings", "set", "colour", "blue").exit_code == 2
    assert run("settings", "set", "link_base_url", "ftp://x").exit_code == 2
    assert json.loads(run("audit", "--action", "setting", "--json").output)[0]["target"] == "import_interval_minutes"


def test_link_explains_how_to_set_the_dns_name(run):
    assert run("import", "--from", SAMPLES).exit_code == 0
    result = run("link", "1")
    assert result.exit_code == 2
    assert "archivista-mail settings set link_base_url archiv.example.ch" in result.output
    run("settings", "set", "link_base_url", "archiv.example.ch")
    assert run("link", "1").output.splitlines()[1] == "https://archiv.example.ch/doc/1"
