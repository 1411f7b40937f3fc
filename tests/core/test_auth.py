"""workbench.core.auth: argon2-hashed accounts, roles, expiring sessions; the CLI's `users` commands and
`workbench serve`'s refusal to open a project without accounts to the network."""

import io
import json
import socket
from datetime import timedelta

import pytest
from argon2 import PasswordHasher

from workbench.cli import main as cli
from workbench.cli import serve
from workbench.core import auth
from workbench.core.auth import LOCAL_USER, PermissionDenied, User
from workbench.core.errors import WorkbenchError
from workbench.core.project import open_project
from workbench.core.store import Store

PASSWORD = "correct horse"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    """argon2 with small cost parameters: the same code path, a fraction of the time (the hash records
    its parameters, so verifying needs no change)."""
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def test_passwords_are_stored_as_argon2_hashes_only(store):
    auth.add_user(store, "ada", "admin", PASSWORD)
    (digest,) = store.cursor().execute("SELECT password_hash FROM wb_users WHERE name = 'ada'").fetchall()[0]
    assert digest.startswith("$argon2id$") and PASSWORD not in digest
    assert PasswordHasher().verify(digest, PASSWORD)  # the reference library accepts our hash
    dump = "".join(str(r) for r in store.cursor().execute("SELECT * FROM wb_users").fetchall())
    assert PASSWORD not in dump


def test_authenticate(store):
    auth.add_user(store, "ada", "admin", PASSWORD)
    auth.add_user(store, "ann", "annotator", "another one", actor=User("ada", "admin"))
    assert auth.authenticate(store, "ada", PASSWORD) == User("ada", "admin")
    assert auth.authenticate(store, "ann", "another one") == User("ann", "annotator")
    assert auth.authenticate(store, "ada", PASSWORD + "x") is None
    assert auth.authenticate(store, "nobody", PASSWORD) is None


def test_first_user_must_be_an_admin_and_the_last_admin_stays(store):
    with pytest.raises(WorkbenchError, match="add an admin first"):
        auth.add_user(store, "ann", "annotator", PASSWORD)
    auth.add_user(store, "ada", "admin", PASSWORD)
    auth.add_user(store, "ann", "annotator", PASSWORD)
    with pytest.raises(WorkbenchError, match="last admin"):
        auth.remove_user(store, "ada")
    with pytest.raises(WorkbenchError, match="exists"):
        auth.add_user(store, "ann", "reviewer", PASSWORD)
    with pytest.raises(WorkbenchError, match="at least 8"):
        auth.add_user(store, "rob", "reviewer", "short")
    with pytest.raises(WorkbenchError, match="role 'boss' is not known"):
        auth.add_user(store, "rob", "boss", PASSWORD)
    with pytest.raises(WorkbenchError, match="not allowed"):
        auth.add_user(store, "a b", "reviewer", PASSWORD)
    auth.remove_user(store, "ann")
    assert [u["name"] for u in auth.list_users(store)] == ["ada"]


def test_only_admins_manage_users(store):
    auth.add_user(store, "ada", "admin", PASSWORD)
    for actor in (User("ann", "annotator"), User("rob", "reviewer")):
        with pytest.raises(PermissionDenied):
            auth.add_user(store, "eve", "admin", PASSWORD, actor=actor)
        with pytest.raises(PermissionDenied):
            auth.remove_user(store, "ada", actor=actor)


def test_sessions_expire_and_end(store):
    ada = auth.add_user(store, "ada", "admin", PASSWORD)
    start = auth.now_utc()
    token = auth.start_session(store, ada, hours=1, now=start)
    assert auth.session_user(store, token, now=start + timedelta(minutes=59)) == ada
    assert auth.session_user(store, token, now=start + timedelta(minutes=61)) is None
    assert auth.session_user(store, token + "x") is None and auth.session_user(store, None) is None
    stored = store.cursor().execute("SELECT token_sha256 FROM wb_sessions").fetchall()
    assert token not in str(stored)  # only a digest of the token is kept
    token = auth.start_session(store, ada)
    auth.end_session(store, token)
    assert auth.session_user(store, token) is None


def test_removing_a_user_ends_their_sessions(store):
    ada = auth.add_user(store, "ada", "admin", PASSWORD)
    ann = auth.add_user(store, "ann", "annotator", PASSWORD)
    token = auth.start_session(store, ann)
    auth.remove_user(store, "ann", actor=ada)
    assert auth.session_user(store, token) is None


@pytest.mark.parametrize("role, allowed", [
    ("admin", set(auth.PERMISSIONS)),
    ("annotator", {"annotate"}),
    ("reviewer", {"annotate", "review"}),
])
def test_role_matrix(role, allowed):
    user = User("x", role)
    for action in auth.PERMISSIONS:
        if action in allowed:
            assert auth.require_role(user, action) == user
        else:
            with pytest.raises(PermissionDenied, match=f"x is an? {role} and may not"):
                auth.require_role(user, action)
    assert auth.require_role(None, "delete") == LOCAL_USER  # the local owner (CLI, scripts)


def run(capsys, monkeypatch, *args, stdin=""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_users_add_list_remove(tmp_path, capsys, monkeypatch):
    project = str(tmp_path / "p")
    code, out, _ = run(capsys, monkeypatch, "users", "add", "ada", "--role", "admin", "--password-stdin",
                       "--project", project, "--json", stdin=PASSWORD + "\n")
    assert code == 0 and json.loads(out) == {"name": "ada", "role": "admin"}
    code, _, err = run(capsys, monkeypatch, "users", "add", "ann", "--role", "annotator", "--project", project)
    assert code == 1 and "--password-stdin" in err  # no terminal to prompt on
    code, _, _ = run(capsys, monkeypatch, "users", "add", "ann", "--role", "annotator", "--password-stdin",
                     "--project", project, stdin="annotator pw\n")
    code, out, _ = run(capsys, monkeypatch, "users", "list", "--project", project, "--json")
    assert [(u["name"], u["role"]) for u in json.loads(out)["users"]] == [("ada", "admin"), ("ann", "annotator")]
    with Store.open(project) as store:
        assert auth.authenticate(store, "ann", "annotator pw") == User("ann", "annotator")
    code, _, _ = run(capsys, monkeypatch, "users", "remove", "ann", "--project", project)
    assert code == 0


def test_serve_refuses_the_network_without_accounts(tmp_path):
    project = tmp_path / "p"
    with pytest.raises(WorkbenchError, match="refusing to serve on 0.0.0.0 without accounts"):
        serve.serve(project, host="0.0.0.0", port=9999)  # refused before anything starts
    serve.check_exposure(open_project(project), "127.0.0.1", 9999)  # this machine only: fine
    with Store.open(project) as store:
        auth.add_user(store, "ada", "admin", PASSWORD)
    serve.check_exposure(open_project(project), "0.0.0.0", 9999)  # with accounts: fine


def test_a_signed_in_user_cannot_write_once_the_session_has_ended(store):
    """A tab left open keeps its User object; the library checks the session at each write."""
    ada = auth.add_user(store, "ada", "admin", PASSWORD)
    token = auth.start_session(store, ada)
    signed_in = auth.session_user(store, token)
    auth.add_user(store, "ann", "annotator", PASSWORD, actor=signed_in)  # live: fine
    auth.end_session(store, token)  # signed out in another tab
    with pytest.raises(auth.SessionEnded, match="sign in again"):
        auth.add_user(store, "rob", "reviewer", PASSWORD, actor=signed_in)
    assert auth.get_user(store, "rob") is None
    with pytest.raises(PermissionDenied):  # the same class pages already catch
        auth.require_role(signed_in, "annotate")


def test_a_session_that_expires_while_the_page_is_open_stops_writing(store):
    ada = auth.add_user(store, "ada", "admin", PASSWORD)
    start = auth.now_utc() - timedelta(hours=2)
    token = auth.start_session(store, ada, hours=1, now=start)  # ended an hour ago
    signed_in = auth.session_user(store, token, now=start + timedelta(minutes=30))  # as the page saw it then
    assert signed_in == ada
    with pytest.raises(auth.SessionEnded):
        auth.require_role(signed_in, "annotate")


def test_a_changed_role_ends_the_sessions_of_that_account(store):
    auth.add_user(store, "ada", "admin", PASSWORD)
    ann = auth.add_user(store, "ann", "admin", PASSWORD)
    signed_in = auth.session_user(store, auth.start_session(store, ann))
    auth.add_user(store, "ann", "annotator", PASSWORD, replace=True)  # demoted by another admin
    with pytest.raises(auth.SessionEnded):
        auth.require_role(signed_in, "annotate")


def fail(store, name, times, *, address=None, now):
    for _ in range(times):
        assert auth.authenticate(store, name, "wrong password", address=address, now=now) is None


def test_failed_sign_ins_lock_the_account_for_longer_each_time(store):
    auth.add_user(store, "ada", "admin", PASSWORD)
    t0 = auth.now_utc()
    fail(store, "ada", auth.FREE_TRIES["account"] - 1, now=t0)
    assert auth.authenticate(store, "ada", PASSWORD, now=t0) == User("ada", "admin")  # a success clears them
    fail(store, "ada", auth.FREE_TRIES["account"] + 1, now=t0)  # one past the free tries: 2 s
    with pytest.raises(auth.SignInDelayed, match=r"try again in 2 s \(at ") as caught:
        auth.authenticate(store, "ada", PASSWORD, now=t0)  # even the right password
    assert caught.value.until == t0 + timedelta(seconds=2)
    with pytest.raises(auth.SignInDelayed, match="try again in 1 s"):
        auth.authenticate(store, "ada", PASSWORD, now=t0 + timedelta(seconds=1))
    fail(store, "ada", 1, now=t0 + timedelta(seconds=3))  # after the wait, another failure: 4 s
    with pytest.raises(auth.SignInDelayed, match="try again in 4 s"):
        auth.authenticate(store, "ada", PASSWORD, now=t0 + timedelta(seconds=3))
    fail(store, "ada", 1, now=t0 + timedelta(seconds=8))  # 8 s
    with pytest.raises(auth.SignInDelayed, match="try again in 8 s"):
        auth.authenticate(store, "ada", PASSWORD, now=t0 + timedelta(seconds=8))
    assert auth.authenticate(store, "ada", PASSWORD, now=t0 + timedelta(seconds=16)) == User("ada", "admin")


def test_the_delay_is_capped_and_forgotten_after_an_hour(store):
    auth.add_user(store, "ada", "admin", PASSWORD)
    t = auth.now_utc()
    for _ in range(20):  # each failure right when the previous lock ends: 2 s, 4 s, ... up to the cap
        fail(store, "ada", 1, now=t)
        t = auth.signin_locked_until(store, "ada", now=t) or t
    fail(store, "ada", 1, now=t)
    until = auth.signin_locked_until(store, "ada", now=t)
    assert until - t == auth.MAX_DELAY == timedelta(minutes=15)
    with pytest.raises(auth.SignInDelayed, match=r"try again in 15 min"):
        auth.authenticate(store, "ada", PASSWORD, now=t + timedelta(seconds=1))
    later = until + timedelta(hours=1)
    fail(store, "ada", 1, now=later)  # the count starts again: one failure is free
    assert auth.signin_locked_until(store, "ada", now=later) is None


def test_an_address_that_tries_many_names_is_slowed_down(store):
    auth.add_user(store, "ada", "admin", PASSWORD)
    t0 = auth.now_utc()
    for i in range(auth.FREE_TRIES["address"] + 1):  # one wrong try each for many names: no account locks
        fail(store, f"user{i}", 1, address="203.0.113.9", now=t0)
    with pytest.raises(auth.SignInDelayed):
        auth.authenticate(store, "ada", PASSWORD, address="203.0.113.9", now=t0)
    assert auth.authenticate(store, "ada", PASSWORD, address="198.51.100.7", now=t0) == User("ada", "admin")


def test_the_lock_survives_a_restart(tmp_path):
    t0 = auth.now_utc()
    with Store.open(tmp_path / "p") as store:
        auth.add_user(store, "ada", "admin", PASSWORD)
        fail(store, "ada", auth.FREE_TRIES["account"] + 1, now=t0)
    with Store.open(tmp_path / "p") as store:  # the server restarted
        with pytest.raises(auth.SignInDelayed):
            auth.authenticate(store, "ada", PASSWORD, now=t0 + timedelta(seconds=1))


def test_the_server_answers_only_its_own_host_names():
    names = auth.allowed_host_names("127.0.0.1", ["wb.example.com"])
    assert {"localhost", "127.0.0.1", "::1", "wb.example.com"} <= set(names)
    assert "rebound.example" not in names and "*" not in names
    assert "10.1.2.3" in auth.allowed_host_names("10.1.2.3")  # the address it was started on
    wildcard = auth.allowed_host_names("0.0.0.0")
    assert socket.gethostname().lower() in wildcard and "0.0.0.0" not in wildcard
