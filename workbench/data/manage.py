"""Rename or archive a dataset; its versions never change.

A rename gives the dataset, every one of its versions and everything that names it as text
(`schema.DATASET_NAME_COLUMNS`: questions, training runs, evaluations, the quarantine) the new name
in one transaction, with the SQL views `new` and `new@N`; references by version id need no change.
The old name is remembered, so `get_version('old')` says where it went.

An archived dataset leaves `workbench datasets` and the pickers of the app, but stays readable by
name (`tickets@2`, the SQL views) and is listed by `workbench datasets --archived`; a new version of
it (an import under its name) brings it back.

This module owns the archive columns of wb_datasets and the table wb_dataset_renames (migration 12).
"""

from __future__ import annotations

from workbench.core.auth import User, now_utc, require_role
from workbench.core.errors import WorkbenchError
from workbench.core.schema import DATASET_NAME_COLUMNS
from workbench.core.store import Store, quote_ident
from workbench.core.versions import Version, archived_at, check_name, get_version, name_view

# How a rename's report and its refusals name each table that holds a dataset name.
REFERENCES = {"wb_versions": "versions", "wb_questions": "questions", "wb_runs": "runs",
              "wb_evals": "evaluations", "wb_quarantine": "quarantined_rows"}


def rename_dataset(store: Store, old: str, new: str, *, user: User | None = None) -> dict:
    """Give dataset `old` the name `new` (the importer's name rules; not one in use, in any case).

    Returns {dataset, renamed_from} and how many rows of each kind now carry the new name."""
    user = require_role(user, "manage_datasets")
    new = check_name((new or "").strip())
    _newest(store, old)

    def change(cur) -> dict:
        names = [r[0] for r in cur.execute("SELECT name FROM wb_datasets").fetchall()]
        if new == old:
            raise WorkbenchError(f"the dataset is already named {old!r}; type a different name")
        # SQL views are found case-insensitively, so 'Tickets' and 'tickets' cannot both be datasets.
        clash = next((n for n in names if n.lower() == new.lower() and n != old), None)
        if clash is not None:
            raise WorkbenchError(f"a dataset named {clash!r} exists already; choose another name")
        for table, column in DATASET_NAME_COLUMNS:  # rows left by a failed import may share a name
            if table in REFERENCES and table != "wb_quarantine" and cur.execute(
                    f"SELECT count(*) FROM {table} WHERE {column} = ?", [new]).fetchall()[0][0]:
                raise WorkbenchError(f"{REFERENCES[table]} recorded here still name a dataset {new!r}; "
                                     "choose another name")
        owned = cur.execute("SELECT number, table_name FROM wb_versions WHERE dataset = ? ORDER BY number",
                            [old]).fetchall()
        if not owned:  # renamed by someone else meanwhile
            raise WorkbenchError(f"no dataset named {old!r} any more; reload the list")
        for name in (old, *(f"{old}@{n}" for n, _ in owned)):
            cur.execute(f"DROP VIEW IF EXISTS {quote_ident(name)}")
        moved = {}
        for table, column in DATASET_NAME_COLUMNS:
            moved[table] = cur.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", [new, old]).fetchall()[0][0]
        for number, table in owned:
            name_view(cur, f"{new}@{number}", table)
        name_view(cur, new, owned[-1][1])
        cur.execute("INSERT INTO wb_dataset_renames VALUES (?, ?, ?, ?)", [old, new, now_utc(), user.name])
        return {"dataset": new, "renamed_from": old, **{REFERENCES[t]: n for t, n in moved.items() if t in REFERENCES}}

    return store.retry(change)


def archive_dataset(store: Store, name: str, *, user: User | None = None) -> dict:
    """Leave the dataset out of the lists and pickers; its versions stay readable by name."""
    user = require_role(user, "manage_datasets")
    newest = _newest(store, name)
    since = archived_at(store).get(name)
    if since is not None:
        raise WorkbenchError(f"dataset {name!r} is archived already (since {since:%Y-%m-%d %H:%M}); "
                             "unarchive it to list it again")
    when = now_utc()
    store.retry(lambda cur: cur.execute("UPDATE wb_datasets SET archived_at = ?, archived_by = ? WHERE name = ?",
                                        [when, user.name, name]))
    return {"dataset": name, "archived": True, "archived_at": when.isoformat(sep=" ", timespec="seconds"),
            "versions": newest.number}


def unarchive_dataset(store: Store, name: str, *, user: User | None = None) -> dict:
    """List an archived dataset again."""
    user = require_role(user, "manage_datasets")
    newest = _newest(store, name)
    if name not in archived_at(store):
        raise WorkbenchError(f"dataset {name!r} is not archived")
    store.retry(lambda cur: cur.execute("UPDATE wb_datasets SET archived_at = NULL, archived_by = NULL WHERE name = ?",
                                        [name]))
    return {"dataset": name, "archived": False, "versions": newest.number}


def _newest(store: Store, name: str) -> Version:
    """The dataset's newest version, or WorkbenchError naming the datasets there are."""
    if "@" in (name or ""):
        raise WorkbenchError(f"{name!r} names one version; these actions take the dataset's name, "
                             f"{name.partition('@')[0]!r}")
    return get_version(store, name or "")
