"""What every command module shares: the output boundary (control characters escaped), the progress bar,
opening the project's store, and printing a result as text or as one JSON object."""

from __future__ import annotations

import json
import re
import sys

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


def open_store(args, create: bool = True):
    """The store of the project named by --project (or the environment, or the default folder)."""
    from workbench.core.store import Store

    return Store.open(args.project, create=create)


def emit(args, payload: dict, text: str) -> None:
    """Print the result: one JSON object with --json, else the text."""
    if args.json:
        print(json.dumps(payload, default=str, ensure_ascii=False))
    else:
        print(text)
