"""The order in which a question's labelling queue hands out records, and the classifier certainty it can use.

- **default**: flagged records first, then record order.
- **uncertain**: flagged records first; within them and within the rest, records whose answers so far
  disagree first, then the records the classifier is least sure about, then record order. The classifier's
  certainty about a record is its largest out-of-fold probability, from the label-error finder
  (workbench.inspect.label_errors) when it has been run on the question's version; without one, the order is
  disagreement first, then record order.

The finder keeps each record's certainty in a cache file per version and label column
(cache/certainty_v<id>_<hash>[_<column>].parquet with `_row` and `certainty`; a version never changes, so the
file stays valid). A question reads the file of the first of its choices column, its answer column and its
name that has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from workbench.core import files
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import ROW_COLUMN, Version
from workbench.inspect.cache import cache_path, parquet_sql
from workbench.labels import flags

if TYPE_CHECKING:
    from workbench.labels.questions import Question

DEFAULT = "default"
ORDERS = {
    DEFAULT: "flagged records first, then record order",
    "uncertain": "flagged records first, then records whose answers disagree, then those the label-error "
                 "classifier is least sure about (when it was run on this version), then record order",
}
# Records someone pointed at for another look (from an evaluation or a review) come first in every
# question's queue over that version: the others' queue positions are moved back by this much.
FLAGGED_OFFSET = 1 << 48
# Uncertain order: pos = flagged band + disagreement band + certainty step * 2^32 + row (rows < 2^32).
ROW_SPAN = 1 << 32
CERTAINTY_STEPS = 1 << 15  # certainty in [0, 1] in steps of 1/32768; equal steps go in record order
AGREED_OFFSET = 1 << 48
UNFLAGGED_OFFSET = 1 << 49
CERTAINTY_KIND = "certainty"


def check_order(order: str | None) -> str:
    """The order's name, or WorkbenchError listing the orders."""
    order = (order or DEFAULT).strip()
    if order not in ORDERS:
        raise WorkbenchError(f"queue order {order!r} is not known; expected one of {', '.join(ORDERS)}")
    return order


# ---------------------------------------------------------------- the classifier's certainty

def certainty_path(store: Store, version: Version, label_col: str) -> Path:
    return cache_path(store, version, CERTAINTY_KIND, label_col)


def save_certainty(store: Store, version: Version, label_col: str, certainty: np.ndarray) -> Path:
    """Keep the classifier's certainty (largest out-of-fold probability) of every record of a version, in row
    order; NaN for records it did not score."""
    certainty = np.asarray(certainty, dtype=float)
    if len(certainty) != version.row_count:
        raise ValueError(f"{len(certainty)} certainties for {version.row_count} records of {version.ref}")
    table = pa.table({ROW_COLUMN: pa.array(np.arange(len(certainty), dtype=np.int64)),
                      "certainty": pa.array(certainty, mask=np.isnan(certainty))})
    import pyarrow.parquet as pq

    path = certainty_path(store, version, label_col)
    with files.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def certainty_file(store: Store, question: Question) -> str | None:
    """The stored certainty file the question's queue can use, or None when the finder was not run on its
    version (for the question's choices column, answer column or name)."""
    try:
        version = question.version(store)
    except WorkbenchError:
        return None
    for column in dict.fromkeys(c for c in (question.choices_from, question.column, question.name) if c):
        path = certainty_path(store, version, column)
        if path.exists():
            return str(path)
    return None


# ---------------------------------------------------------------- the queue

def items_sql(question: Question) -> str:
    """The question's queue (`item`, `pos`) in its order, for workbench.labels.assignment.Task."""
    key = question.key_sql_of("r")
    flagged = f"LEFT JOIN ({flags.flagged_rows_sql(question.version_id)}) f ON f._row = r.{ROW_COLUMN}"
    if question.queue_order == DEFAULT:
        return (f"SELECT {key} AS item, r.{ROW_COLUMN} + CASE WHEN f._row IS NULL THEN {FLAGGED_OFFSET} ELSE 0 END "
                f"AS pos FROM wb_v{question.version_id} r {flagged}")
    from workbench.labels.annotations import LATEST_SQL

    latest = LATEST_SQL.replace("$qid", str(int(question.question_id)))
    disagree = (f"LEFT JOIN (SELECT item FROM ({latest}) GROUP BY item HAVING count(DISTINCT value) > 1) d "
                f"ON d.item = {key}")
    step, certainty = "0", ""
    if question.certainty_file:
        step = (f"coalesce(least(CAST(floor(c.certainty * {CERTAINTY_STEPS}) AS BIGINT), {CERTAINTY_STEPS}), "
                f"{CERTAINTY_STEPS + 1})")  # not scored (no label): after every scored record
        certainty = f"LEFT JOIN {parquet_sql(Path(question.certainty_file))} c ON c.{ROW_COLUMN} = r.{ROW_COLUMN}"
    return (f"SELECT {key} AS item, CASE WHEN f._row IS NULL THEN {UNFLAGGED_OFFSET} ELSE 0 END "
            f"+ CASE WHEN d.item IS NULL THEN {AGREED_OFFSET} ELSE 0 END + {step} * {ROW_SPAN} + r.{ROW_COLUMN} "
            f"AS pos FROM wb_v{question.version_id} r {flagged} {disagree} {certainty}")
