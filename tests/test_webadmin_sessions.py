"""WebAdmin sessions end when they should, logins are throttled, and the audit trail stays bounded."""

from __future__ import annotations

import json

import pytest
from test_webadmin import csrf, login

import webadmin.auth as auth
from archivista_mail.config import Config
from webadmin import create_app

PASSWORD = "anna-password"


class Clock:
    """Stands in for time.time() in webadmin.auth."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(auth.time, "time", c)
    return c


@pytest.fixture
def app(run, data_dir):
    assert run("admin", "create", "anna", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    return create_app(Config(data_dir=data_dir))


def logged_in(app):
    client = app.test_client()
    assert login(client, "anna", PASSWORD).status_code == 302
    assert client.get("/documents").status_code == 200
    return client


def cookie_of(client) -> str:
    return client.get_cookie("archivista_mail_session").value


def with_cookie(app, value: str):
    client = app.test_client()
    client.set_cookie("archivista_mail_session", value)
    return client


def is_out(client) -> bool:
    response = client.get("/documents")
    return response.status_code == 302 and response.headers["Location"].startswith("/login")


def audit(run, action: str) -> list[dict]:
    return json.loads(run("audit", "--action", action, "--json").output)


def test_a_cookie_saved_before_logout_no_longer_works_after_it(app):
    client = logged_in(app)
    saved = cookie_of(client)
    other = logged_in(app)  # the same user on another browser
    token = csrf(client.get("/documents").data)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert is_out(with_cookie(app, saved))
    assert is_out(other)  # logout ends every session of that user


def test_a_password_change_ends_every_session_of_that_user(app, run):
    client = logged_in(app)
    saved = cookie_of(client)
    assert run("admin", "create", "anna", "--password-stdin", input="a-new-password\n").exit_code == 0
    assert is_out(client) and is_out(with_cookie(app, saved))
    assert login(app.test_client(), "anna", "a-new-password").status_code == 302


@pytest.mark.parametrize("command", ["disable", "remove"])
def test_disabling_or_removing_a_user_ends_their_sessions_and_logins(app, run, command):
    client = logged_in(app)
    assert run("admin", command, "anna").exit_code == 0
    assert is_out(client)
    assert login(app.test_client(), "anna", PASSWORD).status_code == 401
    assert audit(run, f"user.{command}")[0]["target"] == "anna"


def test_a_session_has_an_absolute_lifetime_however_busy_it_is(app, clock):
    client = logged_in(app)
    for _ in range(16):  # a request every half hour keeps it from idling out...
        clock.now += 1800 - 1
        assert client.get("/documents").status_code == 200
    clock.now += 60  # ...but eight hours after the login it ends
    assert is_out(client)


def test_an_idle_session_ends_after_an_hour(app, clock):
    client = logged_in(app)
    clock.now += 3600 + 1
    assert is_out(client)


def test_failed_logins_lock_the_user_name_with_a_message_and_the_lock_ends(app, run, clock):
    client = app.test_client()
    for _ in range(4):
        assert login(client, "anna", "wrong").status_code == 401
    locked = login(client, "anna", "wrong")
    assert locked.status_code == 429
    assert "Zu viele fehlgeschlagene Anmeldungen" in locked.data.decode()
    assert login(client, "anna", PASSWORD).status_code == 429  # not even the right password, until it ends
    assert len(audit(run, "webadmin.login_locked")) == 1
    clock.now += 31
    assert login(client, "anna", PASSWORD).status_code == 302


def test_each_failure_after_a_lock_doubles_it_up_to_fifteen_minutes(app, clock, data_dir):
    from archivista_mail.state import State, user_login_key

    client, state, key = app.test_client(), State(data_dir), [user_login_key("anna")]
    locks = []
    for _ in range(10):
        clock.now = max(clock.now, state.login_locked_until(key, clock.now)) + 1  # wait out any lock, then fail
        login(client, "anna", "wrong")
        until = state.login_locked_until(key, clock.now)
        locks.append(round(until - clock.now) if until else 0)
    assert locks == [0, 0, 0, 0, 30, 60, 120, 240, 480, 900]


def test_one_address_is_locked_after_many_failures_whatever_names_it_tries(app, clock):
    client = app.test_client()
    for i in range(19):
        assert login(client, f"guess{i}", "wrong").status_code == 401
    assert login(client, "guess-last", "wrong").status_code == 429
    assert login(client, "anna", PASSWORD).status_code == 429  # from this address
    clock.now += 61
    assert login(client, "anna", PASSWORD).status_code == 302


def test_admin_enable_lifts_a_login_lock(app, run):
    client = app.test_client()
    for _ in range(5):
        login(client, "anna", "wrong")
    assert login(client, "anna", PASSWORD).status_code == 429
    assert run("admin", "enable", "anna").exit_code == 0
    assert login(client, "anna", PASSWORD).status_code == 302


def test_a_failed_login_keeps_only_the_start_of_a_name_that_is_no_user(app, run):
    login(app.test_client(), "Sommer2024!geheim", "x")
    entry = audit(run, "webadmin.login_failed")[0]
    assert entry["target"] == "Som… (17 characters, no such user)"
    assert "geheim" not in json.dumps(audit(run, "webadmin"))
    login(app.test_client(), "anna", "x")
    assert audit(run, "webadmin.login_failed")[0]["target"] == "anna"


def test_huge_form_fields_are_refused_before_they_reach_the_audit_trail(app, run, data_dir):
    client = app.test_client()
    size = (data_dir / "state.db").stat().st_size
    for _ in range(5):
        response = client.post("/login", data={"username": "x" * 900_000, "password": "p",
                                               "csrf_token": csrf(client.get("/login").data)})
        assert response.status_code == 400
    assert audit(run, "webadmin.login_failed") == []
    assert (data_dir / "state.db").stat().st_size < size + 200_000
    assert len(client.get("/login").data) < 20_000


def test_audit_entries_are_cut_to_a_line(run, data_dir):
    from archivista_mail.state import State

    State(data_dir).audit("x" * 5000, "test", "t" * 5000, "d" * 50_000)
    entry = audit(run, "test")[0]
    assert len(entry["actor"]) == 200 and len(entry["target"]) == 200 and len(entry["detail"]) == 2000


def test_admin_list_shows_users_and_roles(run):
    assert run("admin", "create", "paul", "--password-stdin", "--role", "viewer", input="viewer-pass\n").exit_code == 0
    assert run("admin", "disable", "paul").exit_code == 0
    assert run("admin", "list").output.splitlines() == ["paul (viewer), disabled"]
