"""What every command module shares: the output boundary (control characters escaped), the progress bar,
opening the project's store, and printing a result as text or as one JSON object."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
from contextvars import ContextVar

# C0 controls other than tab and newline, DEL and C1 controls: from data they could drive the terminal
# (ESC and OSC sequences, carriage returns that hide text). Written as JSON-style escapes, so JSON output
# stays valid JSON with the same meaning.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """text with control characters shown as \\u001b and the like, for printing to a terminal."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class SafeStream:
    """The CLI's output boundary: every write to stdout/stderr goes through terminal_safe."""

    def __init__(self, stream):
        self.raw = stream

    def write(self, text: str) -> int:
        return self.raw.write(terminal_safe(text))

    def __getattr__(self, name):
        return getattr(self.raw, name)


class ProgressBar:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()

    def __call__(self, fraction: float, message: str) -> None:
        if self.enabled:
            filled = int(30 * fraction)
            out = getattr(sys.stderr, "raw", sys.stderr)  # its own \r may pass; the message may not
            out.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {fraction:4.0%} {terminal_safe(message[:40]):<40}")
            out.flush()
            if fraction >= 1.0:
                out.write("\n")


# Set while the app runs a command handed over by `workbench cli` on a served project (cli/remote.py):
# the app's own store, the caller's working directory. A context variable, so only that command sees it.
_BORROWED: ContextVar[tuple | None] = ContextVar("workbench_cli_borrowed", default=None)
# Arguments that name files: relative ones are read against the caller's working directory.
PATH_ARGUMENTS = ("path", "out", "file", "predictions", "references", "config", "space", "adapter")


@contextlib.contextmanager
def borrowing(store, *, cwd: str, stdin_text: str | None):
    """Run commands on this store (not a new one) for a caller in cwd, with stdin_text as stdin."""
    token = _BORROWED.set((store, cwd))
    stdin, sys.stdin = sys.stdin, io.StringIO(stdin_text or "")
    try:
        yield
    finally:
        sys.stdin = stdin
        _BORROWED.reset(token)


def borrowed_store():
    found = _BORROWED.get()
    return found[0] if found else None


def absolute_paths(args) -> None:
    """Make file arguments absolute against the caller's working directory (the app's cwd is not theirs)."""
    found = _BORROWED.get()
    if found is None:
        return
    for name in PATH_ARGUMENTS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value and not os.path.isabs(value) and (
                name != "adapter" or os.path.exists(os.path.join(found[1], value))):
            setattr(args, name, os.path.join(found[1], value))


class _Borrowed:
    """`with open_store(args) as store` on the app's store: leaving the block does not close it."""

    def __init__(self, store):
        self.store = store

    def __enter__(self):
        return self.store

    def __exit__(self, *exc) -> None:
        return None


OPEN_WAIT_S = 5.0  # how long a command waits for another process's moment with the database


def open_store(args, create: bool = True, *, wait_s: float = OPEN_WAIT_S):
    """The store of the project named by --project (or the environment, or the default folder); inside the
    app serving that project, the app's own store. Another process holding the database for a moment (a
    command's one operation) is waited for, up to wait_s seconds."""
    import time

    from workbench.core.errors import StoreBusy, WorkbenchError
    from workbench.core.project import project_dir
    from workbench.core.store import Store

    borrowed = borrowed_store()
    if borrowed is not None:
        if project_dir(args.project) != borrowed.project.root.resolve():
            raise WorkbenchError(f"this app serves {borrowed.project.root}, not {project_dir(args.project)}")
        return _Borrowed(borrowed)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return Store.open(args.project, create=create)
        except StoreBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def emit(args, payload: dict, text: str) -> None:
    """Print the result: one JSON object with --json, else the text."""
    if args.json:
        print(json.dumps(payload, default=str, ensure_ascii=False))
    else:
        print(text)
