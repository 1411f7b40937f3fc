"""The test items of an evaluation: the records of a dataset version's split, each as the
conversation up to the answer and the reference answer; and records fetched by their `_row`."""

from __future__ import annotations

from workbench.core.canonical import canonical_to_messages
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, version_columns

ALL_SPLITS = "all"


def split_values(store: Store, version: Version) -> list[str] | None:
    """The values of the version's `split` column (None when it has none)."""
    if "split" not in [c for c, _ in version_columns(store, version)]:
        return None
    rows = store.cursor().execute(
        f"SELECT DISTINCT CAST(split AS VARCHAR) FROM {version.table_name} WHERE split IS NOT NULL ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def split_where(store: Store, version: Version, split: str) -> tuple[str, list]:
    if split == ALL_SPLITS:
        return "", []
    values = split_values(store, version)
    if values is None:
        raise WorkbenchError(f"{version.ref} has no split column, so it has no {split!r} split; make splits with "
                             f"`workbench split {version.dataset} --ratios 0.8,0.1,0.1`, or evaluate on every "
                             f"record with --split all")
    if split not in values:
        raise WorkbenchError(f"{version.ref} has no records in split {split!r}; its splits: "
                             f"{', '.join(values) or 'none'} (or --split all)")
    return "WHERE CAST(split AS VARCHAR) = ?", [split]


def task_of(version: Version) -> str:
    """What the records ask for: a label (classification) or a text answer (generation)."""
    return "classification" if version.format == "classification" else "generation"


def item_batches(store: Store, version: Version, split: str, batch_rows: int = 10_000):
    """(item rows, skipped) per batch: each test record's prompt messages and its reference answer."""
    where, params = split_where(store, version, split)
    names = [c for c, _ in version_columns(store, version)]
    label = version.label_column if version.format == "classification" else None
    cols = ", ".join([ROW_COLUMN, "prompt"] + [c if c in names else f"NULL AS {c}"
                                               for c in ("completion", "system", "messages")]
                     + ([f"CAST({quote_ident(label)} AS VARCHAR) AS label"] if label else []))
    cur = store.con.cursor()
    try:
        reader = cur.sql(f"SELECT {cols} FROM {version.table_name} {where} ORDER BY {ROW_COLUMN}",
                         params=params).to_arrow_reader(batch_rows)
        for batch in reader:
            out, skipped = [], 0
            for r in batch.to_pylist():
                if label:
                    prompt_msgs = [{"role": "user", "content": r["prompt"]}]
                    reference = r["label"]
                else:
                    msgs = canonical_to_messages(r["prompt"], r["completion"], r["system"], r["messages"])
                    last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
                    reference = msgs[last]["content"] if last is not None else None
                    prompt_msgs = msgs[:last] if last is not None else msgs
                if reference is None or not prompt_msgs:
                    skipped += 1
                    continue
                out.append({"row": r[ROW_COLUMN], "messages": prompt_msgs, "reference": reference})
            yield out, skipped
    finally:
        cur.close()


def records(store: Store, version: Version, rows: list[int]) -> list[dict]:
    """The records at these 0-based _row positions (in the order given), with every column."""
    if not rows:
        return []
    table = store.cursor().sql(f"SELECT * FROM {version.table_name} WHERE {ROW_COLUMN} IN "
                               f"(SELECT unnest(?::BIGINT[]))", params=[[int(r) for r in rows]]).to_arrow_table()
    by_row = {r[ROW_COLUMN]: r for r in table.to_pylist()}
    return [by_row[r] for r in rows if r in by_row]


def label_set(store: Store, version: Version) -> list[str]:
    """Every label of a classification version (all splits): what a generated answer is parsed against."""
    col = quote_ident(version.label_column)
    rows = store.cursor().execute(f"SELECT DISTINCT CAST({col} AS VARCHAR) AS label FROM {version.table_name} "
                                  f"WHERE {col} IS NOT NULL ORDER BY label").fetchall()
    return [r[0] for r in rows]
