"""Records flagged for another look (the `wb_flags` table, append-only: who, when, why).

Flags come from the Evaluate page (training records behind a bad answer) and from reviews; the
Label page's queue puts flagged records first and shows why they were flagged. This module owns
the table: the others call these functions.
"""

from __future__ import annotations

from workbench.core.auth import now_utc
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import Version, get_version


def _version(store: Store, version: Version | str) -> Version:
    return get_version(store, version) if isinstance(version, str) else version


def flag_records(store: Store, version: Version | str, rows, reason: str, user=None, *,
                 eval_id: int | None = None) -> int:
    """Flag records of a version for relabelling (append-only: who, when, why); returns how many rows.

    The Label queue picks these up first (`flagged_rows_sql`)."""
    version = _version(store, version)
    if user is not None and not isinstance(user, str):
        from workbench.core import auth

        auth.require_role(user, "annotate")  # any signed-in role may point at a bad record
    reason = (reason or "").strip()
    if not reason:
        raise WorkbenchError("say why these records need another look (a reason is required)")
    rows = sorted({int(r) for r in rows})
    bad = [r for r in rows if not 0 <= r < version.row_count]
    if bad:
        raise WorkbenchError(f"{version.ref} has rows 0-{version.row_count - 1}; row {bad[0]} is not one of them")
    if not rows:
        return 0
    who = getattr(user, "name", None) or (user if isinstance(user, str) else None) or "local"
    now = now_utc()
    store.retry(lambda cur: cur.executemany(
        "INSERT INTO wb_flags (version_id, _row, reason, who, created_at, eval_id) VALUES (?, ?, ?, ?, ?, ?)",
        [[version.version_id, r, reason, who, now, eval_id] for r in rows]))
    return len(rows)


def flags(store: Store, version: Version | str) -> list[dict]:
    """Every flag on a version's records, oldest first: {row, reason, who, created_at, eval_id}."""
    version = _version(store, version)
    rows = store.cursor().execute(
        "SELECT _row, reason, who, created_at, eval_id FROM wb_flags WHERE version_id = ? "
        "ORDER BY created_at, _row", [version.version_id]).fetchall()
    return [{"row": r[0], "reason": r[1], "who": r[2], "created_at": r[3], "eval_id": r[4]} for r in rows]


def count_flags(store: Store, version: Version | str) -> int:
    """How many flags a version's records carry."""
    version = _version(store, version)
    return store.cursor().execute("SELECT count(*) FROM wb_flags WHERE version_id = ?",
                                  [version.version_id]).fetchall()[0][0]


def flag_reasons(store: Store, version_id: int, row: int) -> list[str]:
    """Why people asked for another look at one record, oldest first."""
    return [r[0] for r in store.cursor().execute(
        "SELECT reason FROM wb_flags WHERE version_id = ? AND _row = ? ORDER BY created_at",
        [int(version_id), int(row)]).fetchall()]


def flagged_rows_sql(version_id: int) -> str:
    """A query of the distinct flagged `_row`s of a version, for the labelling queue to join with."""
    return f"SELECT DISTINCT _row FROM wb_flags WHERE version_id = {int(version_id)}"
