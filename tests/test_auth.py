"""workbench.core.auth: argon2-hashed accounts, roles, expiring sessions; the CLI's `users` commands and
`workbench serve`'s refusal to open a project without accounts to the network."""

import io
import json
from datetime import timedelta

import pytest
from argon2 import PasswordHasher

from workbench.core import auth
from workbench.cli import main as cli
from workbench.cli import serve
from workbench.core.auth import LOCAL_USER, PermissionDenied, User
from workbench.core.errors import WorkbenchError
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


def test_serve_refuses_the_network_without_accounts(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(serve.subprocess, "call", lambda cmd, env: started.append(cmd) or 0)
    project = tmp_path / "p"
    with pytest.raises(WorkbenchError, match="refusing to serve on 0.0.0.0 without accounts"):
        serve.serve(project, host="0.0.0.0", port=9999)
    assert not started
    assert serve.serve(project, host="127.0.0.1", port=9999) == 0  # this machine only: fine
    with Store.open(project) as store:
        auth.add_user(store, "ada", "admin", PASSWORD)
    assert serve.serve(project, host="0.0.0.0", port=9999) == 0
    assert len(started) == 2 and "0.0.0.0" in started[1]
