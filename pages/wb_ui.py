"""What every page shares: the project's store and how a user error is shown."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import pyarrow as pa
import streamlit as st

from workbench.errors import WorkbenchError
from workbench.project import open_project, project_dir
from workbench.store import Store


@st.cache_resource(show_spinner=False, on_release=lambda store: store.close())
def _store_for(root: str) -> Store:
    return Store(open_project(root, create=True))


def current_project_dir() -> str:
    """The project folder this server was started on (WORKBENCH_PROJECT, default ./workbench-data)."""
    return str(project_dir(os.environ.get("WORKBENCH_PROJECT")))


def get_store() -> Store:
    """The one read-write store of this server process, keyed by project folder.

    Raises WorkbenchError when the database is held by another process (a running CLI import).
    """
    return _store_for(current_project_dir())


def show_error(exc: BaseException) -> None:
    """A user error as one red line, never a traceback."""
    st.error(str(exc), icon=":material/error:")


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a WorkbenchError raised in the block as st.error and carry on with the page."""
    try:
        yield
    except WorkbenchError as exc:
        show_error(exc)


def visible_columns(table: pa.Table) -> list[str]:
    """Columns with at least one value on this page (chat-only columns stay hidden for other formats)."""
    return [name for name in table.column_names if table.column(name).null_count < table.num_rows]
