"""Work queues with overlap: each item of a task needs answers from `overlap` different people.

A task is any list of items (records of a dataset version to label, model outputs to review)
described by two SQL queries: its items in order, and who has answered which item. Each person
gets the first item that they have not answered and that still needs answers once the live claims
of others are counted, and claims it for a while (a lease). While a claim lives, nobody else can
take the last free place of that item; a claim that is not answered in time simply expires.

Claims are taken under a per-task lock inside one write transaction. Only one process opens a
project's DuckDB file for writing (see workbench.core.store), so a lock in this process is enough to
make "count the free places, then claim one" atomic.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from workbench.core.auth import now_utc
from workbench.core.store import Store

LEASE_SECONDS = 600.0


@dataclass(frozen=True)
class Task:
    """What a queue hands out."""

    name: str
    """Unique name of the task, for example 'question:3' or 'review:7'."""
    items_sql: str
    """SELECT returning `item` (VARCHAR, unique) and `pos` (BIGINT, the order items are handed out in)."""
    answers_sql: str
    """SELECT returning `item` and `annotator`, one row per answer (repeats are fine), only for items of this task."""
    overlap: int
    """How many different people must answer each item."""

    def __post_init__(self):
        if self.overlap < 1:
            raise ValueError(f"overlap must be at least 1, got {self.overlap}")


@dataclass
class _Locks:
    """One lock per task, per store: claims of one task are serialised within this process."""
    by_task: dict[str, threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)


def _lock(store: Store, task: Task) -> threading.Lock:
    locks = store.state("assignment_locks", _Locks)
    with locks.guard:
        return locks.by_task.setdefault(task.name, threading.Lock())



def _counts_sql(task: Task) -> str:
    return (f"WITH items AS ({task.items_sql}), counts AS (SELECT item, count(DISTINCT annotator) AS n, "
            f"bool_or(annotator = $annotator) AS mine FROM ({task.answers_sql}) GROUP BY item)")


def claim_next(store: Store, task: Task, annotator: str, *, exclude=(), lease_seconds: float = LEASE_SECONDS,
               now: datetime | None = None) -> str | None:
    """The item this person should answer next, claimed for `lease_seconds`; None when nothing is left.

    A live claim of theirs on an item they have not answered is handed back first (a reload shows
    the same record). `exclude` lists items to pass over (the ones they skipped this session)."""
    now = now or now_utc()
    params = {"task": task.name, "annotator": annotator, "now": now, "exclude": [str(x) for x in exclude],
              "overlap": task.overlap}
    mine = ("SELECT item FROM wb_claims WHERE task = $task AND annotator = $annotator AND expires_at > $now "
            "AND NOT list_contains($exclude, item) ORDER BY claimed_at DESC LIMIT 1")
    answered = f"SELECT 1 FROM ({task.answers_sql}) WHERE item = $item AND annotator = $annotator LIMIT 1"
    free = (f"{_counts_sql(task)}, claims AS (SELECT item, count(DISTINCT annotator) AS c FROM wb_claims "
            "WHERE task = $task AND annotator <> $annotator AND expires_at > $now GROUP BY item) "
            "SELECT i.item FROM items i LEFT JOIN counts USING (item) LEFT JOIN claims USING (item) "
            "WHERE NOT coalesce(counts.mine, false) AND coalesce(counts.n, 0) + coalesce(claims.c, 0) < $overlap "
            "AND NOT list_contains($exclude, i.item) ORDER BY i.pos LIMIT 1")

    def take(cur):
        rows = cur.execute(mine, {k: v for k, v in params.items() if k != "overlap"}).fetchall()
        if rows and cur.execute(answered, {"item": rows[0][0], "annotator": annotator}).fetchall():
            rows = []
        if not rows:
            rows = cur.execute(free, params).fetchall()
        cur.execute("DELETE FROM wb_claims WHERE task = $task AND annotator = $annotator",
                    {"task": task.name, "annotator": annotator})
        if not rows:
            return None
        item = rows[0][0]
        cur.execute("INSERT INTO wb_claims VALUES (?, ?, ?, ?, ?)",
                    [task.name, item, annotator, now, now + timedelta(seconds=lease_seconds)])
        return item

    with _lock(store, task):
        return store.retry(take)


def release(cur, task: Task, annotator: str) -> None:
    """Drop this person's claims on the task (inside the caller's transaction: an answer, a skip)."""
    cur.execute("DELETE FROM wb_claims WHERE task = ? AND annotator = ?", [task.name, annotator])


def release_claims(store: Store, task: Task, annotator: str) -> None:
    store.retry(lambda cur: release(cur, task, annotator))


def progress(store: Store, task: Task, annotator: str) -> dict:
    """done: items this person answered; remaining: items they could still answer;
    complete / total: items with all `overlap` answers, and all items."""
    # Counted over the answers only, never joined with the items: a version may hold millions of records.
    sql = (f"{_counts_sql(task)} SELECT (SELECT count(*) FROM items), count(*) FILTER (WHERE mine), "
           "count(*) FILTER (WHERE n >= $overlap AND NOT mine), count(*) FILTER (WHERE n >= $overlap) FROM counts")
    total, done, full_not_mine, complete = store.cursor().execute(
        sql, {"annotator": annotator, "overlap": task.overlap}).fetchall()[0]
    remaining = total - done - full_not_mine
    return {"done": done, "remaining": remaining, "complete": complete, "total": total}


def live_claims(store: Store, task: Task, *, now: datetime | None = None) -> list[dict]:
    rows = store.cursor().execute(
        "SELECT item, annotator, claimed_at, expires_at FROM wb_claims WHERE task = ? AND expires_at > ? "
        "ORDER BY claimed_at", [task.name, now or now_utc()]).fetchall()
    return [dict(zip(("item", "annotator", "claimed_at", "expires_at"), r)) for r in rows]
