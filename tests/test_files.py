"""The files source: .eml, .mbox and Maildir through the same pipeline, idempotent by content."""

from __future__ import annotations

import json
import mailbox

from mailfactory import make_mail


def mail_ids(run):
    return sorted(d["message_id"] for d in json.loads(run("docs", "list", "--kind", "mail", "--json").output))


def test_mbox_file_imports_each_message_once(run, tmp_path):
    path = tmp_path / "old.mbox"
    box = mailbox.mbox(str(path))
    for i in range(3):
        box.add(make_mail(200 + i))
    box.flush()
    box.close()
    assert run("import", "--from", str(path)).exit_code == 0
    assert run("import", "--from", str(path)).exit_code == 0
    assert mail_ids(run) == [f"gen-{200 + i}@example.com" for i in range(3)]
    runs = json.loads(run("runs", "--json").output)["runs"]
    assert (runs[0]["archived"], runs[0]["duplicates"]) == (0, 3)


def test_maildir_folders_and_eml_files_below_a_directory(run, tmp_path):
    (tmp_path / "export").mkdir()
    md = mailbox.Maildir(str(tmp_path / "export" / "Maildir"), create=True)
    md.add(make_mail(300))
    md.add(make_mail(301))
    (tmp_path / "export" / "loose.eml").write_bytes(make_mail(302))
    result = run("import", "--from", str(tmp_path / "export"))
    assert result.exit_code == 0, result.output
    assert mail_ids(run) == [f"gen-{i}@example.com" for i in (300, 301, 302)]


def test_a_missing_path_is_a_clear_error(run, tmp_path):
    result = run("import", "--from", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_large_eml_file_is_spooled_and_archived_byte_for_byte(run, tmp_path, data_dir, monkeypatch):
    import archivista_mail.sources.base as sources_base
    from archivista_mail import spool

    monkeypatch.setattr(sources_base, "SPOOL_FROM", 10_000)
    monkeypatch.setattr(spool, "SPILL_AT", 5_000)
    raw = make_mail(400, body_words=3000, attachment="pdf", attachment_size=40_000, secret_word="numbat")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "a.eml").write_bytes(raw)
    (tmp_path / "big" / "copy.eml").write_bytes(raw)  # the same mail twice: archived once
    assert run("import", "--from", str(tmp_path / "big")).exit_code == 0
    mails = json.loads(run("docs", "list", "--kind", "mail", "--json").output)
    assert len(mails) == 1
    run("docs", "get", str(mails[0]["number"]), "-o", str(tmp_path / "out.eml"))
    assert (tmp_path / "out.eml").read_bytes() == raw
    assert {h["kind"] for h in json.loads(run("docs", "search", "numbat", "--json").output)} == {"mail", "attachment"}
    assert list((data_dir / "blobs" / "tmp").iterdir()) == []
