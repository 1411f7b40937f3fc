"""Evaluation runs: generate answers on a test split, score them, slice, compare, flag.

An evaluation run ("eval") is one model (a base, a base + adapter, or a finished training run) on
one dataset version's test split with saved generation settings, so it can be repeated.

How a run flows, and why nothing generated is lost:

1. `create_eval` writes the run folder `runs/eval-<id>/`: `items.jsonl` (one line per test
   record: its position `item`, its `_row` in the version, and the chat messages up to the answer)
   and `eval.json` (model, adapter, generation settings). The reference answers go into
   `wb_eval_items` in the store.
2. `launch` starts the generator (`trainers.eval_generate`) as a subprocess. It never opens the
   store: it appends `{"item", "output"}` lines to `outputs.jsonl`, flushed after every batch, and
   writes `done.json` at the end. Started again, it skips the items already in the file.
3. `ingest` reads new complete lines of `outputs.jsonl` into `wb_eval_outputs`, keyed by
   (eval_id, item) with ON CONFLICT DO NOTHING, so reading a line twice (a restart re-reads the
   file) changes nothing. The app calls it while the bar moves; the CLI calls it in its wait loop.
4. `score` runs when every item has an output. Generation: per-item statistics from
   `metrics.corpus` (sacreBLEU BLEU/chrF statistics, rouge-score ROUGE, exact match), kept in the
   run folder (`item_stats.npz`) for slices and the bootstrap; corpus scores with the keys of
   `workbench score`. Classification: the label parsed from each answer and scikit-learn scores
   (`metrics.classification`). Per-example scores go to `wb_eval_scores`, corpus scores to
   `wb_evals.metrics`.

Then: `slices` (every metric per value of a column), `leaderboard` (runs on the same split),
`compare` (paired bootstrap on the difference of each metric), `example_diff` (per-example
gains and losses), `neighbours` (training records most like a text: TF-IDF cosine) and
`flag_records` / `flags` (an append-only relabelling queue).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from workbench.core.errors import WorkbenchError
from workbench.core.formats import canonical_to_messages
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, get_version, version_columns

Progress = Callable[[float, str], None]


STATUSES = ("created", "running", "stopped", "failed", "generated", "finished")
ALL_SPLITS = "all"
ITEMS_FILE, OUTPUTS_FILE, CONFIG_FILE, DONE_FILE, LOG_FILE = (
    "items.jsonl", "outputs.jsonl", "eval.json", "done.json", "generate.log")
GENERATOR_MODULE = "trainers.eval_generate"



def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _user_name(user) -> str:
    return getattr(user, "name", None) or (user if isinstance(user, str) else None) or "local"


def _require(user, action: str = "evaluate"):
    """Annotators may not run evaluations (workbench.core.auth); user=None is the local owner."""
    if user is None or isinstance(user, str):
        return user
    from workbench.core import auth

    return auth.require_role(user, action)


# ---------------------------------------------------------------- settings and model

@dataclass
class GenerationSettings:
    """How answers are generated; saved with the run so it can be repeated."""

    max_new_tokens: int = 64
    """Most tokens generated per answer."""
    temperature: float = 0.0
    """0 is greedy decoding (the default, deterministic); above 0 samples with this temperature."""
    top_p: float = 1.0
    """Sampling only: keep the smallest set of tokens whose probability adds up to top_p."""
    batch_size: int = 16
    """Prompts generated together; lower it when memory runs out."""
    seed: int = 0
    """Seed for sampling (greedy decoding does not use it)."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 8192:
            raise WorkbenchError(f"max_new_tokens: {self.max_new_tokens!r}; expected a whole number from 1 to 8192")
        if not 0 <= float(self.temperature) <= 10:
            raise WorkbenchError(f"temperature: {self.temperature!r}; expected 0 (greedy) up to 10")
        if not 0 < float(self.top_p) <= 1:
            raise WorkbenchError(f"top_p: {self.top_p!r}; expected a number above 0 and at most 1")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 4096:
            raise WorkbenchError(f"batch_size: {self.batch_size!r}; expected a whole number from 1 to 4096")
        self.temperature, self.top_p = float(self.temperature), float(self.top_p)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GenerationSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise WorkbenchError(f"unknown generation setting(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
        return cls(**values)


@dataclass(frozen=True)
class ModelSpec:
    """The model an evaluation runs: a base model folder, an optional adapter, the run they came from."""

    base_model: str
    adapter: str | None = None
    run_id: str | None = None
    label: str = ""


def resolve_model(store: Store, *, run_id: str | None = None, base_model: str | None = None,
                  adapter: str | None = None) -> ModelSpec:
    """A model from a finished training run (its base and adapter), or a base model with an optional adapter.

    base_model: 'tiny' (the project's cached tiny base), a local folder, or a Hugging Face id in the cache.
    """
    if run_id:
        if base_model or adapter:
            raise WorkbenchError("give either --run or --base-model/--adapter, not both")
        return _model_of_run(store, run_id)
    if not base_model:
        raise WorkbenchError("say which model to evaluate: --run RUN_ID, or --base-model tiny|PATH|HF_ID "
                             "[--adapter DIR]")
    base = _resolve_base(store, base_model)
    adapter_path = None
    if adapter:
        adapter_path = Path(adapter).expanduser().resolve()
        if not (adapter_path / "adapter_config.json").exists():
            raise WorkbenchError(f"{adapter_path} is not an adapter folder (no adapter_config.json); "
                                 "pass the `adapter` folder of a finished training run")
        adapter_path = str(adapter_path)
    label = base_model if not adapter_path else f"{base_model} + {Path(adapter_path).parent.name}/adapter"
    return ModelSpec(base, adapter_path, None, label)


def _resolve_base(store: Store, base_model: str) -> str:
    if base_model == "tiny":
        folder = store.project.models_dir / "tiny"
        if not (folder / "config.json").exists():
            raise WorkbenchError(f"the tiny base is not built yet ({folder}); the first training run builds it: "
                                 "`workbench train --dataset NAME`")
        return str(folder)
    path = Path(base_model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise WorkbenchError(f"{path} is not a model folder (no config.json)")
        return str(path.resolve())
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(base_model, "config.json")
    except ValueError:  # not even a well-formed model id (huggingface_hub's HFValidationError)
        cached = None
    if not isinstance(cached, str):  # the generator never downloads
        raise WorkbenchError(f"base model {base_model!r} is neither a model folder nor in the local Hugging Face "
                             f"cache; give a folder with config.json and weights, download it first (e.g. "
                             f"`hf download {base_model}`), or use 'tiny'")
    return base_model


def _model_of_run(store: Store, run_id: str) -> ModelSpec:
    """Base and adapter of a finished training run (workbench.models.runs: its status, manifest and adapter)."""
    from workbench.models import runs

    details = runs.run_details(store, run_id)
    adapter = details.get("adapter") or str(Path(details["run_dir"]) / "adapter")
    if details["status"] not in ("completed", "stopped early", "cancelled") or \
            not (Path(adapter) / "adapter_config.json").exists():
        raise WorkbenchError(f"run {run_id} has no finished adapter (status {details['status']!r}); evaluate a "
                             "completed run (see `workbench runs`), or wait for this one to finish")
    base = ((details.get("manifest") or {}).get("base_model") or {}).get("path")
    if not base:
        config = details.get("config") or {}
        name = config.get("base_model", "tiny")
        if name == "tiny":
            base = config.get("tiny_dir") or _resolve_base(store, "tiny")
        else:
            base = _resolve_base(store, name)
    return ModelSpec(str(base), str(adapter), str(run_id), f"run {run_id}")


# ---------------------------------------------------------------- test items

def split_values(store: Store, version: Version) -> list[str] | None:
    """The values of the version's `split` column (None when it has none)."""
    if "split" not in [c for c, _ in version_columns(store, version)]:
        return None
    rows = store.cursor().execute(
        f"SELECT DISTINCT CAST(split AS VARCHAR) FROM {version.table_name} WHERE split IS NOT NULL ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def _split_where(store: Store, version: Version, split: str) -> tuple[str, list]:
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


def _task(store: Store, version: Version) -> str:
    return "classification" if version.format == "classification" else "generation"


def _items(store: Store, version: Version, split: str, batch_rows: int = 10_000):
    """(item rows, skipped) per batch: each test record's prompt messages and its reference answer."""
    where, params = _split_where(store, version, split)
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


# ---------------------------------------------------------------- creating and running

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
    """Write the run folder (items, config) and the references; nothing is generated yet (see `launch`)."""
    user = _require(user)
    if isinstance(version, str):
        version = get_version(store, version)
    settings = settings if isinstance(settings, GenerationSettings) else GenerationSettings.from_dict(settings or {})
    task = _task(store, version)
    eval_id = store.cursor().execute("SELECT nextval('wb_eval_seq')").fetchall()[0][0]
    folder = store.project.runs_dir / f"eval-{eval_id}"
    folder.mkdir(parents=True, exist_ok=False)
    n = skipped = 0
    item_rows, refs = [], []
    items_hash = hashlib.sha256()  # the test set's content: runs with equal hashes are paired item by item
    with open(folder / ITEMS_FILE, "w", encoding="utf-8") as f:
        for batch, skip in _items(store, version, split):
            skipped += skip
            for rec in batch:
                f.write(json.dumps({"item": n, "row": rec["row"], "messages": rec["messages"]},
                                   ensure_ascii=False) + "\n")
                items_hash.update(json.dumps([rec["messages"], rec["reference"]], ensure_ascii=False,
                                             sort_keys=True).encode() + b"\n")
                item_rows.append(n)
                refs.append((rec["row"], rec["reference"]))
                n += 1
    if n == 0:
        raise WorkbenchError(f"{version.ref} has no records with a reference answer in split {split!r}")
    config = {"eval_id": eval_id, "base_model": model.base_model, "adapter": model.adapter,
              "items": str(folder / ITEMS_FILE), "outputs": str(folder / OUTPUTS_FILE),
              "done": str(folder / DONE_FILE), "settings": settings.to_dict(), "task": task,
              "dataset": version.ref, "split": split, "run_id": model.run_id}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    table = pa.table({"eval_id": pa.array([eval_id] * n, pa.int32()), "item": pa.array(item_rows, pa.int32()),
                      "_row": pa.array([r for r, _ in refs], pa.int64()),
                      "reference": pa.array([t for _, t in refs], pa.string())})

    def insert(cur):
        cur.execute(
            "INSERT INTO wb_evals (eval_id, version_id, dataset, version, split, task, run_id, base_model, adapter,"
            " model_label, settings, folder, items, items_hash, skipped, status, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'created', ?, ?)",
            [eval_id, version.version_id, version.dataset, version.number, split, task, model.run_id,
             model.base_model, model.adapter, model.label or model.base_model, json.dumps(settings.to_dict()),
             str(folder), n, items_hash.hexdigest(), skipped, _now(), _user_name(user)])
        cur.register("wb_new_items", table)
        cur.execute("INSERT INTO wb_eval_items SELECT eval_id, item, _row, reference FROM wb_new_items")
        cur.unregister("wb_new_items")

    store.retry(insert)
    return get_eval(store, eval_id)


def _set(store: Store, eval_id: int, **values) -> None:
    cols = ", ".join(f"{k} = ?" for k in values)
    store.retry(lambda cur: cur.execute(f"UPDATE wb_evals SET {cols} WHERE eval_id = ?",
                                        [*values.values(), int(eval_id)]))


def generator_command(run: EvalRun) -> list[str]:
    return [sys.executable, "-m", GENERATOR_MODULE, str(Path(run.folder) / CONFIG_FILE)]


def launch(store: Store, eval_id: int, *, user=None) -> EvalRun:
    """Start (or resume) generation in a subprocess; returns at once. Items already generated are skipped."""
    _require(user)
    run = get_eval(store, eval_id)
    if run.status == "running" and _alive(run.pid):
        raise WorkbenchError(f"evaluation {eval_id} is already generating (process {run.pid})")
    if run.status == "finished":
        raise WorkbenchError(f"evaluation {eval_id} has finished; start a new one to generate again")
    (run.path / DONE_FILE).unlink(missing_ok=True)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # so `-m trainers...` resolves from any working directory
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with open(run.path / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(generator_command(run), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=run.folder, env=env, start_new_session=True)
    _PROCS[int(eval_id)] = proc
    _set(store, eval_id, status="running", pid=proc.pid, error=None)
    return get_eval(store, eval_id)


_PROCS: dict[int, subprocess.Popen] = {}  # generators this process started (to reap them and read exit codes)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _process_running(run: EvalRun) -> bool:
    proc = _PROCS.get(run.eval_id)
    if proc is not None:
        return proc.poll() is None
    return _alive(run.pid)


def stop(store: Store, eval_id: int, *, user=None) -> EvalRun:
    """Stop generating; what was generated stays (resume with `launch`)."""
    _require(user)
    run = get_eval(store, eval_id)
    if run.status == "running" and _process_running(run):
        try:
            os.killpg(run.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        proc = _PROCS.pop(run.eval_id, None)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                proc.wait()
    ingest(store, eval_id)
    _set(store, eval_id, status="stopped", pid=None)
    return get_eval(store, eval_id)


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
    items, outputs = [], []
    for line in chunk[:end].splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            item, output = int(rec["item"]), rec["output"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a crash mid-write; the generator writes that item again on resume
        if 0 <= item < run.items and isinstance(output, str):
            items.append(item)
            outputs.append(output)
    table = pa.table({"item": pa.array(items, pa.int32()), "output": pa.array(outputs, pa.string())})
    now = _now()

    def write(cur) -> int:
        before = cur.execute("SELECT count(*) FROM wb_eval_outputs WHERE eval_id = ?", [run.eval_id]).fetchall()[0][0]
        cur.register("wb_new_outputs", table)
        cur.execute("INSERT INTO wb_eval_outputs SELECT ?, item, output, ? FROM wb_new_outputs "
                    "ON CONFLICT DO NOTHING", [run.eval_id, now])
        cur.unregister("wb_new_outputs")
        cur.execute("UPDATE wb_evals SET ingested_bytes = ? WHERE eval_id = ?", [start + end, run.eval_id])
        after = cur.execute("SELECT count(*) FROM wb_eval_outputs WHERE eval_id = ?", [run.eval_id]).fetchall()[0][0]
        return after - before

    return store.retry(write)


def refresh(store: Store, eval_id: int) -> EvalRun:
    """Ingest new outputs and move the run's status on: generated -> scored, or stopped/failed.

    Safe to call as often as a page likes; it is how a page or the CLI follows a run."""
    run = get_eval(store, eval_id)
    if run.status in ("finished", "failed"):
        return run
    ingest(store, eval_id)
    run = get_eval(store, eval_id)
    done_marker = (run.path / DONE_FILE).exists()
    if run.generated >= run.items:
        if run.status != "generated":
            _set(store, eval_id, status="generated", pid=None)
        return score(store, eval_id)
    if run.status == "running" and not _process_running(run):
        ingest(store, eval_id)  # the last batch may have landed after the check above
        run = get_eval(store, eval_id)
        if run.generated >= run.items:
            return refresh(store, eval_id)
        proc = _PROCS.pop(run.eval_id, None)
        code = proc.returncode if proc is not None else None
        error = _log_tail(run) if (code not in (0, None) or not done_marker) else None
        _set(store, eval_id, status="failed" if code not in (0, None, -signal.SIGTERM) else "stopped", pid=None,
             error=error)
        run = get_eval(store, eval_id)
    return run


def _log_tail(run: EvalRun, lines: int = 6) -> str | None:
    try:
        text = (run.path / LOG_FILE).read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return None
    interesting = [ln for ln in text if ln.strip()][-lines:]
    return "\n".join(interesting) or None


def wait(store: Store, eval_id: int, *, progress: Progress | None = None, poll_s: float = 0.5) -> EvalRun:
    """Follow a launched run until it ends (the CLI's loop); Ctrl-C stops generation and keeps the outputs."""
    try:
        while True:
            run = refresh(store, eval_id)
            if progress:
                progress(min(run.fraction, 0.999) if run.status == "running" else run.fraction,
                         f"{run.generated:,}/{run.items:,} answers")
            if run.status not in ("running", "generated", "created"):
                return run
            time.sleep(poll_s)
    except KeyboardInterrupt:
        stop(store, eval_id)
        raise


def run_eval(store: Store, version: Version | str, *, model: ModelSpec, split: str = "test",
             settings: GenerationSettings | dict | None = None, user=None,
             progress: Progress | None = None) -> EvalRun:
    """Create, generate (subprocess) and score in one blocking call: what `workbench eval` does."""
    run = create_eval(store, version, model=model, split=split, settings=settings, user=user)
    launch(store, run.eval_id, user=user)
    return wait(store, run.eval_id, progress=progress)


def resume(store: Store, eval_id: int, *, user=None, progress: Progress | None = None) -> EvalRun:
    """Continue a stopped or crashed run: re-ingest the whole file, generate only what is missing."""
    ingest(store, eval_id, from_start=True)
    run = refresh(store, eval_id)
    if run.status == "finished":
        return run
    launch(store, eval_id, user=user)
    return wait(store, eval_id, progress=progress)


# ---------------------------------------------------------------- training neighbours

NEIGHBOUR_INDEX_CACHE = 2  # TF-IDF indexes kept per process (one per version and split)
_INDEXES: dict[tuple, tuple] = {}


def _training_where(store: Store, version: Version, split: str | None) -> tuple[str, list, str]:
    """The training records of a version: split 'train' when it has one, else every record."""
    values = split_values(store, version)
    if split is None:
        split = "train" if values and "train" in values else ALL_SPLITS
    if split == ALL_SPLITS:
        return "", [], ALL_SPLITS
    where, params = _split_where(store, version, split)
    return where, params, split


def _neighbour_index(store: Store, version: Version, split: str | None, progress: Progress | None = None):
    """(rows, categories, vectorizer, matrix) of the training records' prompts, built once per process."""
    where, params, split = _training_where(store, version, split)
    key = (str(store.project.root), version.version_id, version.content_hash, split)
    if key in _INDEXES:
        return _INDEXES[key]
    from sklearn.feature_extraction.text import TfidfVectorizer

    from workbench.data.browse import category_column

    cat = category_column(store, version)
    cat_sql = f"CAST({quote_ident(cat)} AS VARCHAR)" if cat else "NULL"
    if progress:
        progress(0.1, "reading the training records")
    table = store.cursor().sql(
        f"SELECT {ROW_COLUMN} AS row, coalesce(prompt, '') AS prompt, {cat_sql} AS category "
        f"FROM {version.table_name} {where} ORDER BY {ROW_COLUMN}", params=params).to_arrow_table()
    if table.num_rows == 0:
        raise WorkbenchError(f"{version.ref} has no training records in split {split!r}")
    if progress:
        progress(0.4, f"indexing {table.num_rows:,} training records")
    vectorizer = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
    try:
        matrix = vectorizer.fit_transform(table.column("prompt").to_pylist())
    except ValueError:  # every text empty or made only of stop characters
        raise WorkbenchError(f"the training records of {version.ref} have no words to compare") from None
    index = (table.column("row").to_numpy(), table.column("category").to_pylist(), vectorizer, matrix, split)
    while len(_INDEXES) >= NEIGHBOUR_INDEX_CACHE:
        _INDEXES.pop(next(iter(_INDEXES)))
    _INDEXES[key] = index
    if progress:
        progress(1.0, "index ready")
    return index


def neighbours(store: Store, version: Version | str, text: str, *, k: int = 10, split: str | None = None,
               category: str | None = None, only_category: bool = False,
               progress: Progress | None = None) -> list[dict]:
    """The k training records whose prompt is most like `text`, most similar first.

    Similarity: cosine of TF-IDF vectors (scikit-learn `TfidfVectorizer`: lower-cased word 1- and
    2-grams, sublinear term frequency, l2-normalised rows) over the prompts of the version's training
    split ('train' when the version has a split column, else every record). `category` is the bad
    example's category: each result says whether it shares it, and with only_category=True only
    records of that category are ranked (its same-category neighbours).
    Each result: {row (0-based _row), similarity, category, same_category}."""
    if isinstance(version, str):
        version = get_version(store, version)
    rows, cats, vectorizer, matrix, _ = _neighbour_index(store, version, split, progress)
    sims = (matrix @ vectorizer.transform([text or ""]).T).toarray().ravel()
    if category is not None and only_category:
        sims = np.where(np.array([c == category for c in cats], dtype=bool), sims, -1.0)
    k = max(0, min(int(k), int((sims >= 0).sum())))
    if k == 0:
        return []
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.lexsort((rows[top], -sims[top]))]  # most similar first, ties by record order
    return [{"row": int(rows[i]), "similarity": float(sims[i]), "category": cats[i],
             "same_category": None if category is None else cats[i] == category} for i in top]


def records(store: Store, version: Version, rows: list[int]) -> list[dict]:
    """The records at these 0-based _row positions (in the order given), with every column."""
    if not rows:
        return []
    table = store.cursor().sql(f"SELECT * FROM {version.table_name} WHERE {ROW_COLUMN} IN "
                               f"(SELECT unnest(?::BIGINT[]))", params=[[int(r) for r in rows]]).to_arrow_table()
    by_row = {r[ROW_COLUMN]: r for r in table.to_pylist()}
    return [by_row[r] for r in rows if r in by_row]


# ---------------------------------------------------------------- flags for relabelling

def flag_records(store: Store, version: Version | str, rows, reason: str, user=None, *,
                 eval_id: int | None = None) -> int:
    """Flag records of a version for relabelling (append-only: who, when, why); returns how many rows.

    The Label queue can pick these up with `flags(store, version)`."""
    if isinstance(version, str):
        version = get_version(store, version)
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
    who, now = _user_name(user), _now()
    store.retry(lambda cur: cur.executemany(
        "INSERT INTO wb_flags (version_id, _row, reason, who, created_at, eval_id) VALUES (?, ?, ?, ?, ?, ?)",
        [[version.version_id, r, reason, who, now, eval_id] for r in rows]))
    return len(rows)


def flags(store: Store, version: Version | str) -> list[dict]:
    """Every flag on a version's records, oldest first: {row, reason, who, created_at, eval_id}."""
    if isinstance(version, str):
        version = get_version(store, version)
    rows = store.cursor().execute(
        "SELECT _row, reason, who, created_at, eval_id FROM wb_flags WHERE version_id = ? "
        "ORDER BY created_at, _row", [version.version_id]).fetchall()
    return [{"row": r[0], "reason": r[1], "who": r[2], "created_at": r[3], "eval_id": r[4]} for r in rows]


# ---------------------------------------------------------------- scores

STATS_FILE = "item_stats.npz"  # per-item metric statistics: rebuildable from the stored texts


def _texts(store: Store, eval_id: int) -> tuple[list[int], list[str], list[str]]:
    """(items, outputs, references) of the generated items, in item order."""
    rows = store.cursor().execute(
        "SELECT i.item, o.output, i.reference FROM wb_eval_items i JOIN wb_eval_outputs o "
        "ON o.eval_id = i.eval_id AND o.item = i.item WHERE i.eval_id = ? ORDER BY i.item", [int(eval_id)]).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _save_stats(path: Path, stats) -> None:
    arrays = {"n": np.array([stats.n])}
    if stats.bleu is not None:
        arrays["bleu"] = stats.bleu
    if stats.chrf is not None:
        arrays["chrf"] = stats.chrf
    if stats.exact_match is not None:
        arrays["exact_match"] = stats.exact_match
    for t, arr in stats.rouge.items():
        arrays[f"rouge:{t}"] = arr
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}.partial.npz")  # writers never share
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _load_stats(path: Path):
    from metrics.corpus import ItemStats

    with np.load(path) as z:
        return ItemStats(n=int(z["n"][0]), bleu=z["bleu"] if "bleu" in z else None,
                         chrf=z["chrf"] if "chrf" in z else None,
                         exact_match=z["exact_match"] if "exact_match" in z else None,
                         rouge={k.split(":", 1)[1]: z[k] for k in z.files if k.startswith("rouge:")})


def item_stats(store: Store, eval_id: int):
    """The run's per-item metric statistics (metrics.corpus.ItemStats), from the run folder or recomputed."""
    from metrics.corpus import item_stats as compute

    run = get_eval(store, eval_id)
    path = run.path / STATS_FILE
    if path.exists():
        stats = _load_stats(path)
        if stats.n == run.generated:
            return stats
    _, outputs, refs = _texts(store, eval_id)
    stats = compute(outputs, refs)
    if run.path.exists():
        _save_stats(path, stats)
    return stats


def score(store: Store, eval_id: int, *, progress: Progress | None = None) -> EvalRun:
    """Score a run whose answers are all in: corpus metrics into wb_evals.metrics, per-example scores
    into wb_eval_scores (and predicted labels into wb_eval_labels for classification)."""
    run = get_eval(store, eval_id)
    items, outputs, refs = _texts(store, eval_id)
    if len(items) < run.items:
        raise WorkbenchError(f"evaluation {eval_id} has {len(items):,} of {run.items:,} answers; resume it with "
                             f"`workbench eval --resume {eval_id}` before scoring")
    labels = None
    if run.task == "classification":
        summary, per_item, labels = _score_classification(store, run, outputs, refs)
    else:
        summary, per_item = _score_generation(run, outputs, refs, progress)
    summary["n_items"] = len(items)
    long = pa.table({
        "item": pa.array([i for name in per_item for i in items], pa.int32()),
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
                    "WHERE eval_id = ?", [json.dumps(summary), _now(), run.eval_id])

    store.retry(write)
    return get_eval(store, eval_id)


def _score_generation(run: EvalRun, outputs: list[str], refs: list[str], progress) -> tuple[dict, dict]:
    """Corpus scores with the keys and numbers of `workbench score` (workbench.models.scoring.score_texts; a test
    holds them equal), from per-item statistics computed once and kept in the run folder for slices,
    per-example scores and the bootstrap."""
    from metrics import bleu as mbleu
    from metrics.corpus import corpus_scores, item_scores
    from metrics.corpus import item_stats as compute
    from workbench.models.scoring import DEFAULT_METRICS, ROUGE_NOTE

    stats = compute(outputs, refs, progress=progress)
    _save_stats(run.path / STATS_FILE, stats)
    summary: dict = {"metrics": list(DEFAULT_METRICS), **corpus_scores(stats),
                     "signature": mbleu.BLEU_SIGNATURE, "chrf_signature": mbleu.CHRF_SIGNATURE,
                     "length_tokenization": mbleu.LENGTH_RATIO_TOKENIZATION, "rouge_aggregate": ROUGE_NOTE,
                     "rouge": {t: dict(zip(("precision", "recall", "fmeasure"), map(float, arr.mean(axis=0))))
                               for t, arr in stats.rouge.items()}}
    parts = mbleu.bleu_from_stats(stats.bleu.sum(axis=0))
    summary.update(bleu_precisions=parts["precisions"], bleu_bp=parts["bp"], sys_len=parts["sys_len"],
                   ref_len=parts["ref_len"])
    return summary, item_scores(stats)


def label_set(store: Store, run: EvalRun) -> list[str]:
    """Every label of the run's dataset version (all splits): what a generated answer is parsed against."""
    version = _version_of(store, run)
    col = quote_ident(version.label_column)
    rows = store.cursor().execute(f"SELECT DISTINCT CAST({col} AS VARCHAR) AS label FROM {version.table_name} "
                                  f"WHERE {col} IS NOT NULL ORDER BY label").fetchall()
    return [r[0] for r in rows]


def _predicted(store: Store, run: EvalRun, outputs: list[str]) -> tuple[list[str], list[str]]:
    from metrics.classification import LabelParser

    labels = label_set(store, run)
    parse = LabelParser(labels)
    return [parse(o) for o in outputs], labels


def _score_classification(store: Store, run: EvalRun, outputs: list[str], refs: list[str]):
    """Labels parsed from the answers (metrics.classification), then accuracy, macro/micro P/R/F1 and
    the confusion matrix (scikit-learn); per example: 1.0 when the parsed label is the reference."""
    from metrics.classification import classification_scores

    predicted, labels = _predicted(store, run, outputs)
    summary = classification_scores(refs, predicted, labels=labels)
    summary.pop("n", None)
    correct = [1.0 if p == r else 0.0 for p, r in zip(predicted, refs)]
    return summary, {"correct": correct}, predicted


def _labels(store: Store, eval_id: int) -> tuple[list[str], list[str]]:
    """(references, predicted labels) of a scored classification run, in item order."""
    rows = store.cursor().execute(
        "SELECT i.reference, l.predicted FROM wb_eval_items i JOIN wb_eval_labels l "
        "ON l.eval_id = i.eval_id AND l.item = i.item WHERE i.eval_id = ? ORDER BY i.item", [int(eval_id)]).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def _classification_by_group(store: Store, run: EvalRun, groups: list) -> dict:
    """Classification scores per group; macro averages run over the labels present in the group."""
    from metrics.classification import classification_scores

    refs, predicted = _labels(store, run.eval_id)
    index: dict = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    out = {}
    for value, idx in index.items():
        scores = classification_scores([refs[i] for i in idx], [predicted[i] for i in idx])
        out[value] = {"n": len(idx), **{m: scores[m] for m in CLASS_METRICS}, "unparsed": scores["unparsed"]}
    return out


def confusion(store: Store, eval_id: int) -> list[dict]:
    """The confusion matrix of a classification run as cells {reference, predicted, count} (non-zero only)."""
    run = get_eval(store, eval_id)
    matrix = (run.metrics or {}).get("confusion_matrix")
    if not matrix:
        return []
    return [{"reference": ref, "predicted": col, "count": n}
            for ref, counts in zip(matrix["rows"], matrix["counts"])
            for col, n in zip(matrix["columns"], counts) if n]


def _compare_classification(store: Store, run_a: EvalRun, run_b: EvalRun, *, n_resamples: int, seed: int,
                            confidence: float, names: tuple[str, str]) -> dict:
    """Paired bootstrap of accuracy (the mean of per-item correctness, metrics.significance).

    Macro F1 joins when metrics.classification offers resampled scores (`resampled_scores(y_true,
    y_pred, counts, labels)`): scikit-learn per resample takes minutes for 1,000 resamples of 3,000 items."""
    from metrics import classification, significance

    refs, pred_a = _labels(store, run_a.eval_id)
    _, pred_b = _labels(store, run_b.eval_id)
    correct_a = [1.0 if p == r else 0.0 for p, r in zip(pred_a, refs)]
    correct_b = [1.0 if p == r else 0.0 for p, r in zip(pred_b, refs)]
    out = {"accuracy": significance.paired_bootstrap_values(correct_a, correct_b, metric="accuracy",
                                                            n_resamples=n_resamples, seed=seed,
                                                            confidence=confidence, names=names)}
    resampled = getattr(classification, "resampled_scores", None)
    if resampled is not None:
        labels = label_set(store, run_a)
        diffs = significance.bootstrap_differences(lambda c: resampled(refs, pred_a, c, labels),
                                                   lambda c: resampled(refs, pred_b, c, labels), len(refs),
                                                   n_resamples=n_resamples, seed=seed)
        for metric in ("macro_f1",):
            if metric in diffs:
                out[metric] = significance.summarize(metric, run_a.metrics[metric], run_b.metrics[metric],
                                                     diffs[metric], n_items=len(refs), seed=seed,
                                                     confidence=confidence, names=names)
    return out


# ---------------------------------------------------------------- results, slices, leaderboard

TEXT_METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "rougeLsum", "chrf", "exact_match", "length_ratio")
CLASS_METRICS = ("accuracy", "macro_f1", "micro_f1", "macro_precision", "macro_recall", "micro_precision",
                 "micro_recall")


def primary_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "bleu"


def _finished(store: Store, eval_id: int) -> EvalRun:
    run = get_eval(store, eval_id)
    if run.status != "finished":
        raise WorkbenchError(f"evaluation {eval_id} is {run.status}, not finished; "
                             + ("wait for it to finish" if run.status in ("running", "created", "generated")
                                else f"resume it with `workbench eval --resume {eval_id}`"))
    return run


def _version_of(store: Store, run: EvalRun) -> Version:
    return get_version(store, f"{run.dataset}@{run.version}")


def slice_columns(store: Store, eval_id: int) -> list[str]:
    """Columns of the run's dataset version that slices can group by (every column but the texts)."""
    from workbench.data.browse import category_column
    from workbench.core.formats import CANONICAL

    run = get_eval(store, eval_id)
    version = _version_of(store, run)
    names = [c for c, _ in version_columns(store, version) if c not in CANONICAL]
    first = category_column(store, version)
    return sorted(names, key=lambda c: (c != first, c == "split", c))


def _group_values(store: Store, run: EvalRun, column: str) -> list:
    version = _version_of(store, run)
    if column not in [c for c, _ in version_columns(store, version)]:
        raise WorkbenchError(f"{version.ref} has no column {column!r}; slice by one of "
                             f"{', '.join(slice_columns(store, run.eval_id))}")
    rows = store.cursor().execute(
        f"SELECT CAST(v.{quote_ident(column)} AS VARCHAR) FROM wb_eval_items i "
        f"JOIN wb_eval_outputs o ON o.eval_id = i.eval_id AND o.item = i.item "
        f"LEFT JOIN {version.table_name} v ON v.{ROW_COLUMN} = i._row WHERE i.eval_id = ? ORDER BY i.item",
        [run.eval_id]).fetchall()
    return [r[0] for r in rows]


def slices(store: Store, eval_id: int, column: str) -> list[dict]:
    """Every metric per value of a column (a category, a channel, the split...): [{value, n, metric...}],
    largest groups first. Corpus metrics are recomputed on each group's own items."""
    run = _finished(store, eval_id)
    groups = _group_values(store, run, column)
    if run.task == "classification":
        per_group = _classification_by_group(store, run, groups)
    else:
        from metrics.corpus import scores_by_group

        per_group = scores_by_group(item_stats(store, eval_id), groups)
    out = [{"value": value, **scores} for value, scores in per_group.items()]
    return sorted(out, key=lambda r: (-r["n"], str(r["value"])))


def leaderboard(store: Store, eval_id: int | None = None, *, items_hash: str | None = None) -> list[dict]:
    """Finished runs on the same test items (same content, whatever version it came from), best first."""
    if eval_id is not None:
        items_hash = get_eval(store, eval_id).items_hash
    runs = [r for r in list_evals(store)
            if r.status == "finished" and (items_hash is None or r.items_hash == items_hash)]
    out = []
    for r in runs:
        key = primary_metric(r.task)
        row = {"eval_id": r.eval_id, "model": r.model_label, "run_id": r.run_id, "dataset": r.ref, "split": r.split,
               "items": r.items, "decoding": "greedy" if not r.settings.get("temperature") else
               f"T={r.settings['temperature']}, top-p={r.settings.get('top_p', 1.0)}",
               "max_new_tokens": r.settings.get("max_new_tokens"), "created_at": r.created_at}
        shown = CLASS_METRICS if r.task == "classification" else TEXT_METRICS
        row.update({m: (r.metrics or {}).get(m) for m in shown})
        out.append(((r.metrics or {}).get(key) or 0.0, row))
    out.sort(key=lambda kr: (-kr[0], kr[1]["eval_id"]))
    return [row for _, row in out]


# ---------------------------------------------------------------- comparing two runs

def _pair(store: Store, a: int, b: int) -> tuple[EvalRun, EvalRun]:
    run_a, run_b = _finished(store, a), _finished(store, b)
    if run_a.items_hash != run_b.items_hash:
        raise WorkbenchError(f"evaluations {a} ({run_a.ref} {run_a.split}, {run_a.items:,} items) and {b} "
                             f"({run_b.ref} {run_b.split}, {run_b.items:,} items) were not run on the same test "
                             "items; compare runs from the same leaderboard")
    return run_a, run_b


def compare(store: Store, a: int, b: int, *, n_resamples: int = 1000, seed: int = 0,
            confidence: float = 0.95) -> list[dict]:
    """Run b against run a, metric by metric: both scores, the difference b - a, its paired-bootstrap
    confidence interval (metrics.significance, `n_resamples` resamples of the test items), p and a plain
    statement of whether the difference is significant."""
    from metrics import significance

    run_a, run_b = _pair(store, a, b)
    names = (f"eval {a} ({run_a.model_label})", f"eval {b} ({run_b.model_label})")
    if run_a.task == "classification":
        results = _compare_classification(store, run_a, run_b, n_resamples=n_resamples, seed=seed,
                                          confidence=confidence, names=names)
    else:
        results = significance.paired_bootstrap(item_stats(store, a), item_stats(store, b), n_resamples=n_resamples,
                                                seed=seed, confidence=confidence, names=names)
        order = {m: i for i, m in enumerate(TEXT_METRICS)}
        results = dict(sorted(results.items(), key=lambda kv: order.get(kv[0], 99)))
    from metrics.corpus import SCALES

    scale = {100.0: "0-100 scale", 1.0: "0-1 scale", None: "ratio"}
    return [{**r.to_json(), "scale": scale.get(SCALES.get(r.metric, 1.0), "0-1 scale")} for r in results.values()]


def example_diff(store: Store, a: int, b: int, *, metric: str | None = None, order: str = "losses",
                 limit: int = 50, offset: int = 0) -> list[dict]:
    """Per-example side by side: prompt, reference, both outputs and both per-example scores, sorted by
    the largest losses of b against a (order='losses') or the largest gains ('gains')."""
    run_a, run_b = _pair(store, a, b)
    metric = metric or ("correct" if run_a.task == "classification" else "bleu")
    if order not in ("losses", "gains"):
        raise WorkbenchError(f"order {order!r}; expected losses or gains")
    version = _version_of(store, run_a)
    direction = "ASC" if order == "losses" else "DESC"
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
        f"WHERE i.eval_id = ? ORDER BY diff {direction}, i.item LIMIT ? OFFSET ?",
        [run_b.eval_id, metric, metric, run_a.eval_id, int(limit), int(offset)]).fetchall()
    if not rows and offset == 0:
        raise WorkbenchError(f"no per-example {metric!r} scores in these runs; choose one of "
                             f"{', '.join(example_metrics(store, a))}")
    keys = ("item", "row", "prompt", "reference", "output_a", "output_b", "score_a", "score_b", "diff")
    return [dict(zip(keys, r)) for r in rows]


def example_metrics(store: Store, eval_id: int) -> list[str]:
    """Per-example metrics stored for a run (sentence BLEU as 'bleu', ROUGE F, chrF, exact match...)."""
    rows = store.cursor().execute("SELECT DISTINCT metric FROM wb_eval_scores WHERE eval_id = ?",
                                  [int(eval_id)]).fetchall()
    order = {m: i for i, m in enumerate(("bleu", "rouge1", "rouge2", "rougeL", "rougeLsum", "chrf", "exact_match",
                                         "correct"))}
    return sorted((r[0] for r in rows), key=lambda m: (order.get(m, 99), m))


def examples(store: Store, eval_id: int, *, metric: str | None = None, worst_first: bool = True,
             limit: int = 50, offset: int = 0, column: str | None = None, value: str | None = None) -> list[dict]:
    """One run's examples with their per-example score, worst first (optionally of one slice)."""
    run = _finished(store, eval_id)
    metric = metric or ("correct" if run.task == "classification" else "bleu")
    version = _version_of(store, run)
    where, params = "", []
    if column is not None:
        if column not in [c for c, _ in version_columns(store, version)]:
            raise WorkbenchError(f"{version.ref} has no column {column!r}")
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


# ---------------------------------------------------------------- what the Evaluate page asks for

def version_of(store: Store, run: EvalRun) -> Version:
    """The dataset version a run answered."""
    return _version_of(store, run)


def finished_training_runs(store: Store) -> list[dict]:
    """Training runs with an adapter to evaluate (workbench.models.runs), newest first."""
    from workbench.models import runs

    return [r for r in runs.list_runs(store) if r.get("status") in ("completed", "stopped early", "cancelled")
            and r.get("adapter")]


def rouge_table(run: EvalRun) -> list[dict]:
    """ROUGE precision, recall and F of a finished generation run, one row per ROUGE type."""
    rouge = (run.metrics or {}).get("rouge") or {}
    return [{"rouge": t, **values} for t, values in rouge.items()]


def example_neighbours(store: Store, run: EvalRun, item: int, *, k: int = 5, only_category: bool = False,
                       progress: Progress | None = None) -> list[dict]:
    """The training records most like a test example's prompt (see `neighbours`), with their texts."""
    from workbench.data.browse import category_column

    version = _version_of(store, run)
    (test,) = records(store, version, [_item_row(store, run.eval_id, item)]) or [None]
    if test is None:
        raise WorkbenchError(f"test item {item} of evaluation {run.eval_id} is no longer in {version.ref}")
    cat = category_column(store, version)
    found = neighbours(store, version, test.get("prompt") or "", k=k, category=test.get(cat) if cat else None,
                       only_category=only_category, progress=progress)
    texts = {r[ROW_COLUMN]: r for r in records(store, version, [n["row"] for n in found])}
    answer = "completion" if version.format != "classification" else None
    return [{**n, "prompt": texts[n["row"]].get("prompt"),
             **({"completion": texts[n["row"]].get("completion")} if answer else {})} for n in found]


def _item_row(store: Store, eval_id: int, item: int) -> int:
    rows = store.cursor().execute("SELECT _row FROM wb_eval_items WHERE eval_id = ? AND item = ?",
                                  [int(eval_id), int(item)]).fetchall()
    if not rows:
        raise WorkbenchError(f"evaluation {eval_id} has no test item {item}")
    return rows[0][0]
