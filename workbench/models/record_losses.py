"""Per-record training loss of a run: which training records its adapter could not fit.

After training, the trainer scores every training record with the adapter it keeps and writes
`runs/<id>/record_losses.jsonl`: {line, loss (mean per answer token, the training loss's definition),
tokens, truncated} (`trainers.train.TrainingRecipe.record_losses`). A line of the run's
`data/records.jsonl` is a row of the dataset version: `runs.export_records` exports the whole version in
row order. This module joins the losses with the version's text, highest first, flags the hardest for
the labelling queue, and gives the label-error finder its training-loss signal (records in the top 5%).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, get_version

FILE = "record_losses.jsonl"  # written by trainers.train (RECORD_LOSSES)
FINISHED = ("completed", "stopped early")
TOP_FRACTION = 0.05  # the label-error signal: records in this top share of a run's losses
COLUMNS = ["row", "loss", "tokens", "truncated"]


def read_losses(run_dir: str | Path) -> pd.DataFrame | None:
    """The run's per-record losses by row (row, loss, tokens, truncated), or None when it has none."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    frame = pd.read_json(path, lines=True, dtype={"line": "int64", "loss": "float64"}, precise_float=True)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    return frame.rename(columns={"line": "row"})[COLUMNS]  # a line of records.jsonl is a row of the version


def note(run_dir: str | Path) -> str | None:
    """Why a run has no per-record losses (the trainer's note), or None."""
    from workbench.models.runs import read_events

    for e in reversed(read_events(Path(run_dir))):
        if e["type"] == "record_losses":
            return e.get("skipped")
    return None


def run_version(store: Store, run_id: str) -> Version:
    """The dataset version a run trained on (refused when the run folder and the store disagree)."""
    from workbench.models.runs import run_info

    info = run_info(store, run_id)
    version = get_version(store, f"{info.get('dataset')}@{info.get('version')}")
    if version.version_id != info.get("version_id") or version.content_hash != info.get("content_hash"):
        raise WorkbenchError(f"run {run_id} trained on {version.ref} as it was before (another content hash); "
                             "its records no longer match this version's rows")
    return version


def hardest_records(store: Store, run_id: str, *, limit: int | None = None, chars: int = 200) -> pd.DataFrame:
    """The run's training records, highest loss first (ties by row): row, loss, tokens, truncated, and the
    first `chars` characters of the prompt and the answer. Empty when the run recorded no losses."""
    from workbench.models.runs import run_path

    losses = read_losses(run_path(store, run_id))
    if losses is None or losses.empty:
        return pd.DataFrame(columns=[*COLUMNS, "prompt", "answer"])
    version = run_version(store, run_id)
    ranked = losses.sort_values(["loss", "row"], ascending=[False, True], kind="stable")
    if limit is not None:
        ranked = ranked.head(int(limit))
    if int(ranked["row"].max()) >= version.row_count:
        raise WorkbenchError(f"run {run_id}'s losses name row {int(ranked['row'].max())}, but {version.ref} has "
                             f"{version.row_count:,} records; the run folder does not belong to this version")
    texts = _texts(store, version, ranked["row"].tolist(), chars)
    out = ranked.merge(texts, on="row", how="left")
    return out.reset_index(drop=True)


def _texts(store: Store, version: Version, rows: list[int], chars: int) -> pd.DataFrame:
    """The start of the prompt and of the answer (the completion, or a classification's label) by row."""
    answer = "completion"
    if version.format == "classification" and version.label_column:
        answer = f"CAST({quote_ident(version.label_column)} AS VARCHAR)"
    n = int(chars)
    cur = store.con.cursor()
    try:
        return cur.execute(
            f"SELECT {ROW_COLUMN} AS row, left(CAST(prompt AS VARCHAR), {n}) AS prompt, "
            f"left({answer}, {n}) AS answer FROM {version.table_name} "
            f"WHERE {ROW_COLUMN} IN (SELECT unnest(?::BIGINT[]))", [[int(r) for r in rows]]).df()
    finally:
        cur.close()


def flag_hardest(store: Store, run_id: str, top: int, *, user=None) -> int:
    """Flag the run's `top` hardest records for another look in the labelling queue, each with its loss."""
    from workbench.labels import flags

    if int(top) < 1:
        raise WorkbenchError(f"flag the top {top}? give a number of records, at least 1")
    ranked = hardest_records(store, run_id, limit=int(top), chars=0)
    if ranked.empty:
        raise WorkbenchError(f"run {run_id} recorded no per-record losses; nothing to flag")
    version = run_version(store, run_id)
    done = 0
    for row, loss in zip(ranked["row"], ranked["loss"]):
        done += flags.flag_records(store, version, [int(row)], f"training loss {loss:.3f} after run {run_id}", user)
    return done


def loss_signal(store: Store, version: Version) -> dict[int, str]:
    """Records in the top 5% of loss of the newest finished run on this version that recorded losses,
    each with its reason (for workbench.inspect.label_errors); {} when there is none."""
    from workbench.models.runs import run_path, runs_on_versions

    for run in reversed(runs_on_versions(store, [version.version_id])):
        if run["status"] not in FINISHED:
            continue
        try:
            losses = read_losses(run_path(store, run["run_id"]))
        except WorkbenchError:  # the folder was removed
            continue
        if losses is None or losses.empty or int(losses["row"].max()) >= version.row_count:
            continue
        top = losses.sort_values(["loss", "row"], ascending=[False, True], kind="stable")
        top = top.head(max(1, math.ceil(len(losses) * TOP_FRACTION)))
        return {int(r): f"the adapter of run {run['run_id']} could not fit it (loss {loss:.3f}, top "
                        f"{TOP_FRACTION:.0%})" for r, loss in zip(top["row"], top["loss"])}
    return {}


def summary(losses: pd.DataFrame) -> dict:
    """records, mean and median loss of a run's per-record losses."""
    values = losses["loss"]
    return {"records": int(len(values)), "mean": float(values.mean()) if len(values) else None,
            "median": float(values.median()) if len(values) else None}
