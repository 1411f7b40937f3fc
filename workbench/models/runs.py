"""Training runs, app side: prepare a run folder, start the trainer detached, follow it, cancel it,
and record how it ended in the `wb_runs` table.

The trainer (`python -m trainers.train RUN_DIR`) never opens the DuckDB file: this module exports
the dataset version into the run folder, writes the config, starts the subprocess in its own
session (closing the browser or the CLI does not stop it), reads `events.jsonl` to show progress
and, when the run has ended, records the result in `wb_runs`. Restarting the app finds every
run again from its folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from trainers.config import ConfigError, TrainConfig, from_dict, load_config, save_config
from workbench.core import files, jobs
from workbench.core.auth import require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import Version, get_version
from workbench.data.export import export_version

TERMINAL = ("completed", "stopped early", "cancelled", "failed")
RUN_INFO = "run.json"
LOG = "trainer.log"


# ---------------------------------------------------------------- configuration

def default_config(store: Store, **overrides) -> TrainConfig:
    """The TrainConfig defaults with this project's tiny-base folder; overrides are checked like a file."""
    values = {"tiny_dir": str(store.project.models_dir / "tiny"), **project_defaults(store)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _checked(lambda: from_dict(values, source="settings"))


def project_defaults(store: Store) -> dict:
    """The `[train]` section of workbench.toml: this project's own defaults for new runs."""
    section = store.project.config().get("train", {})
    if not isinstance(section, dict):
        raise WorkbenchError(f"{store.project.config_path}: [train] must be a table of settings")
    return section


def config_from_file(store: Store, path, **overrides) -> TrainConfig:
    cfg = _checked(lambda: load_config(path, **{k: v for k, v in overrides.items() if v is not None}))
    if not cfg.tiny_dir:
        cfg = cfg.replace(tiny_dir=str(store.project.models_dir / "tiny"))
    return cfg


def _checked(make):
    try:
        return make()
    except ConfigError as exc:
        raise WorkbenchError(str(exc)) from None


# ---------------------------------------------------------------- preparing and starting

def export_records(store: Store, version: Version) -> Path:
    """The version as chat JSONL in the project cache (rebuildable; named by version id and content hash)."""
    path = store.project.cache_dir / f"chat-v{version.version_id}-{version.content_hash[:16]}.jsonl"
    if not path.exists():
        export_version(store, version, "chat", path)
    return path


def preflight(store: Store, dataset_ref: str, cfg: TrainConfig, *, measure_steps: int = 3) -> dict:
    """What the run will do before it starts (see trainers.preflight)."""
    from trainers.preflight import preflight as run_preflight

    version = get_version(store, dataset_ref)
    try:
        return run_preflight(export_records(store, version), cfg, measure_steps=measure_steps)
    except ConfigError as exc:
        raise WorkbenchError(str(exc)) from None


def new_run_id(version: Version) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{version.dataset}-v{version.number}-{secrets.token_hex(2)}"


def prepare_run(store: Store, dataset_ref: str, cfg: TrainConfig, *, created_by: str | None = None) -> str:
    """A run folder with the exported records, config.json and run.json; recorded as 'prepared'."""
    version = get_version(store, dataset_ref)
    run_id = new_run_id(version)
    run_dir = store.project.runs_dir / run_id
    (run_dir / "data").mkdir(parents=True)
    records = export_records(store, version)
    try:
        os.link(records, run_dir / "data" / "records.jsonl")  # the cache file never changes: share it
    except OSError:
        shutil.copyfile(records, run_dir / "data" / "records.jsonl")
    save_config(cfg, run_dir / "config.json")
    info = {"run_id": run_id, "dataset": version.dataset, "version": version.number, "version_id": version.version_id,
            "content_hash": version.content_hash, "created_by": created_by,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    _write_info(run_dir, info)
    store.retry(lambda cur: cur.execute(
        "INSERT INTO wb_runs (run_id, dataset, version, version_id, content_hash, base_model, method, status, run_dir,"
        " config, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, 'prepared', ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET"
        " config = excluded.config, created_by = excluded.created_by",  # a runs listing recorded the folder first
        [run_id, version.dataset, version.number, version.version_id, version.content_hash, cfg.base_model,
         cfg.method, str(run_dir), json.dumps(cfg.to_dict()), created_by]), key_races=True)
    return run_id


def trainer_command(run_dir: Path, nproc_per_node: int = 1) -> list[str]:
    """The trainer's command line, for a new run and a resumed one alike (it continues from its last checkpoint)."""
    if nproc_per_node > 1:  # one machine, N ranks (DDP or FSDP2, trainers/distributed.py); --standalone: a free port
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc_per_node}",
                "-m", "trainers.train", str(run_dir)]
    return [sys.executable, "-m", "trainers.train", str(run_dir)]


def gpu_count() -> int:
    """CUDA devices this machine has (0 without torch's CUDA build): the most ranks a run can train on."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def start_run(store: Store, run_id: str, *, nproc_per_node: int | None = None, devices: str | None = None,
              user=None) -> None:
    """Start (or resume) the trainer as a detached subprocess; it continues from its last checkpoint.
    nproc_per_node: ranks under torchrun (None: as many as the run had before, else 1).
    devices: the CUDA devices it may see (CUDA_VISIBLE_DEVICES, e.g. "1" for a sweep's trial); None: all."""
    require_role(user, "train")
    run_dir = run_path(store, run_id)
    if nproc_per_node is None:
        nproc_per_node = int(_read_info(run_dir).get("nproc_per_node", 1))
    if nproc_per_node < 1:
        raise WorkbenchError(f"--nproc-per-node {nproc_per_node}: train on at least 1 process")
    status = run_status(run_dir)
    if status["status"] == "running":
        raise WorkbenchError(f"run {run_id} is already running (pid {status['pid']})")
    if status["status"] in ("completed", "stopped early"):
        raise WorkbenchError(f"run {run_id} has finished ({status['status']}); start a new run instead")
    (run_dir / "cancel").unlink(missing_ok=True)
    job = jobs.start(trainer_command(run_dir, nproc_per_node), cwd=run_dir, log=run_dir / LOG,
                     env=None if devices is None else {"CUDA_VISIBLE_DEVICES": devices})
    info = _read_info(run_dir)
    info.update(pid=job.pid, pid_created=job.create_time, nproc_per_node=nproc_per_node,
                started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    _write_info(run_dir, info)
    store.retry(lambda cur: cur.execute("UPDATE wb_runs SET status = 'running', message = NULL, ended_at = NULL "
                                        "WHERE run_id = ?", [run_id]))


def launch(store: Store, dataset_ref: str, cfg: TrainConfig, *, created_by: str | None = None,
           nproc_per_node: int | None = None, devices: str | None = None, user=None) -> str:
    """prepare_run + start_run: the one call behind the Train page's button and `workbench train`.

    user: the signed-in `workbench.core.auth.User` (None: the local owner); only admins train."""
    from workbench.core.auth import require_role

    created_by = created_by or (user.name if user is not None else None)
    require_role(user, "train")
    run_id = prepare_run(store, dataset_ref, cfg, created_by=created_by)
    start_run(store, run_id, nproc_per_node=nproc_per_node, devices=devices, user=user)
    return run_id


def cancel_run(store: Store, run_id: str, *, user=None) -> None:
    """Ask the trainer to stop: it saves a checkpoint and the adapter, then ends as 'cancelled'."""
    require_role(user, "train")
    run_dir = run_path(store, run_id)
    if run_status(run_dir)["status"] != "running":
        raise WorkbenchError(f"run {run_id} is not running")
    (run_dir / "cancel").write_text(datetime.now(UTC).isoformat(), encoding="utf-8")


def run_path(store: Store, run_id: str) -> Path:
    run_dir = store.project.runs_dir / run_id
    if not run_id or "/" in run_id or run_id.startswith(".") or not (run_dir / RUN_INFO).exists():
        known = [p.name for p in sorted(store.project.runs_dir.glob("*")) if (p / RUN_INFO).exists()][-5:]
        hint = f"; recent runs: {', '.join(known)}" if known else "; start one with `workbench train`"
        raise WorkbenchError(f"no run named {run_id!r}{hint}")
    return run_dir


# ---------------------------------------------------------------- following a run

def read_events(run_dir: Path) -> list[dict]:
    """Every complete line of events.jsonl (a line being written right now is skipped)."""
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def _job(info: dict) -> jobs.Job | None:
    """The trainer process recorded in run.json (pid and start time)."""
    return jobs.Job.from_dict({"pid": info.get("pid"), "create_time": info.get("pid_created")})


def _alive(info: dict) -> bool:
    job = _job(info)
    if jobs.alive(job):
        return True
    jobs.reap(job)  # started by this process and ended: collect it so it does not linger as a zombie
    return False


def wait_exit(run_dir: Path, timeout: float | None = None) -> None:
    """Block until the run's trainer process has ended (a test or a script that killed it)."""
    job = _job(_read_info(run_dir))
    if job is not None:
        jobs.wait(job, timeout)


# What a run's end event says of its speed (trainers.train.Throughput): steady state after the first steps.
SPEED_KEYS = ("steady_supervised_tokens_per_s", "steady_tokens_per_s", "steady_steps", "peak_gpu_memory_gb",
              "model_tflops_per_s", "mfu")


@dataclass
class RunStatus:
    status: str = "prepared"
    phase: str | None = None
    step: int = 0
    total_steps: int | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    supervised_tokens_per_s: float | None = None  # tokens that carry a loss, last step
    speed: dict = field(default_factory=dict)  # the end event's steady state: SPEED_KEYS
    batch_plan: dict = field(default_factory=dict)  # the batch the trainer chose, and why (its batch_plan event)
    setup: dict = field(default_factory=dict)  # the time before the first step: {seconds, parts} (its setup event)
    elapsed_s: float | None = None
    remaining_s: float | None = None
    message: str | None = None
    adapter: str | None = None
    checkpoint_step: int | None = None
    pid: int | None = None
    losses: list = field(default_factory=list)


def run_status(run_dir: Path, events: list[dict] | None = None) -> dict:
    """Where a run stands, from its events and whether its process lives.

    status: prepared (not started), running, completed, stopped early, cancelled, failed, or
    interrupted (the process died without an end event, e.g. killed; start it again to resume).
    `losses` holds the curve: {step, kind (train|validation), loss}.
    """
    run_dir = Path(run_dir)
    info = _read_info(run_dir)
    events = read_events(run_dir) if events is None else events
    s = RunStatus(pid=info.get("pid"))
    last_start = max((i for i, e in enumerate(events) if e["type"] == "start"), default=-1)
    for e in events:
        kind = e["type"]
        if kind == "step":
            s.step, s.total_steps, s.lr = e["step"], e.get("total_steps"), e.get("lr")
            s.tokens_per_s, s.elapsed_s, s.remaining_s = e.get("tokens_per_s"), e.get("elapsed_s"), e.get("remaining_s")
            s.supervised_tokens_per_s = e.get("supervised_tokens_per_s")
            s.losses.append({"step": e["step"], "kind": "train", "loss": e["loss"]})
            s.phase = "training"
        elif kind == "eval":
            s.eval_loss = e["val_loss"]
            s.losses.append({"step": e["step"], "kind": "validation", "loss": e["val_loss"]})
        elif kind == "data":
            s.total_steps = e.get("total_steps")
        elif kind == "phase":
            s.phase = f"{e['phase']} ({e['step']}/{e['of']})"
        elif kind == "checkpoint":
            s.checkpoint_step = e["step"]
        elif kind == "batch_plan":
            s.batch_plan = {k: e.get(k) for k in ("batch_tokens", "row_len", "max_seq_len", "reasons")}
        elif kind == "setup":
            s.setup = {"seconds": e.get("seconds"), "parts": e.get("parts") or {}}
        elif kind == "resume":
            s.step = e["step"]
            # steps replayed after a resume replace the ones logged after the checkpoint
            s.losses = [p for p in s.losses if p["step"] <= e["step"]]
    ended = events[-1] if events and events[-1]["type"] == "end" else None
    if ended is not None and events.index(ended) > last_start:
        s.status = ended["status"]
        s.message = ended.get("message")
        s.train_loss, s.eval_loss = ended.get("train_loss"), ended.get("eval_loss")
        s.adapter = ended.get("adapter")
        s.elapsed_s = ended.get("elapsed_s", s.elapsed_s)
        s.speed = {k: ended[k] for k in SPEED_KEYS if ended.get(k) is not None}
        s.remaining_s = 0 if s.status in TERMINAL else s.remaining_s
        s.phase = None
    elif _alive(info):
        s.status = "running"
        recent = [p["loss"] for p in s.losses if p["kind"] == "train"][-20:]
        s.train_loss = sum(recent) / len(recent) if recent else None
    elif info.get("pid") and not events:
        s.status = "failed"
        log = run_dir / LOG
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] if log.exists() else []
        s.message = f"the trainer exited before it started ({tail[0] if tail else 'no output'}); see {log}"
    elif info.get("pid"):
        s.status = "interrupted"
        s.message = "the trainer stopped without finishing (killed or crashed); start it again to resume" + (
            f" from step {s.checkpoint_step}" if s.checkpoint_step else "")
        s.phase = None
    return {**s.__dict__, "run_id": run_dir.name, **{k: info.get(k) for k in ("dataset", "version", "created_at")}}


def sync_runs(store: Store) -> list[dict]:
    """Every run folder's status, newest first; ended runs are recorded in wb_runs (once)."""
    cur = store.cursor()
    rows = cur.execute("SELECT run_id, status, dataset FROM wb_runs").fetchall()
    recorded = {r[0]: r[1] for r in rows}
    dataset_now = {r[0]: r[2] for r in rows}  # run.json keeps the name at training time; a rename moves the row
    out = []
    folders = sorted((p for p in store.project.runs_dir.glob("*") if (p / RUN_INFO).exists()), reverse=True)
    for run_dir in folders:
        run_id = run_dir.name
        if recorded.get(run_id) in TERMINAL:
            out.append(_recorded(store, run_id))
            continue
        status = run_status(run_dir)
        cfg = _read_config(run_dir)
        status.update(base_model=cfg.get("base_model"), method=cfg.get("method"))
        if run_id in dataset_now:
            status["dataset"] = dataset_now[run_id]
        if recorded.get(run_id) != status["status"]:
            _record(store, run_dir, status, cfg, exists=run_id in recorded)
        out.append(status)
    return out


def _record(store: Store, run_dir: Path, status: dict, cfg: dict, *, exists: bool) -> None:
    info = _read_info(run_dir)
    ended = datetime.now(UTC).replace(tzinfo=None) if status["status"] in TERMINAL else None
    values = [status["status"], status["step"], status["train_loss"], status["eval_loss"], status["adapter"],
              status["message"], ended]
    if exists:
        store.retry(lambda cur: cur.execute(
            "UPDATE wb_runs SET status = ?, steps = ?, train_loss = ?, eval_loss = ?, adapter_path = ?, message = ?,"
            " ended_at = ? WHERE run_id = ?", values + [run_dir.name]))
    else:  # a run folder this database has not seen (copied in, the database rebuilt, or prepare_run about to record it)
        # prepare_run writes run.json before its row: another process listing runs in between must not collide with it
        store.retry(lambda cur: cur.execute(
            "INSERT INTO wb_runs (status, steps, train_loss, eval_loss, adapter_path, message, ended_at, run_id,"
            " dataset, version, version_id, content_hash, base_model, method, run_dir, config, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET"
            " status = excluded.status, steps = excluded.steps, train_loss = excluded.train_loss,"
            " eval_loss = excluded.eval_loss, adapter_path = excluded.adapter_path, message = excluded.message,"
            " ended_at = excluded.ended_at",
            values + [run_dir.name, info.get("dataset", "?"), info.get("version", 0), info.get("version_id", 0),
                      info.get("content_hash", ""), cfg.get("base_model", "?"), cfg.get("method", "?"), str(run_dir),
                      json.dumps(cfg), info.get("created_by")]), key_races=True)


def _recorded(store: Store, run_id: str) -> dict:
    cols = ["run_id", "dataset", "version", "base_model", "method", "status", "steps", "train_loss", "eval_loss",
            "adapter_path", "message", "created_at", "ended_at"]
    row = store.cursor().execute(f"SELECT {', '.join(cols)} FROM wb_runs WHERE run_id = ?", [run_id]).fetchall()[0]
    rec = dict(zip(cols, row))
    rec["step"], rec["adapter"] = rec.pop("steps"), rec.pop("adapter_path")
    return rec


def trained_on(store: Store, run_id: str) -> str | None:
    """The dataset version a recorded run trained on, as NAME@NUMBER (None: no such run recorded)."""
    rows = store.cursor().execute("SELECT dataset, version FROM wb_runs WHERE run_id = ?", [run_id]).fetchall()
    return f"{rows[0][0]}@{rows[0][1]}" if rows else None


def runs_on_versions(store: Store, version_ids: list[int]) -> list[dict]:
    """Recorded runs trained on these dataset versions, oldest first: {run_id, version, status}."""
    rows = store.cursor().execute(
        "SELECT run_id, dataset || '@' || version, status FROM wb_runs WHERE version_id IN "
        "(SELECT unnest(?::INTEGER[])) ORDER BY created_at", [[int(v) for v in version_ids]]).fetchall()
    return [{"run_id": r, "version": v, "status": s} for r, v, s in rows]


def list_runs(store: Store) -> list[dict]:
    """The runs table for a page or `workbench runs`: one flat row per run, newest first."""
    keys = ["run_id", "status", "dataset", "version", "base_model", "method", "step", "train_loss", "eval_loss",
            "adapter", "message"]
    return [{k: r.get(k) for k in keys} for r in sync_runs(store)]


def wait_run(store_project_runs_dir: Path, run_id: str, *, poll_s: float = 1.0, progress=None,
             timeout_s: float | None = None) -> dict:
    """Block until the run ends (for the CLI); progress(fraction, message) is called while it runs.
    Takes the runs folder, not the store, so the caller can close the database while waiting."""
    run_dir = Path(store_project_runs_dir) / run_id
    start = time.monotonic()
    while True:
        status = run_status(run_dir)
        if status["status"] not in ("running", "prepared"):
            return status
        if progress is not None:
            total = status["total_steps"] or 0
            text = status["phase"] or "starting"
            if status["phase"] == "training":
                text = f"step {status['step']}/{total} loss {status['train_loss'] or float('nan'):.3f}"
            progress(status["step"] / total if total else 0.0, text)
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return status
        time.sleep(poll_s)


def run_info(store: Store, run_id: str) -> dict:
    """What the app wrote about a run when it prepared it (run.json): dataset, version, version_id, content_hash."""
    return _read_info(run_path(store, run_id))


def run_details(store: Store, run_id: str) -> dict:
    """Status plus the run's config and manifest, for the page's detail view."""
    run_dir = run_path(store, run_id)
    out = run_status(run_dir)
    out["config"] = _read_config(run_dir)
    manifest = run_dir / "manifest.json"
    out["manifest"] = json.loads(manifest.read_text(encoding="utf-8")) if manifest.exists() else None
    out["run_dir"] = str(run_dir)
    log = run_dir / LOG
    out["log_tail"] = log.read_text(encoding="utf-8", errors="replace")[-4000:] if log.exists() else ""
    out["rewards"] = reward_points(read_events(run_dir))
    return out


REWARD_FIGURES = {"reward_accuracy": "reward accuracy", "reward_margin": "reward margin"}


def reward_points(events: list[dict]) -> list[dict]:
    """A preference run's reward accuracy and margin per step, training and validation, one row per point:
    {step, kind, figure, value} (empty for a supervised run)."""
    out = []
    for e in events:
        kind, prefix = {"step": ("train", ""), "eval": ("validation", "val_")}.get(e.get("type"), (None, None))
        if kind is None:
            continue
        for key, name in REWARD_FIGURES.items():
            value = e.get(prefix + key)
            if isinstance(value, (int, float)):
                out.append({"step": e["step"], "kind": kind, "figure": name, "value": float(value)})
    return out


# ---------------------------------------------------------------- small helpers

def _read_info(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_INFO
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _write_info(run_dir: Path, info: dict) -> None:
    files.write_json(Path(run_dir) / RUN_INFO, info)


def _read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
