"""Evaluation runs: the records of `wb_evals`, `wb_eval_items`, `wb_eval_outputs`, `wb_eval_scores` and
`wb_eval_labels`. This module owns those tables; every other module asks it.

An evaluation run ("eval") is one model (a base, a base + adapter, or a finished training run) on
one dataset version's test split with saved generation settings, so it can be repeated.

How a run flows, and why nothing generated is lost:

1. `create_eval` writes the run folder `runs/eval-<id>/`: `items.jsonl` (one line per test
   record: its position `item`, its `_row` in the version, and the chat messages up to the answer)
   and `eval.json` (model, adapter, generation settings). The reference answers go into
   `wb_eval_items` in the store.
2. `generator.launch` starts the generator (`trainers.eval_generate`) as a job. It never opens the
   store: it appends `{"item", "output"}` lines to `outputs.jsonl`, flushed after every batch, and
   writes `done.json` at the end. Started again, it skips the items already in the file.
3. `ingest` reads new complete lines of `outputs.jsonl` into `wb_eval_outputs`, keyed by
   (eval_id, item) with ON CONFLICT DO NOTHING, so reading a line twice (a restart re-reads the
   file) changes nothing. The app calls it while the bar moves; the CLI calls it in its wait loop.
4. `eval_scores.score` runs when every item has an output and stores what `save_scores` takes.

Then: `slices` (every metric per value of a column, and the leaderboard), `compare` (paired
bootstrap, per-example gains and losses), `neighbours` (training records most like a text) and
`workbench.labels.flags` (the relabelling queue).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, get_version
from workbench.models.eval_items import item_batches, task_of
from workbench.models.eval_setup import GenerationSettings, ModelSpec, answer_budget

Progress = Callable[[float, str], None]

STATUSES = ("created", "running", "stopped", "failed", "generated", "finished")
ITEMS_FILE, OUTPUTS_FILE, CONFIG_FILE, DONE_FILE, LOG_FILE = (
    "items.jsonl", "outputs.jsonl", "eval.json", "done.json", "generate.log")


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def user_name(user) -> str:
    return getattr(user, "name", None) or (user if isinstance(user, str) else None) or "local"


def require(user, action: str = "evaluate"):
    """Annotators may not run evaluations (workbench.core.auth); user=None is the local owner."""
    if user is None or isinstance(user, str):
        return user
    from workbench.core import auth

    return auth.require_role(user, action)


# ---------------------------------------------------------------- the run record

@dataclass
class EvalRun:
    eval_id: int
    version_id: int
    dataset: str
    version: int
    split: str
    task: str
    run_id: str | None
    base_model: str
    adapter: str | None
    model_label: str
    settings: dict
    folder: str
    items: int
    items_hash: str
    skipped: int
    status: str
    pid: int | None
    ingested_bytes: int
    metrics: dict | None
    error: str | None
    created_at: datetime | None
    created_by: str | None
    finished_at: datetime | None
    generated: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.version}"

    @property
    def path(self) -> Path:
        return Path(self.folder)

    @property
    def fraction(self) -> float:
        return self.generated / self.items if self.items else 1.0

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed", "stopped")

    def summary(self) -> dict:
        """The JSON a user sees: ids, model, split, progress, metrics."""
        out = {"eval_id": self.eval_id, "run_id": self.run_id, "dataset": self.dataset, "version": self.version,
               "split": self.split, "task": self.task, "model": self.model_label, "base_model": self.base_model,
               "adapter": self.adapter, "settings": self.settings, "status": self.status, "items": self.items,
               "generated": self.generated, "skipped": self.skipped, "folder": self.folder, "error": self.error,
               "created_at": self.created_at, "created_by": self.created_by}
        out.update(self.metrics or {})
        return out


_EVAL_COLS = [f.name for f in fields(EvalRun)][:23]


def _eval_from_row(row, generated: int) -> EvalRun:
    values = dict(zip(_EVAL_COLS, row))
    values["settings"] = json.loads(values["settings"] or "{}")
    values["metrics"] = json.loads(values["metrics"]) if values["metrics"] else None
    return EvalRun(**values, generated=generated)


def get_eval(store: Store, eval_id: int) -> EvalRun:
    cur = store.cursor()
    rows = cur.execute(f"SELECT {', '.join(_EVAL_COLS)} FROM wb_evals WHERE eval_id = ?", [int(eval_id)]).fetchall()
    if not rows:
        raise WorkbenchError(f"no evaluation run {eval_id}; see `workbench evals`")
    generated = cur.execute("SELECT count(*) FROM wb_eval_outputs WHERE eval_id = ?", [int(eval_id)]).fetchall()[0][0]
    return _eval_from_row(rows[0], generated)


def list_evals(store: Store, *, version_id: int | None = None, split: str | None = None) -> list[EvalRun]:
    """Every evaluation run, newest first (optionally of one version and split)."""
    where, params = [], []
    if version_id is not None:
        where.append("e.version_id = ?")
        params.append(int(version_id))
    if split is not None:
        where.append("e.split = ?")
        params.append(split)
    sql = (f"SELECT {', '.join('e.' + c for c in _EVAL_COLS)}, "
           f"(SELECT count(*) FROM wb_eval_outputs o WHERE o.eval_id = e.eval_id) FROM wb_evals e "
           f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY e.eval_id DESC")
    return [_eval_from_row(r[:-1], r[-1]) for r in store.cursor().execute(sql, params).fetchall()]


def create_eval(store: Store, version: Version | str, *, model: ModelSpec, split: str = "test",
                settings: GenerationSettings | dict | None = None, user=None) -> EvalRun:
    """Write the run folder (items, config) and the references; nothing is generated yet (see
    `workbench.models.generator.launch`)."""
    user = require(user)
    if isinstance(version, str):
        version = get_version(store, version)
    settings = settings if isinstance(settings, GenerationSettings) else GenerationSettings.from_dict(settings or {})
    task = task_of(version)
    eval_id = store.cursor().execute("SELECT nextval('wb_eval_seq')").fetchall()[0][0]
    folder = store.project.runs_dir / f"eval-{eval_id}"
    folder.mkdir(parents=True, exist_ok=False)
    table, items_hash, skipped = _write_items(folder / ITEMS_FILE, item_batches(store, version, split), eval_id)
    if table.num_rows == 0:
        raise WorkbenchError(f"{version.ref} has no records with a reference answer in split {split!r}")
    saved = settings.to_dict()
    if settings.max_new_tokens == 0:  # sized from what the references need
        saved["max_new_tokens"], saved["max_new_tokens_rule"] = answer_budget(
            store, model.base_model, table.column("reference").to_pylist())
    config = {"eval_id": eval_id, "base_model": model.base_model, "adapter": model.adapter,
              "items": str(folder / ITEMS_FILE), "outputs": str(folder / OUTPUTS_FILE),
              "done": str(folder / DONE_FILE), "settings": saved, "task": task,
              "dataset": version.ref, "split": split, "run_id": model.run_id}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")

    def insert(cur):
        cur.execute(
            "INSERT INTO wb_evals (eval_id, version_id, dataset, version, split, task, run_id, base_model, adapter,"
            " model_label, settings, folder, items, items_hash, skipped, status, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'created', ?, ?)",
            [eval_id, version.version_id, version.dataset, version.number, split, task, model.run_id,
             model.base_model, model.adapter, model.label or model.base_model, json.dumps(saved),
             str(folder), table.num_rows, items_hash, skipped, now(), user_name(user)])
        cur.register("wb_new_items", table)
        cur.execute("INSERT INTO wb_eval_items SELECT eval_id, item, _row, reference FROM wb_new_items")
        cur.unregister("wb_new_items")

    store.retry(insert)
    return get_eval(store, eval_id)


def _write_items(path: Path, batches, eval_id: int) -> tuple[pa.Table, str, int]:
    """items.jsonl for the generator; returns (the references as a table, the items' content hash, skipped)."""
    n = skipped = 0
    item_rows, refs = [], []
    items_hash = hashlib.sha256()  # the test set's content: runs with equal hashes are paired item by item
    with open(path, "w", encoding="utf-8") as f:
        for batch, skip in batches:
            skipped += skip
            for rec in batch:
                f.write(json.dumps({"item": n, "row": rec["row"], "messages": rec["messages"]},
                                   ensure_ascii=False) + "\n")
                items_hash.update(json.dumps([rec["messages"], rec["reference"]], ensure_ascii=False,
                                             sort_keys=True).encode() + b"\n")
                item_rows.append(n)
                refs.append((rec["row"], rec["reference"]))
                n += 1
    table = pa.table({"eval_id": pa.array([eval_id] * n, pa.int32()), "item": pa.array(item_rows, pa.int32()),
                      "_row": pa.array([r for r, _ in refs], pa.int64()),
                      "reference": pa.array([t for _, t in refs], pa.string())})
    return table, items_hash.hexdigest(), skipped


def update_eval(store: Store, eval_id: int, **values) -> None:
    """Set columns of the run's record (status, pid, error...)."""
    cols = ", ".join(f"{k} = ?" for k in values)
    store.retry(lambda cur: cur.execute(f"UPDATE wb_evals SET {cols} WHERE eval_id = ?",
                                        [*values.values(), int(eval_id)]))


def finished_eval(store: Store, eval_id: int) -> EvalRun:
    """The run, when it has finished (scored); else a WorkbenchError that says what to do."""
    run = get_eval(store, eval_id)
    if run.status != "finished":
        raise WorkbenchError(f"evaluation {eval_id} is {run.status}, not finished; "
                             + ("wait for it to finish" if run.status in ("running", "created", "generated")
                                else f"resume it with `workbench eval --resume {eval_id}`"))
    return run


def version_of(store: Store, run: EvalRun) -> Version:
    """The dataset version a run answered."""
    return get_version(store, f"{run.dataset}@{run.version}")


# ---------------------------------------------------------------- outputs

def output_lines(data: bytes, n_items: int) -> tuple[list[int], list[str]]:
    """(items, outputs) of complete outputs.jsonl lines; torn or foreign lines are skipped."""
    items, outputs = [], []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            item, output = int(rec["item"]), rec["output"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a crash mid-write; the generator writes that item again on resume
        if 0 <= item < n_items and isinstance(output, str):
            items.append(item)
            outputs.append(output)
    return items, outputs


def ingest(store: Store, eval_id: int, *, from_start: bool = False) -> int:
    """New complete lines of outputs.jsonl into wb_eval_outputs; returns how many were new.

    Idempotent: keyed by (eval_id, item), a line read twice inserts nothing. The byte offset of the
    last complete line read is kept in wb_evals; from_start=True re-reads the whole file."""
    run = get_eval(store, eval_id)
    path = run.path / OUTPUTS_FILE
    if not path.exists():
        return 0
    size = path.stat().st_size
    start = 0 if from_start or size < run.ingested_bytes else run.ingested_bytes
    if size == start:
        return 0
    with open(path, "rb") as f:
        f.seek(start)
        chunk = f.read(size - start)
    end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
    if end == 0:
        return 0
    items, outputs = output_lines(chunk[:end], run.items)
    table = pa.table({"item": pa.array(items, pa.int32()), "output": pa.array(outputs, pa.string())})
    when = now()

    def write(cur) -> int:
        before = cur.execute("SELECT count(*) FROM wb_eval_outputs WHERE eval_id = ?", [run.eval_id]).fetchall()[0][0]
        cur.register("wb_new_outputs", table)
        cur.execute("INSERT INTO wb_eval_outputs SELECT ?, item, output, ? FROM wb_new_outputs "
                    "ON CONFLICT DO NOTHING", [run.eval_id, when])
        cur.unregister("wb_new_outputs")
        cur.execute("UPDATE wb_evals SET ingested_bytes = ? WHERE eval_id = ?", [start + end, run.eval_id])
        after = cur.execute("SELECT count(*) FROM wb_eval_outputs WHERE eval_id = ?", [run.eval_id]).fetchall()[0][0]
        return after - before

    return store.retry(write, key_races=True)  # ON CONFLICT DO NOTHING: a restart re-reads lines


def texts(store: Store, eval_id: int) -> tuple[list[int], list[str], list[str]]:
    """(items, outputs, references) of the generated items, in item order."""
    rows = store.cursor().execute(
        "SELECT i.item, o.output, i.reference FROM wb_eval_items i JOIN wb_eval_outputs o "
        "ON o.eval_id = i.eval_id AND o.item = i.item WHERE i.eval_id = ? ORDER BY i.item", [int(eval_id)]).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def references(store: Store, eval_id: int) -> dict[int, str]:
    """{test item: its reference answer} for every item of the run."""
    return dict(store.cursor().execute("SELECT item, reference FROM wb_eval_items WHERE eval_id = ?",
                                       [int(eval_id)]).fetchall())


def outputs(store: Store, item: int, eval_ids: list[int]) -> dict[int, str]:
    """The answers of these runs to one test item: {eval_id: output}."""
    return dict(store.cursor().execute(
        "SELECT eval_id, output FROM wb_eval_outputs WHERE item = ? AND eval_id IN (SELECT unnest(?::INTEGER[]))",
        [int(item), [int(e) for e in eval_ids]]).fetchall())


def reference(store: Store, eval_id: int, item: int) -> str:
    """The reference answer of one test item."""
    rows = store.cursor().execute("SELECT reference FROM wb_eval_items WHERE eval_id = ? AND item = ?",
                                  [int(eval_id), int(item)]).fetchall()
    if not rows:
        raise WorkbenchError(f"evaluation {eval_id} has no test item {item}")
    return rows[0][0]


def item_rows(store: Store, eval_id: int, items: list[int]) -> dict[int, int]:
    """{test item: its `_row` in the dataset version}."""
    return dict(store.cursor().execute(
        "SELECT item, _row FROM wb_eval_items WHERE eval_id = ? AND item IN (SELECT unnest(?::INTEGER[]))",
        [int(eval_id), [int(i) for i in items]]).fetchall())


def item_row(store: Store, eval_id: int, item: int) -> int:
    found = item_rows(store, eval_id, [item])
    if int(item) not in found:
        raise WorkbenchError(f"evaluation {eval_id} has no test item {item}")
    return found[int(item)]


def answered_by_all(store: Store, eval_ids: list[int]) -> list[int]:
    """Test items that every one of these runs has answered, in item order."""
    rows = store.cursor().execute(
        "SELECT item FROM wb_eval_outputs WHERE eval_id IN (SELECT unnest(?::INTEGER[])) GROUP BY item "
        "HAVING count(DISTINCT eval_id) = ? ORDER BY item", [list(eval_ids), len(set(eval_ids))]).fetchall()
    return [r[0] for r in rows]


# ---------------------------------------------------------------- scores

def save_scores(store: Store, run: EvalRun, items: list[int], per_item: dict, summary: dict,
                labels: list[str] | None = None) -> EvalRun:
    """Per-example scores ({metric: values in item order}) into wb_eval_scores, predicted labels into
    wb_eval_labels, corpus scores into the run's metrics; the run is then 'finished'."""
    long = pa.table({
        "item": pa.array([i for _ in per_item for i in items], pa.int32()),
        "metric": pa.array([name for name, values in per_item.items() for _ in values], pa.string()),
        "value": pa.array([float(x) for values in per_item.values() for x in values], pa.float64())})

    def write(cur):
        cur.execute("DELETE FROM wb_eval_scores WHERE eval_id = ?", [run.eval_id])
        cur.execute("DELETE FROM wb_eval_labels WHERE eval_id = ?", [run.eval_id])
        cur.register("wb_new_scores", long)
        cur.execute("INSERT INTO wb_eval_scores SELECT ?, item, metric, value FROM wb_new_scores", [run.eval_id])
        cur.unregister("wb_new_scores")
        if labels is not None:
            cur.register("wb_new_labels", pa.table({"item": pa.array(items, pa.int32()),
                                                    "predicted": pa.array(labels, pa.string())}))
            cur.execute("INSERT INTO wb_eval_labels SELECT ?, item, predicted FROM wb_new_labels", [run.eval_id])
            cur.unregister("wb_new_labels")
        cur.execute("UPDATE wb_evals SET metrics = ?, status = 'finished', pid = NULL, finished_at = ?, error = NULL "
                    "WHERE eval_id = ?", [json.dumps(summary), now(), run.eval_id])

    store.retry(write)
    return get_eval(store, run.eval_id)


def predicted_labels(store: Store, eval_id: int) -> tuple[list[str], list[str]]:
    """(references, predicted labels) of a scored classification run, in item order."""
    rows = store.cursor().execute(
        "SELECT i.reference, l.predicted FROM wb_eval_items i JOIN wb_eval_labels l "
        "ON l.eval_id = i.eval_id AND l.item = i.item WHERE i.eval_id = ? ORDER BY i.item", [int(eval_id)]).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def example_metrics(store: Store, eval_id: int) -> list[str]:
    """Per-example metrics stored for a run (sentence BLEU as 'bleu', ROUGE F, chrF, exact match...)."""
    rows = store.cursor().execute("SELECT DISTINCT metric FROM wb_eval_scores WHERE eval_id = ?",
                                  [int(eval_id)]).fetchall()
    order = {m: i for i, m in enumerate(("bleu", "rouge1", "rouge2", "rougeL", "rougeLsum", "chrf", "exact_match",
                                         "correct"))}
    return sorted((r[0] for r in rows), key=lambda m: (order.get(m, 99), m))


# ---------------------------------------------------------------- items joined with their records

def column_values(store: Store, run: EvalRun, version: Version, column: str) -> list:
    """The value of a column of the version for each generated item, in item order (what slices group by)."""
    rows = store.cursor().execute(
        f"SELECT CAST(v.{quote_ident(column)} AS VARCHAR) FROM wb_eval_items i "
        f"JOIN wb_eval_outputs o ON o.eval_id = i.eval_id AND o.item = i.item "
        f"LEFT JOIN {version.table_name} v ON v.{ROW_COLUMN} = i._row WHERE i.eval_id = ? ORDER BY i.item",
        [run.eval_id]).fetchall()
    return [r[0] for r in rows]


def paired_examples(store: Store, run_a: EvalRun, run_b: EvalRun, version: Version, metric: str, *,
                    losses_first: bool, limit: int, offset: int) -> list[dict]:
    """Both runs' answers and per-example scores side by side, sorted by score b - score a."""
    rows = store.cursor().execute(
        f"SELECT i.item, i._row, v.prompt, i.reference, oa.output, ob.output, sa.value, sb.value, "
        f"sb.value - sa.value AS diff "
        f"FROM wb_eval_items i "
        f"JOIN wb_eval_items ib ON ib.eval_id = ? AND ib.item = i.item "
        f"JOIN wb_eval_outputs oa ON oa.eval_id = i.eval_id AND oa.item = i.item "
        f"JOIN wb_eval_outputs ob ON ob.eval_id = ib.eval_id AND ob.item = i.item "
        f"JOIN wb_eval_scores sa ON sa.eval_id = i.eval_id AND sa.item = i.item AND sa.metric = ? "
        f"JOIN wb_eval_scores sb ON sb.eval_id = ib.eval_id AND sb.item = i.item AND sb.metric = ? "
        f"LEFT JOIN {version.table_name} v ON v.{ROW_COLUMN} = i._row "
        f"WHERE i.eval_id = ? ORDER BY diff {'ASC' if losses_first else 'DESC'}, i.item LIMIT ? OFFSET ?",
        [run_b.eval_id, metric, metric, run_a.eval_id, int(limit), int(offset)]).fetchall()
    keys = ("item", "row", "prompt", "reference", "output_a", "output_b", "score_a", "score_b", "diff")
    return [dict(zip(keys, r)) for r in rows]


def scored_examples(store: Store, run: EvalRun, version: Version, metric: str, *, worst_first: bool, limit: int,
                    offset: int, column: str | None = None, value: str | None = None) -> list[dict]:
    """One run's examples with their per-example score (optionally those whose column has this value)."""
    where, params = "", []
    if column is not None:
        where = f"AND CAST(v.{quote_ident(column)} AS VARCHAR) IS NOT DISTINCT FROM ?"
        params = [value]
    rows = store.cursor().execute(
        f"SELECT i.item, i._row, v.prompt, i.reference, o.output, l.predicted, s.value "
        f"FROM wb_eval_items i JOIN wb_eval_outputs o ON o.eval_id = i.eval_id AND o.item = i.item "
        f"JOIN wb_eval_scores s ON s.eval_id = i.eval_id AND s.item = i.item AND s.metric = ? "
        f"LEFT JOIN wb_eval_labels l ON l.eval_id = i.eval_id AND l.item = i.item "
        f"LEFT JOIN {version.table_name} v ON v.{ROW_COLUMN} = i._row "
        f"WHERE i.eval_id = ? {where} ORDER BY s.value {'ASC' if worst_first else 'DESC'}, i.item LIMIT ? OFFSET ?",
        [metric, run.eval_id, *params, int(limit), int(offset)]).fetchall()
    keys = ("item", "row", "prompt", "reference", "output", "predicted", "score")
    return [dict(zip(keys, r)) for r in rows]
