"""The CLI on a project that `workbench serve` is serving: commands are handed to the running app (over a
local channel that needs the token from the project folder) and run on its store, so reads and writes
work without stopping the app, and nothing acknowledged is lost when both sides write at once."""

import json
import stat
import threading
import urllib.error
import urllib.request

import pytest

from tests.conftest import write_jsonl
from tests.e2e.e2e_helpers import Server, run_cli
from workbench.cli import remote
from workbench.core.store import Store

pytestmark = pytest.mark.slow


def tickets(n, tag):
    return [{"prompt": f"{tag} question {i}: where is order {i}?", "completion": f"{tag} answer {i}",
             "category": ["billing", "refund", "shipping"][i % 3]} for i in range(n)]


@pytest.fixture
def served(tmp_path):
    project = tmp_path / "project"
    run_cli("import", str(write_jsonl(tmp_path / "a.jsonl", tickets(30, "a"))), "--dataset", "tickets",
            project=project)
    run_cli("questions", "add", "category", "--dataset", "tickets", "--kind", "single-choice",
            "--choices", "billing,refund,shipping", project=project)
    server = Server(project, tmp_path / "server.log").wait_healthy()
    try:
        yield project, server
    finally:
        server.stop()


def test_commands_run_while_the_app_serves_and_both_see_the_writes(served, tmp_path):
    project, server = served
    handle = project / remote.SERVE_FILE
    assert stat.S_IMODE(handle.stat().st_mode) == 0o600  # the token is the owner's alone
    listed = json.loads(run_cli("datasets", "--json", project=project).stdout)
    assert [d["name"] for d in listed["datasets"]] == ["tickets"]
    # a relative path is read against the caller's directory, not the app's
    write_jsonl(tmp_path / "b.jsonl", tickets(12, "b"))
    out = run_cli("import", "b.jsonl", "--dataset", "fresh", "--json", project=project, cwd=tmp_path)
    assert json.loads(out.stdout)["imported"] == 12
    # --project before the command, and a password read from stdin, go through as well
    run_cli("users", "add", "ada", "--role", "admin", "--password-stdin", project=project,
            stdin="correct horse battery staple\n")
    # user errors keep their one line and exit status
    bad = run_cli("stats", "nope", project=project, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    server.stop()  # the app saw and stored everything: the database opens with all of it
    assert not handle.exists()
    with Store.open(project) as store:
        from workbench.core.auth import list_users
        from workbench.core.versions import list_datasets

        assert sorted(d["name"] for d in list_datasets(store)) == ["fresh", "tickets"]
        assert [u["name"] for u in list_users(store)] == ["ada"]


def test_the_channel_refuses_a_caller_without_the_token(served):
    project, server = served
    body = json.dumps({"argv": ["datasets"], "cwd": "/", "stdin": None}).encode()
    for header in ({}, {"Authorization": "Bearer wrong"}):
        request = urllib.request.Request(server.url.rstrip("/") + remote.ROUTE, data=body, method="POST",
                                         headers=header)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403


def test_answers_and_an_import_written_together_are_all_kept(served, tmp_path):
    """Annotations stream in through the app's channel while a large import runs: every acknowledged
    answer and every imported record is stored."""
    project, _ = served
    write_jsonl(tmp_path / "big.jsonl", tickets(3000, "big"))
    acknowledged, failures = [], []

    def stream():
        for i in range(1, 21):  # one answer a command, as annotators click
            (tmp_path / f"ans{i}.csv").write_text(f"id,annotator,label\n{i},ann{i % 3},refund\n")
            done = run_cli("annotations", "import", str(tmp_path / f"ans{i}.csv"), "--dataset", "tickets",
                           "--question", "category", "--item-col", "id", "--annotator-col", "annotator",
                           "--value-col", "label", project=project, check=False)
            (acknowledged if done.returncode == 0 else failures).append((i, done.stderr[-300:]))

    writer = threading.Thread(target=stream)
    writer.start()
    imported = run_cli("import", str(tmp_path / "big.jsonl"), "--dataset", "big", "--json", project=project)
    writer.join()
    assert not failures and len(acknowledged) == 20
    assert json.loads(imported.stdout)["imported"] == 3000
    stored = json.loads(run_cli("sql", "SELECT count(*) AS n FROM wb_annotations", "--json",
                                project=project).stdout)
    assert stored["rows"] == [{"n": 20}]
