"""Files that appear whole or not at all: written aside under a `.partial` name, then renamed into place.

One naming scheme for every writer (`<name>.<pid>-<thread>.partial` beside the target), so two writers
never share a side file and a crash leaves only names that no reader opens.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial"


def side_path(target: Path) -> Path:
    """Where a writer of `target` writes before the rename: beside it, unique to this thread."""
    return target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}{PARTIAL}")


def remove(path: Path) -> None:
    """Remove a file or a folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: Path | str, *, replace: bool = True) -> Iterator[Path]:
    """Yield the side path to write; on success it becomes `target` in one rename, on error it is removed.

    With replace=False an existing target is an error (FileExistsError) instead of being replaced."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = side_path(target)
    remove(tmp)
    try:
        yield tmp
        if target.exists():
            if not replace:
                raise FileExistsError(target)
            if target.is_dir():  # os.replace cannot replace a folder that holds files
                remove(target)
        os.replace(tmp, target)
    finally:
        remove(tmp)


def write_text(target: Path | str, text: str) -> Path:
    """Write text (UTF-8) atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: Path | str, obj, *, indent: int | None = 2) -> Path:
    """Write a JSON document atomically."""
    return write_text(target, json.dumps(obj, indent=indent))
