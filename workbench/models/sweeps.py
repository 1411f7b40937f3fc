"""Hyperparameter sweeps: Optuna (TPE, seeded) over LoRA settings, each trial an ordinary training run.

A trial is launched with `runs.launch` like any run (its own folder, events, adapter, MLflow run), and
followed through its `events.jsonl`: every validation loss is reported to Optuna as it is written, and
when the pruner (median or successive halving) says the trial is hopeless the run is cancelled. The
study lives in Optuna's own storage, an sqlite file `<project>/sweeps/<name>.db`, with the sweep's
settings as study attributes, so `--resume` needs only the name: trials still marked running when a
sweep process died are picked up again (their run kept training on its own, or is resumed from its last
checkpoint). `<project>/sweeps/<name>.cancel` asks a sweep to stop after cancelling its current run.

The database is opened only to launch a trial and to record it, never while a trial trains, so the
app can open the project meanwhile.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

from trainers.config import ConfigError, TrainConfig, from_dict
from workbench.core import files, jobs, versions
from workbench.core.errors import WorkbenchError
from workbench.models import runs

ALPHA_MULTIPLE = "lora_alpha_multiple"  # alpha = rank x this; keeps the update's scale comparable across ranks
DEFAULT_SPACE: dict[str, dict] = {
    "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
    "lora_rank": {"choices": [4, 8, 16, 32, 64]},
    ALPHA_MULTIPLE: {"choices": [1, 2, 4]},
    "lora_dropout": {"low": 0.0, "high": 0.2},
    "epochs": {"choices": [1, 2, 3]},
    "warmup_steps": {"low": 0, "high": 100},
}
GENERATION_METRICS = {"rougeL": "maximize", "rouge1": "maximize", "rouge2": "maximize", "rougeLsum": "maximize",
                      "bleu": "maximize", "chrf": "maximize", "exact_match": "maximize"}
METRICS = {"val_loss": "minimize", "train_loss": "minimize", **GENERATION_METRICS}
EVAL_SPLIT = "validation"  # a generation metric is measured on the version's validation split, never its test split
PRUNERS = ("median", "halving", "none")
FINISHED = ("COMPLETE", "PRUNED", "FAIL")


# ---------------------------------------------------------------- the search space

def load_space(path: str | Path | None) -> dict[str, dict]:
    """The default LoRA space, or a user's YAML/JSON file: {setting: {low, high[, log]} | {choices: [...]} | [..]}."""
    if path is None:
        return {k: dict(v) for k, v in DEFAULT_SPACE.items()}
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"space file {path} not found; write a YAML mapping such as "
                             "'learning_rate: {low: 1e-5, high: 1e-3, log: true}'")
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise WorkbenchError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise WorkbenchError(f"{path}: expected a mapping of setting -> range, e.g. 'lora_rank: [8, 16, 32]'")
    return check_space({k: ({"choices": v} if isinstance(v, list) else v) for k, v in raw.items()}, source=str(path))


def check_space(space: dict, *, source: str = "space") -> dict[str, dict]:
    known = set(TrainConfig.__dataclass_fields__) | {ALPHA_MULTIPLE}
    for key, spec in space.items():
        if key not in known:
            raise WorkbenchError(f"{source}: {key!r} is not a training setting; use names such as learning_rate, "
                                 f"lora_rank, {ALPHA_MULTIPLE}, lora_dropout, epochs, max_steps, warmup_steps")
        if not isinstance(spec, dict) or not ("choices" in spec or {"low", "high"} <= set(spec)):
            raise WorkbenchError(f"{source}: {key}: expected {{low: A, high: B[, log: true]}} or a list of choices, "
                                 f"got {spec!r}")
        if "choices" in spec and not spec["choices"]:
            raise WorkbenchError(f"{source}: {key}: the list of choices is empty")
        if "low" in spec and not spec["low"] <= spec["high"]:
            raise WorkbenchError(f"{source}: {key}: low {spec['low']} is above high {spec['high']}")
        if spec.get("log") and spec.get("low", 1) <= 0:
            raise WorkbenchError(f"{source}: {key}: a log range needs low above 0")
    return space


def effective_space(space: dict, fixed: dict) -> dict:
    """Settings fixed with --set are not searched; with max_steps fixed, epochs means nothing."""
    return {k: v for k, v in space.items() if k not in fixed and not (k == "epochs" and fixed.get("max_steps"))
            and not (k == ALPHA_MULTIPLE and "lora_alpha" in fixed)}


def suggest(trial, space: dict) -> dict:
    """Optuna's suggestion for every searched setting."""
    out = {}
    for key, spec in space.items():
        if "choices" in spec:
            out[key] = trial.suggest_categorical(key, list(spec["choices"]))
        elif all(isinstance(spec[b], int) and not isinstance(spec[b], bool) for b in ("low", "high")):
            out[key] = trial.suggest_int(key, spec["low"], spec["high"], log=bool(spec.get("log")))
        else:
            out[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return out


def trial_settings(params: dict, fixed: dict) -> dict:
    """Optuna's parameters as TrainConfig settings (the alpha multiple becomes lora_alpha)."""
    values = {**fixed, **{k: v for k, v in params.items() if k != ALPHA_MULTIPLE}}
    if ALPHA_MULTIPLE in params:
        values["lora_alpha"] = float(params[ALPHA_MULTIPLE] * values.get("lora_rank", TrainConfig.lora_rank))
    return values


# ---------------------------------------------------------------- the study

def sweeps_dir(project_root: Path) -> Path:
    return Path(project_root) / "sweeps"


def storage_url(project_root: Path, name: str) -> str:
    return f"sqlite:///{(sweeps_dir(project_root) / f'{name}.db').resolve()}"


def _storage(project_root: Path, name: str):
    import optuna

    sweeps_dir(project_root).mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(storage_url(project_root, name),
                                      engine_kwargs={"connect_args": {"timeout": 30}})


def load_study(project_root: Path, name: str):
    """The stored study of a sweep (Optuna's own object)."""
    import optuna

    if not (sweeps_dir(project_root) / f"{name}.db").exists():
        known = list_sweeps(project_root)
        raise WorkbenchError(f"no sweep named {name!r}" + (f"; sweeps: {', '.join(known)}" if known else
                                                          "; start one with `workbench sweep`"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=_storage(project_root, name))


def list_sweeps(project_root: Path) -> list[str]:
    return sorted(p.stem for p in sweeps_dir(project_root).glob("*.db"))


def _sampler_and_pruner(settings: dict, n_done: int):
    import optuna

    # a resumed sweep reseeds past the trials it has, so it does not draw the first trials' settings again
    sampler = optuna.samplers.TPESampler(seed=settings["seed"] + n_done)
    kind = settings["pruner"]
    if kind == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=settings["startup_trials"], n_warmup_steps=0)
    elif kind == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    else:
        pruner = optuna.pruners.NopPruner()
    return sampler, pruner


def create_or_resume(project_root: Path, name: str | None, settings: dict | None):
    """A new study with these settings, or (settings None) the stored one; returns (study, settings)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if settings is None:
        if not name:
            known = list_sweeps(project_root)
            if not known:
                raise WorkbenchError("no sweep to resume; start one with `workbench sweep --dataset NAME ...`")
            name = max(known, key=lambda n: (sweeps_dir(project_root) / f"{n}.db").stat().st_mtime)
        stored = load_study(project_root, name)
        settings, n_done = stored.user_attrs["settings"], len(stored.trials)
    else:  # refused there when a sweep of this name exists
        _create_whole(project_root, name, settings)
        n_done = 0
    sampler, pruner = _sampler_and_pruner(settings, n_done)
    study = optuna.load_study(study_name=name, storage=_storage(project_root, name), sampler=sampler,
                              pruner=pruner)
    return study, settings


def _create_whole(project_root: Path, name: str, settings: dict) -> None:
    """Write the new study (schema, study, settings) to a side file and rename it into place, so a reader that
    sees `<name>.db` (the Train page, a second command) never opens a half-made schema or a study without
    its settings: two connections stamping Optuna's schema at once fail on its version table."""
    import optuna

    folder = sweeps_dir(project_root)
    folder.mkdir(parents=True, exist_ok=True)
    side = folder / f".{name}.{os.getpid()}.creating"
    side.unlink(missing_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{side.resolve()}")
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction=METRICS[settings["metric"]])
        study.set_user_attr("settings", settings)
    finally:
        storage.engine.dispose()
    try:  # a link, not a rename: a sweep of this name made meanwhile by another command is kept, not replaced
        os.link(side, folder / f"{name}.db")
    except FileExistsError:
        raise WorkbenchError(f"a sweep named {name!r} exists; continue it with --resume --name {name}, or pick "
                             "another --name") from None
    finally:
        side.unlink(missing_ok=True)


def dataset_now(store, ref: str) -> str:
    """The sweep's dataset reference ('name' or 'name@V', stored when the sweep began) under the dataset's name
    now: a sweep resumed after a rename goes on with the renamed dataset."""
    name, at, number = ref.partition("@")
    return versions.current_name(store, name) + at + number


def new_settings(*, dataset: str, base_model: str | None, trials: int, space: dict, fixed: dict,
                 metric: str = "val_loss", pruner: str = "median", seed: int = 0, startup_trials: int = 2,
                 parallel: int = 1, eval_settings: dict | None = None) -> dict:
    if metric not in METRICS:
        raise WorkbenchError(f"--metric {metric}: expected one of {', '.join(METRICS)}")
    if pruner not in PRUNERS:
        raise WorkbenchError(f"--pruner {pruner}: expected one of {', '.join(PRUNERS)}")
    if trials < 1:
        raise WorkbenchError(f"--trials {trials}: run at least 1 trial")
    if parallel < 1:
        raise WorkbenchError(f"--parallel {parallel}: run at least 1 trial at a time")
    if base_model:
        fixed = {**fixed, "base_model": base_model}
    try:  # every fixed setting must be one a run accepts
        from_dict({k: v for k, v in fixed.items()}, source="--set")
    except ConfigError as exc:
        raise WorkbenchError(str(exc)) from None
    return {"dataset": dataset, "trials": trials, "space": effective_space(space, fixed), "fixed": fixed,
            "metric": metric, "pruner": pruner, "seed": seed, "startup_trials": startup_trials, "parallel": parallel,
            "eval_settings": eval_settings or {},
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")}


def check_metric(store, dataset: str, metric: str) -> None:
    """A generation metric needs reference answers in the version's validation split (the test split stays
    untouched for the final comparison)."""
    if metric not in GENERATION_METRICS:
        return
    from workbench.core.versions import get_version
    from workbench.models.eval_items import split_values

    values = split_values(store, get_version(store, dataset))
    if not values or EVAL_SPLIT not in values:
        raise WorkbenchError(f"--metric {metric} scores each trial's answers on the {EVAL_SPLIT!r} split, which "
                             f"{dataset} does not have; make splits first (`workbench split {dataset} --ratios "
                             f"0.8,0.1,0.1`), or optimise val_loss")


def default_name(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", dataset) + "-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


# ---------------------------------------------------------------- running

OpenStore = Callable[[], AbstractContextManager]


def run_sweep(open_store: OpenStore, project_root: Path, *, name: str | None = None, settings: dict | None = None,
              progress=None, poll_s: float = 0.5) -> dict:
    """Run (or, with settings None, resume) a sweep until it has its trials or is cancelled; returns results().
    With settings["parallel"] = K, K trials train at once (on a machine with GPUs, each on its own GPU)."""
    import optuna

    project_root = Path(project_root)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise WorkbenchError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    study, settings = create_or_resume(project_root, name or (default_name(settings["dataset"]) if settings
                                                               else None), settings)
    name = study.study_name
    _claim(project_root, name)
    (sweeps_dir(project_root) / f"{name}.cancel").unlink(missing_ok=True)
    slots = device_slots(int(settings.get("parallel", 1)))
    active: dict[int, _Trial] = {}  # slot -> the trial training there
    # trials left running by a sweep process that died are followed again first
    waiting = [optuna.trial.Trial(study, t._trial_id)
               for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
    try:
        while True:
            for slot in [k for k in range(len(slots)) if k not in active]:
                if waiting:
                    trial = waiting.pop(0)
                elif (_count_finished(study) + len(active) < settings["trials"]
                      and not _cancel_requested(project_root, name)):
                    trial = study.ask()
                else:
                    break
                active[slot] = _Trial.start(study, trial, open_store, project_root, settings, slots[slot])
            if not active:
                break
            for slot, t in list(active.items()):
                if t.poll(progress):
                    t.tell()
                    del active[slot]
            if active:
                time.sleep(poll_s)
    finally:  # runs still training go on by themselves; --resume follows them again
        (sweeps_dir(project_root) / f"{name}.pid").unlink(missing_ok=True)
    with open_store() as store:
        runs.sync_runs(store)
    return results(project_root, name)


def device_slots(parallel: int) -> list[str | None]:
    """One entry per trial that trains at once: the CUDA device it sees (trials spread over the GPUs), or None
    on a machine without one (the trials share the CPU)."""
    if parallel < 1:
        raise WorkbenchError(f"--parallel {parallel}: run at least 1 trial at a time")
    gpus = runs.gpu_count()
    return [str(k % gpus) if gpus else None for k in range(parallel)]


class _Trial:
    """One trial's run, followed one look at a time: each new validation loss is reported to Optuna; the run is
    cancelled when pruned or when the sweep is cancelled."""

    def __init__(self, study, trial, open_store, project_root: Path, settings: dict, run_id: str):
        self.study, self.trial, self.open_store, self.settings = study, trial, open_store, settings
        self.project_root, self.run_id = Path(project_root), run_id
        self.run_dir = self.project_root / "runs" / run_id
        self.reported = set(_intermediate(trial))
        self.pruned = self.cancelled = False
        self.status: dict = {}

    @classmethod
    def start(cls, study, trial, open_store, project_root: Path, settings: dict, device: str | None) -> _Trial:
        """Launch the trial's run (or pick up the one it has: resumed from its checkpoint if it was killed)."""
        import optuna

        run_id = trial.user_attrs.get("run_id")
        try:
            if run_id is None:
                params = suggest(trial, settings["space"])
                with open_store() as store:
                    cfg = runs.default_config(store, **trial_settings(params, settings["fixed"]))
                    run_id = runs.launch(store, dataset_now(store, settings["dataset"]), cfg, devices=device)
                trial.set_user_attr("run_id", run_id)
            elif runs.run_status(Path(project_root) / "runs" / run_id)["status"] == "interrupted":
                with open_store() as store:
                    runs.start_run(store, run_id, devices=device)
        except WorkbenchError as exc:
            trial.set_user_attr("message", str(exc))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        return cls(study, trial, open_store, project_root, settings, run_id)

    @property
    def generation_metric(self) -> bool:
        return self.settings["metric"] in GENERATION_METRICS

    def poll(self, progress=None) -> bool:
        """Report what is new; True once the trial has its outcome (the run ended, and for a generation metric
        its evaluation on the validation split is scored)."""
        if self.trial.user_attrs.get("eval_id") is not None:
            return self._poll_eval()
        events = runs.read_events(self.run_dir)
        for e in events:
            if e["type"] == "eval" and e["step"] > 0 and e["step"] not in self.reported:  # step 0: every trial alike
                self.reported.add(e["step"])
                # a maximised generation metric: the loss reported negated, so that higher is better for the
                # pruner too
                self.trial.report(-float(e["val_loss"]) if self.generation_metric else float(e["val_loss"]),
                                  e["step"])
                if not self.pruned and not self.cancelled and self.trial.should_prune():
                    self.pruned = True
                    _cancel(self.run_dir)
        if not self.cancelled and _cancel_requested(self.project_root, self.study.study_name):
            self.cancelled = True
            _cancel(self.run_dir)
        self.status = runs.run_status(self.run_dir, events)
        if progress is not None:
            progress(self.trial.number, self.status)
        ended = self.status["status"] not in ("running", "prepared")
        if ended and self.generation_metric and self._trained():
            self._start_eval()
            return False
        return ended

    def _trained(self) -> bool:
        return not self.pruned and not self.cancelled and self.status["status"] in ("completed", "stopped early")

    def _start_eval(self) -> None:
        """Generate the validation split's answers with the trial's adapter (the answer length the references
        need), as an ordinary evaluation run."""
        from workbench.models import eval_setup, evaluation, generator

        with self.open_store() as store:
            model = eval_setup.resolve_model(store, run_id=self.run_id)
            dataset = dataset_now(store, self.settings["dataset"])
            run = evaluation.create_eval(store, dataset, model=model, split=EVAL_SPLIT,
                                         settings=self.settings.get("eval_settings") or {})
            generator.launch(store, run.eval_id)
        self.trial.set_user_attr("eval_id", run.eval_id)

    def _poll_eval(self) -> bool:
        from workbench.models import generator

        eval_id = self.trial.user_attrs["eval_id"]
        with self.open_store() as store:
            run = generator.refresh(store, eval_id)
            if run.status == "stopped":  # killed with a sweep process: generate what is missing
                run = generator.restart(store, eval_id)
        self.eval_run = run
        if not self.status:
            self.status = runs.run_status(self.run_dir)
        return run.status in ("finished", "failed")

    def outcome(self) -> tuple[str, float | None]:
        status = self.status
        self.trial.set_user_attr("status", status["status"])
        if self.pruned:
            return "PRUNED", None
        if self.cancelled or status["status"] in ("failed", "interrupted", "cancelled"):
            self.trial.set_user_attr("message", status.get("message") or status["status"])
            return "FAIL", None
        metric = self.settings["metric"]
        if metric in GENERATION_METRICS:
            run = getattr(self, "eval_run", None)
            if run is None or run.status != "finished":
                self.trial.set_user_attr("message", f"its evaluation {run.status if run else 'did not run'}")
                return "FAIL", None
            value = (run.metrics or {}).get(metric)
        else:
            value = status["eval_loss"] if metric == "val_loss" else status["train_loss"]
        if value is None or not math.isfinite(value):
            return "FAIL", None
        return "COMPLETE", float(value)

    def tell(self) -> None:
        import optuna

        state, value = self.outcome()
        if state == "COMPLETE":
            self.study.tell(self.trial, value)
        else:
            self.study.tell(self.trial, state=getattr(optuna.trial.TrialState, state))


def _intermediate(trial) -> dict:
    """What this trial has reported already (a resumed sweep does not report a step twice)."""
    return next(t.intermediate_values for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def _cancel(run_dir: Path) -> None:
    if runs.run_status(run_dir)["status"] == "running":
        (run_dir / "cancel").write_text(datetime.now(UTC).isoformat(), encoding="utf-8")


def _count_finished(study) -> int:
    return sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))


def _cancel_requested(project_root: Path, name: str) -> bool:
    return (sweeps_dir(project_root) / f"{name}.cancel").exists()


def _claim(project_root: Path, name: str) -> None:
    """One process per sweep: a second one (or a resume while it still runs) is refused."""
    path = sweeps_dir(project_root) / f"{name}.pid"
    if path.exists():
        other = jobs.Job.from_text(path.read_text(encoding="utf-8"))
        if jobs.alive(other):
            raise WorkbenchError(f"sweep {name} is running in process {other.pid}; cancel it with "
                                 f"`workbench sweep --cancel --name {name}` or wait for it")
    files.write_text(path, jobs.current().to_text())


def cancel_sweep(project_root: Path, name: str) -> None:
    """Ask a running sweep to stop: it cancels its current trial's run and returns."""
    load_study(project_root, name)
    (sweeps_dir(project_root) / f"{name}.cancel").write_text(datetime.now(UTC).isoformat(), encoding="utf-8")


# ---------------------------------------------------------------- results

def results(project_root: Path, name: str) -> dict:
    """Every trial (parameters, state, objective, run id) and the best, read from Optuna's storage."""
    study = load_study(project_root, name)
    settings = study.user_attrs.get("settings", {})
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "settings": trial_settings(t.params, {}), "run_id": t.user_attrs.get("run_id"),
               "intermediate": {int(k): v for k, v in t.intermediate_values.items()},
               "message": t.user_attrs.get("message")} for t in study.trials]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = None
    if complete:
        b = study.best_trial
        best = next(t for t in trials if t["number"] == b.number)
        best = {**best, "config": {**settings.get("fixed", {}), **trial_settings(b.params, settings.get("fixed", {}))}}
    return {"sweep": name, "storage": storage_url(project_root, name), "dataset": settings.get("dataset"),
            "metric": settings.get("metric"), "direction": study.direction.name.lower(),
            "trials_wanted": settings.get("trials"), "trials": trials, "best": best,
            "running": _running(project_root, name)}


def _running(project_root: Path, name: str) -> bool:
    path = sweeps_dir(project_root) / f"{name}.pid"
    return path.exists() and jobs.alive(jobs.Job.from_text(path.read_text(encoding="utf-8")))


def slice_rows(out: dict) -> list[dict]:
    """The completed trials in long form for a slice plot: {trial, setting, setting_value, objective}."""
    return [{"trial": t["number"], "setting": k, "setting_value": float(v), "objective": t["value"]}
            for t in out["trials"] if t["state"] == "COMPLETE" for k, v in t["params"].items()
            if isinstance(v, (int, float))]


def importance(project_root: Path, name: str) -> dict[str, float]:
    """optuna.importance over the completed trials ({} with fewer than two, or one searched setting)."""
    import optuna

    study = load_study(project_root, name)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(done) < 2 or len({k for t in done for k in t.params}) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):
        return {}


def best_config(open_store: OpenStore, project_root: Path, name: str) -> TrainConfig:
    """The best trial's settings as a TrainConfig, for 'train with the best settings'."""
    best = results(project_root, name)["best"]
    if best is None:
        raise WorkbenchError(f"sweep {name} has no completed trial yet")
    with open_store() as store:
        return runs.default_config(store, **best["config"])


def trial_curves(project_root: Path, run_ids: list[str]) -> list[dict]:
    """Loss curves of several runs, one row per point: {run_id, step, kind, loss} (for the overlaid chart)."""
    out = []
    for run_id in run_ids:
        status = runs.run_status(Path(project_root) / "runs" / run_id)
        out += [{"run_id": run_id, **p} for p in status["losses"]]
    return out


def settings_diff(project_root: Path, run_ids: list[str]) -> list[dict]:
    """The settings that differ between runs: one row per setting, one column per run."""
    configs = {r: json.loads((Path(project_root) / "runs" / r / "config.json").read_text(encoding="utf-8"))
               for r in run_ids if (Path(project_root) / "runs" / r / "config.json").exists()}
    keys = sorted({k for c in configs.values() for k in c})
    return [{"setting": k, **{r: c.get(k) for r, c in configs.items()}} for k in keys
            if len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1]
