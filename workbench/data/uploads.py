"""Files a user uploads through the app: saved under the project's `uploads/`, never outside it.

The browser sends a file name we do not trust: it may hold folders, `..`, a leading dot
or characters a shell or another OS would trip on. Only a cleaned base name is kept,
an existing file is never overwritten, and a half-written file is never visible.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from workbench.core.project import Project

MAX_NAME_CHARS = 120
MAX_EXT_CHARS = 16
_UNSAFE = re.compile(r"[^\w.-]+")  # letters (any script), digits, '_', '.', '-'


def _split(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    return (stem, ext) if dot and stem else (name, "")


def safe_filename(filename: str, *, default: str = "upload") -> str:
    """A base name that is safe to create inside one folder: no folders, not hidden, extension kept.

    'C:\\data\\../tickets.jsonl' -> 'tickets.jsonl'; '..' -> 'upload'; '.jsonl' -> 'upload.jsonl'.
    """
    name = str(filename or "").replace("\\", "/").rsplit("/", 1)[-1]  # Windows and POSIX folders alike
    name = _UNSAFE.sub("_", name).strip("_").rstrip(".")  # Windows drops trailing dots
    if name.startswith("."):  # hidden file, '..' or a bare extension such as '.jsonl'
        name = default + "." + name.lstrip(".")
    stem, ext = _split(name.rstrip("."))
    stem, ext = stem.strip("._-") or default, ext[:MAX_EXT_CHARS]
    stem = stem[: MAX_NAME_CHARS - len(ext) - 1]
    return f"{stem}.{ext}" if ext else stem


def save_upload(project: Project, filename: str, data: bytes) -> Path:
    """Write data to project.uploads_dir under a safe, new name; return the path.

    An existing file is never replaced: 'tickets.jsonl' becomes 'tickets-2.jsonl',
    'tickets-3.jsonl', ... The bytes go to a temporary file first and appear under
    their name only once complete (a hard link, which fails rather than overwrite).
    """
    folder = project.uploads_dir
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_filename(filename)
    stem, ext = _split(name)
    suffix = f".{ext}" if ext else ""
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        for n in range(1, 10_000):
            target = folder / (name if n == 1 else f"{stem}-{n}{suffix}")
            try:
                _place(tmp, target)
            except FileExistsError:
                continue
            return target
        raise FileExistsError(f"too many uploads named {name} in {folder}; clear out {folder}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _place(tmp: str, target: Path) -> None:
    """Give the finished temp file its name without ever replacing an existing file."""
    try:
        os.link(tmp, target)  # atomic and exclusive
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: claim the name, then move the bytes over the claim
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        try:
            os.replace(tmp, target)
        except BaseException:
            os.unlink(target)
            raise
