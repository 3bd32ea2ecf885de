"""Microsoft 365: the real O365 library (and msal) against the Graph emulator."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from archived import archived_count, docs, kept, last_run
from mailfactory import make_mail

from archivista_mail.sources.graph import parse_retry_after


def test_o365_mail_is_archived_byte_for_byte_and_searchable(run, tenant, tmp_path):
    mails = [make_mail(i, attachment="pdf" if i == 1 else None, secret_word="wallaby") for i in range(3)]
    tenant.deliver(mails)
    tenant.add_account(run)
    result = run("import")
    assert result.exit_code == 0, result.output
    found = docs(run, "--kind", "mail")
    stored = set()
    for doc in found:
        run("docs", "get", str(doc["number"]), "-o", str(tmp_path / "m.eml"))
        stored.add((tmp_path / "m.eml").read_bytes())
    assert stored == set(mails)
    assert {d["folder"] for d in found} == {f"{tenant.mailbox}/inbox"}
    hits = json.loads(run("docs", "search", "wallaby", "--json").output)
    assert {h["kind"] for h in hits} == {"mail", "attachment"}


def test_delta_runs_fetch_only_what_is_new(run, tenant, graph_server):
    tenant.deliver([make_mail(i) for i in range(10, 70)])
    tenant.add_account(run, "--batch-size", "25")
    assert run("import").exit_code == 0
    assert last_run(run)["archived"] == 60
    before = len(graph_server.requests)
    assert run("import").exit_code == 0
    assert last_run(run)["fetched"] == 0
    assert not [r for r in graph_server.requests[before:] if r[1].endswith("/$value")]
    tenant.deliver([make_mail(i) for i in range(70, 73)])
    assert run("import").exit_code == 0
    assert (last_run(run)["fetched"], last_run(run)["archived"]) == (3, 3)


@pytest.mark.parametrize("after,check", [
    ("read", lambda t: all(m.is_read for m in t.folder().messages.values()) and len(t.folder().messages) == 4),
    ("move:archive", lambda t: not t.folder().messages and len(t.folder("archive").messages) == 4),
    ("delete", lambda t: not t.folder().messages and len(t.folder("deleteditems").messages) == 4),
])
def test_after_archive_actions_run_on_graph(run, tenant, after, check):
    tenant.deliver([make_mail(i) for i in range(100, 104)])
    tenant.add_account(run, "--after", after)
    result = run("import")
    assert result.exit_code == 0, result.output
    assert check(tenant)
    assert len(docs(run, "--kind", "mail")) == 4


def test_unread_only_skips_read_mail(run, tenant):
    tenant.deliver([make_mail(110)], is_read=True)
    tenant.deliver([make_mail(111)])
    tenant.add_account(run, "--unread-only")
    assert run("import").exit_code == 0
    assert [d["message_id"] for d in docs(run)] == ["gen-111@example.com"]


def test_an_expired_delta_token_resyncs_without_duplicates(run, tenant, graph_server):
    tenant.deliver([make_mail(i) for i in range(120, 130)])
    tenant.add_account(run)
    assert run("import").exit_code == 0
    tenant.deliver([make_mail(130)])
    graph_server.expire_delta_tokens = True
    result = run("import")
    graph_server.expire_delta_tokens = False
    assert result.exit_code == 0, result.output
    assert "delta token" in result.output and "expired" in result.output
    # Read again: the 10 known ids are skipped (duplicates) without being fetched; only the new one is.
    assert (last_run(run)["fetched"], last_run(run)["archived"], last_run(run)["duplicates"]) == (1, 1, 10)
    assert len(docs(run, "--kind", "mail")) == 11


def test_a_429_storm_with_fractional_retry_after_loses_and_doubles_nothing(run, tenant, graph_server):
    mails = [make_mail(i) for i in range(200, 300)]
    tenant.deliver(mails)
    tenant.add_account(run, "--after", "read")
    graph_server.throttle, graph_server.retry_after = 0.3, "0.01"
    result = run("import")
    graph_server.throttle = 0.0
    assert result.exit_code == 0, result.output
    hashes = [d["sha256"] for d in docs(run, "--kind", "mail")]
    assert sorted(hashes) == sorted(hashlib.sha256(m).hexdigest() for m in mails)
    assert all(m.is_read for m in tenant.folder().messages.values())
    assert graph_server.max_concurrent[tenant.mailbox.lower()] <= 4


def test_retry_after_is_read_as_integer_or_fractional_seconds():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_503_and_504_are_retried_on_every_method(run, tenant, graph_server):
    tenant.deliver([make_mail(310)])
    tenant.add_account(run, "--after", "move:archive")
    graph_server.fail_next.extend([(503, "ServiceUnavailable", {"Retry-After": "0"}),
                                   (504, "GatewayTimeout", {})])
    result = run("import")
    assert result.exit_code == 0, result.output
    assert len(tenant.folder("archive").messages) == 1


def test_a_token_that_expires_mid_run_is_renewed(run, tenant, graph_server):
    tenant.deliver([make_mail(i) for i in range(320, 360)])
    tenant.add_account(run, "--batch-size", "2")
    graph_server.token_lifetime, graph_server.latency = 1, 0.06  # the run takes about 2 s
    before = graph_server.token_requests
    result = run("import")
    graph_server.token_lifetime, graph_server.latency = 3600, 0.0
    assert result.exit_code == 0, result.output
    assert graph_server.token_requests - before >= 2  # renewed at least once, without O365's refresh crash
    assert len(docs(run, "--kind", "mail")) == 40


def test_a_message_deleted_between_listing_and_fetching_is_skipped(run, tenant, graph_server):
    ids = tenant.deliver([make_mail(i) for i in range(400, 405)])
    tenant.add_account(run)
    graph_server.after_delta_page = lambda served: graph_server.remove(tenant.mailbox, ids[2]) if ids[2] in served \
        else None
    result = run("import")
    assert result.exit_code == 0, result.output
    assert sorted(d["message_id"] for d in docs(run)) == [f"gen-{i}@example.com" for i in (400, 401, 403, 404)]
    assert json.loads(run("runs", "--json").output)["failures"] == []


@pytest.mark.parametrize("setup,words", [
    (lambda t: {"secret": "wrong"}, "client secret is wrong"),
    (lambda t: t.server.apps[(t.tenant, t.client_id)].update(expired=True), "client secret has expired"),
    (lambda t: t.server.apps[(t.tenant, t.client_id)].update(permissions=set()), "Mail.Read"),
    (lambda t: t.server.mailboxes[t.mailbox.lower()].__setattr__("rest_enabled", False), "not enabled"),
    (lambda t: t.server.mailboxes.pop(t.mailbox.lower()) and None, "does not exist in this tenant"),
])
def test_common_o365_failures_are_explained(run, tenant, setup, words):
    change = setup(tenant) or {}
    tenant.add_account(run, secret=change.get("secret"))
    result = run("account", "test", "m365")
    # A failed login is "unreachable" (3); a mailbox the login cannot use is that mailbox's problem (1).
    assert result.exit_code == (1 if words in ("not enabled", "does not exist in this tenant") else 3)
    assert "Account m365" in result.output and words in result.output
    assert tenant.secret not in result.output


def test_an_unknown_client_id_or_tenant_is_explained(run, tenant):
    result = run("account", "add", "o365", "ghost", "--tenant", tenant.tenant, "--client-id", "no-such-app",
                 "--client-secret-stdin", "--mailbox", tenant.mailbox, input="x\n")
    assert result.exit_code == 0
    assert "client (application) ID is not known" in run("account", "test", "ghost").output
    run("account", "add", "o365", "gone", "--tenant", "no-such-tenant", "--client-id", "c", "--client-secret-stdin",
        "--mailbox", tenant.mailbox, input="x\n")
    result = run("account", "test", "gone")
    assert result.exit_code == 3 and "tenant" in result.output


def test_account_test_reports_mailbox_counts(run, tenant):
    tenant.deliver([make_mail(500), make_mail(501)])
    tenant.add_account(run)
    result = run("account", "test", "m365")
    assert result.exit_code == 0, result.output
    assert f"{tenant.mailbox}/inbox: 2 messages" in result.output


def test_importer_killed_mid_run_then_rerun_archives_each_mail_once(tenant, graph_server, data_dir, run):
    mails = [make_mail(i) for i in range(600, 800)]
    tenant.deliver(mails)
    tenant.add_account(run, "--after", "delete", "--batch-size", "10")
    graph_server.latency = 0.005
    env = dict(os.environ, ARCHIVISTA_MAIL_DATA=str(data_dir))

    kills = 0
    for target in (20, 60, 110, 150):
        proc = subprocess.Popen([sys.executable, "-m", "archivista_mail", "import"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and archived_count(data_dir) < target:
            time.sleep(0.003)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        gone = {hashlib.sha256(m.mime).hexdigest() for m in tenant.folder("deleteditems").messages.values()}
        assert gone <= kept(data_dir)  # nothing left the inbox without its archive copy
    assert kills >= 2
    final = subprocess.run([sys.executable, "-m", "archivista_mail", "import"], env=env, capture_output=True,
                           text=True, timeout=120)
    graph_server.latency = 0.0
    assert final.returncode == 0, final.stderr
    hashes = [d["sha256"] for d in docs(run, "--kind", "mail")]
    assert sorted(hashes) == sorted(hashlib.sha256(m).hexdigest() for m in mails)
    assert not tenant.folder().messages


def test_the_batch_size_shrinks_while_throttled_and_grows_back(run, tenant, graph_server):
    tenant.deliver([make_mail(i) for i in range(1000, 1400)])
    tenant.add_account(run, "--batch-size", "40")
    graph_server.page_sizes.clear()
    throttled_pages = 2

    def throttle_first_pages(served):
        nonlocal throttled_pages
        if throttled_pages:  # the next request after each of the first pages is answered 429
            throttled_pages -= 1
            graph_server.fail_next.append((429, "TooManyRequests", {"Retry-After": "0"}))

    graph_server.after_delta_page = throttle_first_pages
    result = run("import")
    assert result.exit_code == 0, result.output
    sizes = graph_server.page_sizes
    assert sizes[0] == 40 and min(sizes) == 10 and sizes[-1] == 40
    assert sizes.index(10) < len(sizes) - 1 - sizes[::-1].index(40)  # down first, then up again
    assert len(docs(run, "--kind", "mail")) == 400


def test_no_token_file_and_no_secret_or_token_in_any_log(run, tenant, tmp_path, monkeypatch, caplog):
    import logging

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    caplog.set_level(logging.DEBUG)
    tenant.deliver([make_mail(1500)])
    tenant.add_account(run)
    assert run("import").exit_code == 0
    assert list(cwd.iterdir()) == []  # O365's default backend would leave o365_token.txt here
    issued = [t for t, grant in tenant.server.tokens.items() if grant[1] == tenant.client_id]
    assert issued
    assert tenant.secret not in caplog.text and not any(t in caplog.text for t in issued)
    assert "Bearer" not in caplog.text


def test_a_failed_graph_message_is_retried_next_run(run, tenant, monkeypatch):
    import archivista_mail.pipeline as pipeline

    tenant.deliver([make_mail(i) for i in range(1600, 1603)])
    tenant.add_account(run, "--after", "move:archive")
    real = pipeline.prepare

    def failing(raw, rules=()):
        if b"<gen-1601@" in raw.raw:
            raise RuntimeError("simulated planner bug")
        return real(raw, rules)

    monkeypatch.setattr(pipeline, "prepare", failing)
    assert run("import").exit_code == 1
    assert len(tenant.folder().messages) == 1  # the failed one stays where it was
    monkeypatch.setattr(pipeline, "prepare", real)
    assert run("import").exit_code == 0
    assert not tenant.folder().messages and len(tenant.folder("archive").messages) == 3
    assert sorted(d["message_id"] for d in docs(run)) == [f"gen-{i}@example.com" for i in range(1600, 1603)]


def test_a_missing_mailbox_is_reported_and_the_tenants_other_mailboxes_still_run(run, tenant):
    tenant.deliver([make_mail(1700)])
    tenant.add_account(run, "--mailbox", "nobody@contoso.example")
    result = run("import")
    assert result.exit_code == 1
    assert "nobody@contoso.example does not exist" in result.output
    assert [d["message_id"] for d in docs(run)] == ["gen-1700@example.com"]
