"""The CLI on a served project: while `workbench serve` holds the project's database, a command is handed
to the running server over a local, authenticated channel and runs there, on the app's own store.

`workbench serve` makes a random token, gives it to the app (environment) and writes it, with the
server's address and process, to `<project>/.serve.json`, readable by the owner only. A command that
finds that file (and the server process alive) posts its arguments, working directory and, where a
password is read from stdin, that line, with the token; the app runs the command under a lock on its
own store (never a second connection: a second opening would clean up version folders the app may be
writing) and sends back the exit status, stdout and stderr. Writes from either side are seen by the
other at once: there is one database instance. When no server runs, commands open the store themselves.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from workbench.core import jobs
from workbench.core.errors import WorkbenchError

SERVE_FILE = ".serve.json"
ROUTE = "/_wb/cli"
TOKEN_ENV = "WORKBENCH_CLI_TOKEN"
NOT_FORWARDED = ("serve", "demo")
_run_lock = threading.Lock()  # one forwarded command at a time: stdout/stderr are redirected process-wide


def new_token() -> str:
    return secrets.token_urlsafe(32)


def advertise(project_root: Path, *, url: str, token: str, job: jobs.Job) -> Path:
    """Write the served project's handle (owner-only permissions from the first byte)."""
    path = Path(project_root) / SERVE_FILE
    payload = json.dumps({"url": url, "token": token, "pid": job.pid, "create_time": job.create_time})
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(payload)
    return path


def withdraw(project_root: Path) -> None:
    (Path(project_root) / SERVE_FILE).unlink(missing_ok=True)


def served(project_root: Path) -> dict | None:
    """The handle of the server holding this project, or None (no file, or its server is gone)."""
    path = Path(project_root) / SERVE_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not jobs.alive(jobs.Job(int(info.get("pid") or 0), info.get("create_time"))):
        return None
    return info


def forward(info: dict, argv: list[str], *, stdin_text: str | None) -> int | None:
    """Run the command on the server; print what it printed; its exit status. None: the server did not
    answer (it is starting or stopping), so the caller runs the command itself."""
    body = json.dumps({"argv": argv, "cwd": os.getcwd(), "stdin": stdin_text}).encode("utf-8")
    request = urllib.request.Request(info["url"].rstrip("/") + ROUTE, data=body, method="POST", headers={
        "Authorization": f"Bearer {info['token']}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=None) as response:
            result = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise WorkbenchError(f"the running app refused the command ({exc.code}: "
                             f"{exc.read()[:200].decode('utf-8', 'replace')})") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    sys.stdout.write(result.get("stdout", ""))
    sys.stderr.write(result.get("stderr", ""))
    return int(result.get("code", 1))


def authorised(header: str | None) -> bool:
    expected = os.environ.get(TOKEN_ENV, "")
    given = (header or "").removeprefix("Bearer ").strip()
    return bool(expected) and secrets.compare_digest(given.encode(), expected.encode())


def run_here(store, argv: list[str], *, cwd: str, stdin_text: str | None) -> dict:
    """Server side: run one command on this process's store, capturing what it prints."""
    from workbench.cli import common, main

    out, err = io.StringIO(), io.StringIO()
    with _run_lock, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            common.borrowing(store, cwd=cwd, stdin_text=stdin_text):
        try:
            code = main.main(argv)
        except SystemExit as exc:  # argparse's own errors and --help
            code = exc.code if isinstance(exc.code, int) else 2
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
