"""What every page shares: the project's store and how a user error is shown."""

from __future__ import annotations

import os

import pyarrow as pa
import streamlit as st

from workbench import browse
from workbench.formats import CANONICAL
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


def show_error(exc: BaseException | str) -> None:
    """A user error as one red line, never a traceback."""
    st.error(str(exc), icon=":material/error:")


def visible_columns(table: pa.Table) -> list[str]:
    """All columns but the canonical ones this page leaves empty (`messages` and `system` of
    prompt-completion data, `completion` of classification data)."""
    return [name for name in table.column_names
            if name not in CANONICAL or table.column(name).null_count < table.num_rows]


def version_rows(dataset_versions: list, all_versions: list) -> list[dict]:
    """The versions table of one dataset, newest first, with parents named as 'dataset@N'."""
    refs = {v.version_id: v.ref for v in all_versions}
    return [{"version": v.number, "kind": v.kind, "records": v.row_count, "format": v.format,
             "content hash": v.content_hash[:12],
             "parent": None if v.parent_id is None else refs.get(v.parent_id, f"#{v.parent_id}"),
             "created": v.created_at} for v in reversed(dataset_versions)]


# Versions never change, so what a query says about one can be kept for the life of the server.
# The key names the project and the version's content, so two projects never share an entry.

def version_key(store: Store, version) -> tuple:
    return str(store.project.root), version.version_id, version.content_hash


@st.cache_data(max_entries=256, show_spinner="Counting matching records…")
def count_matching(_store: Store, _version, key: tuple, text: str, categories: tuple) -> int:
    """browse.count with filters (a full scan), once per version and filter."""
    return browse.count(_store, _version, text=text, category=list(categories))


@st.cache_data(max_entries=64, show_spinner=False)
def category_counts(_store: Store, _version, key: tuple) -> list:
    """browse.value_counts of the category column, once per version."""
    return browse.value_counts(_store, _version)
