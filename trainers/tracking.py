"""Experiment tracking beside events.jsonl: MLflow and TensorBoard by default, wandb or a remote MLflow on request.

`report_to` (TrainConfig) is a comma-separated list of sinks:

    mlflow        the project's own MLflow store: sqlite:///<project>/tracking/mlflow.db, artifacts in
                  <project>/tracking/artifacts (no server; `workbench tracking --ui` opens it)
    tensorboard   event files in <run>/tensorboard (`tensorboard --logdir <project>/runs` shows every run)
    wandb         Weights & Biases, where the user has it installed and logged in
    URI           a remote MLflow tracking server (http://host:5000, databricks, ...)
    none          nothing but events.jsonl

Why sqlite and not MLflow's ./mlruns file store: in MLflow 3.x the file store is in maintenance mode and
refuses to open unless MLFLOW_ALLOW_FILE_STORE is set; sqlite is the backend MLflow recommends without a
server, and `mlflow ui --backend-store-uri sqlite:///...` reads it directly.

Per step the trainer writes one JSON line to a pipe; a child process (`python -m trainers.tracking`) holds the
sinks: it imports MLflow and TensorBoard, writes params, metrics in batches (about every 2 s), final metrics
and the adapter as an artifact, so tracking costs the training loop almost nothing (bench/tracking_bench.py).
A tracking failure is printed to trainer.log and never stops a run.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from pathlib import Path

from trainers.config import ConfigError

LOCAL = ("mlflow", "tensorboard")
EXPERIMENT = "workbench"
BATCH_S = 2.0  # metrics reach MLflow in one transaction about every 2 s (a transaction costs ~10-40 ms)
STATE = "tracking.json"  # in the run folder: {tracking uri: mlflow run id}, so a resumed run continues its MLflow run
_END_STATUS = {"completed": "FINISHED", "stopped early": "FINISHED", "cancelled": "KILLED"}


def sinks(report_to: str) -> list[str]:
    """'mlflow,tensorboard' -> ['mlflow', 'tensorboard']; 'none' -> []."""
    items = [s.strip() for s in (report_to or "").split(",") if s.strip()]
    return [] if items in ([], ["none"]) else items


def check_report_to(value: str) -> None:
    """Each item is none, mlflow, tensorboard, wandb or an MLflow tracking URI; the message says what is wrong."""
    items = [s.strip() for s in (value or "").split(",") if s.strip()]
    if not items:
        raise ConfigError("report_to is empty; use 'mlflow,tensorboard' (the default), 'none', 'wandb' or an MLflow "
                          "tracking URI such as http://host:5000")
    for item in items:
        if item not in ("none", "wandb", *LOCAL) and not is_uri(item):
            raise ConfigError(f"report_to: {item!r} is not known; expected none, mlflow, tensorboard, wandb or an "
                              "MLflow tracking URI (http://host:5000, https://..., databricks)")
    if "none" in items and len(items) > 1:
        raise ConfigError(f"report_to: {value!r} mixes none with other sinks; use none alone")


def is_uri(item: str) -> bool:
    return "://" in item or item in ("databricks",) or item.startswith("databricks://")


def project_root(run_dir: Path) -> Path:
    """The project a run folder belongs to (<project>/runs/<id>); a loose run folder keeps its own store."""
    run_dir = Path(run_dir).resolve()
    return run_dir.parent.parent if run_dir.parent.name == "runs" else run_dir


def store_dir(project: Path) -> Path:
    return Path(project) / "tracking"


def store_uri(project: Path) -> str:
    """The project's MLflow store, as MLflow's clients and `mlflow ui --backend-store-uri` take it."""
    return f"sqlite:///{store_dir(project).resolve() / 'mlflow.db'}"


def artifact_uri(project: Path) -> str:
    return (store_dir(project).resolve() / "artifacts").as_uri()


def run_params(cfg_dict: dict, manifest: dict) -> dict[str, str]:
    """Every setting, plus the dataset version, its content hash and the base model's revision from the manifest."""
    params = {k: str(v) for k, v in cfg_dict.items()}
    data = manifest.get("dataset") or {}
    params.update({f"dataset.{k}": str(v) for k, v in data.items() if v is not None})
    base = manifest.get("base_model") or {}
    params.update({"base_model.revision": str(base.get("revision")), "records_file_sha256":
                   str(manifest.get("records_file_sha256")), "train_records": str(manifest.get("train_records")),
                   "val_records": str(manifest.get("val_records")), "device": str(manifest.get("device"))})
    params.update({f"library.{k}": str(v) for k, v in (manifest.get("libraries") or {}).items()})
    return {k: v[:6000] for k, v in params.items()}


class Reporter:
    """What the trainer calls: log(metrics, step) at every step and eval event, close() after the end event.

    The sinks live in a child process (`python -m trainers.tracking RUN_DIR SINKS`) fed one JSON line per call
    through a pipe: importing MLflow and TensorBoard, the sqlite transactions and the protobuf writes then cost
    the training loop neither time nor the GIL; a step pays one short write."""

    @staticmethod
    def create(cfg, run_dir: Path) -> Reporter | None:
        import importlib.util
        import subprocess

        from trainers.config import TrainConfig

        chosen = sinks(cfg.report_to)
        default = cfg.report_to == TrainConfig.__dataclass_fields__["report_to"].default
        for item in list(chosen):
            package = "mlflow" if item == "mlflow" or is_uri(item) else item
            if importlib.util.find_spec(package) is None:
                if default:  # nobody asked for it by name: train without that sink rather than not at all
                    print(f"tracking: the {package} package is not installed; this run is not tracked in {item} "
                          f"(pip install {package} to have it)", file=sys.stderr, flush=True)
                    chosen.remove(item)
                    continue
                raise ConfigError(f"report_to {item}: the {package} package is not installed; pip install {package}, "
                                  f"or leave {item} out of report_to (none turns tracking off)")
        if not chosen:
            return None
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                                       os.environ.get("PYTHONPATH")) if p)}
        env.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no schema-migration chatter in trainer.log
        proc = subprocess.Popen([sys.executable, "-m", "trainers.tracking", str(run_dir), ",".join(chosen)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        return Reporter(proc)

    def __init__(self, proc):
        self.proc = proc

    def log(self, metrics: dict, step: int) -> None:
        self._send({"metrics": {k: float(v) for k, v in metrics.items()}, "step": int(step),
                    "ts": int(time.time() * 1000)})

    def close(self) -> None:
        """The child logs final metrics and status from the end event and the adapter; waits for it."""
        if self.proc is None:
            return
        self._send({"end": True})
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=300)
        except Exception:
            _warn("still writing after 300 s; stopped (the MLflow run may miss its last metrics)")
            self.proc.kill()
        self.proc = None

    def _send(self, message: dict) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            _warn("the tracking process has ended; the run goes on without tracking")
            self.proc = None


def final_metrics(end: dict) -> dict[str, float]:
    keys = ("train_loss", "eval_loss", "best_step", "step", "elapsed_s", "steady_tokens_per_s",
            "steady_supervised_tokens_per_s", "peak_memory_gb")
    return {f"final/{k}": float(end[k]) for k in keys if isinstance(end.get(k), (int, float))}


def log_evaluation(run_dir: Path, metrics: dict[str, float], *, prefix: str = "eval/") -> bool:
    """Add an evaluation's metrics (bleu, rougeL, ...) to the training run's MLflow run(s) in their stores;
    False when the run was not tracked in MLflow. For workbench.models.evaluation, once an evaluation ends."""
    known = _read_json(Path(run_dir) / STATE)
    if not known:
        return False
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [Metric(prefix + k, float(v), now, 0) for k, v in metrics.items() if isinstance(v, (int, float))]
    for uri, run_id in known.items():
        _evaluation_client(uri).log_batch(run_id, metrics=rows)
    return True


def prepare_evaluation_logging(run_dir: Path) -> None:
    """Import MLflow and open the run's tracking stores now (about 2 s on a CPU), so that `log_evaluation`
    does not: for a caller with idle time, such as the CLI while an evaluation generates. Errors are left for
    `log_evaluation` to meet."""
    for uri in _read_json(Path(run_dir) / STATE) or {}:
        _evaluation_client(uri)


_CLIENTS: dict[str, object] = {}


def _evaluation_client(uri: str):
    """One MlflowClient per tracking store for the process's evaluations (opening an SQLite store costs ~1 s)."""
    client = _CLIENTS.get(uri)
    if client is None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        while len(_CLIENTS) >= 4:  # a server process meets many projects: keep the latest few
            _CLIENTS.pop(next(iter(_CLIENTS)))
        _CLIENTS[uri] = client
    return client


# ---------------------------------------------------------------- the child process and its sinks

def serve(run_dir: Path, chosen: list[str], stream) -> None:
    """Read JSON lines from the trainer until 'end' (or end of input: the trainer died), log them in batches."""
    run_dir = Path(run_dir)
    try:
        os.nice(10)  # on a busy CPU the training process goes first; tracking catches up
    except (AttributeError, OSError):
        pass
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:  # drains the pipe at once, so the trainer never waits on a full pipe
        for line in stream:
            try:
                inbox.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        inbox.put({"end": True})

    threading.Thread(target=read, daemon=True).start()
    params = run_params(_read_json(run_dir / "config.json"), _read_json(run_dir / "manifest.json"))
    out = []
    for item in chosen:
        try:
            out.append(_make_sink(item, run_dir, params))
        except Exception as exc:
            _warn(f"{item}: cannot start ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''})")
    while True:
        items = [inbox.get()]
        deadline = time.monotonic() + BATCH_S  # gather a batch: one transaction for many points
        while "end" not in items[-1] and (left := deadline - time.monotonic()) > 0:
            try:
                items.append(inbox.get(timeout=left))
            except queue.Empty:
                break
        points = [(m["metrics"], m["step"], m["ts"]) for m in items if "metrics" in m]
        ending = "end" in items[-1]
        for sink in out:
            try:
                if points:
                    sink.log(points)
                if ending:
                    sink.close(_end_event(run_dir / "events.jsonl"))
            except Exception as exc:  # tracking never fails a run
                _warn(f"{type(sink).__name__.strip('_')}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        if ending:
            return


def _make_sink(item: str, run_dir: Path, params: dict):
    if item == "tensorboard":
        return _TensorBoard(run_dir)
    if item == "wandb":
        return _Wandb(run_dir, params)
    uri = store_uri(project_root(run_dir)) if item == "mlflow" else item
    return _Mlflow(uri, run_dir, params, local=item == "mlflow")


class _TensorBoard:
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), flush_secs=10)

    def log(self, points: list) -> None:
        for metrics, step, ts in points:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step, walltime=ts / 1000)

    def close(self, end: dict) -> None:
        step = int(end.get("step") or 0)
        for k, v in final_metrics(end).items():
            self.writer.add_scalar(k, v, step)
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, params: dict):
        import wandb

        self.run = wandb.init(project=EXPERIMENT, name=Path(run_dir).name, id=Path(run_dir).name, resume="allow",
                              config=params, dir=str(run_dir))

    def log(self, points: list) -> None:
        for metrics, step, _ in points:
            self.run.log(metrics, step=step)

    def close(self, end: dict) -> None:
        self.run.summary.update(final_metrics(end))
        self.run.finish(exit_code=0 if end.get("status") in _END_STATUS else 1)


class _Mlflow:
    """One MLflow run per training run (a resumed run continues it); metrics in batches of log_batch."""

    def __init__(self, uri: str, run_dir: Path, params: dict, *, local: bool):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run_dir)
        if local:
            store_dir(project_root(self.run_dir)).mkdir(parents=True, exist_ok=True)
        with _lock(self.run_dir, local):  # two trainers starting at once on a fresh store: one creates it
            self.client = client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(EXPERIMENT)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(
                EXPERIMENT, artifact_location=artifact_uri(project_root(self.run_dir)) if local else None)
        known = _read_json(self.run_dir / STATE)
        if known.get(uri):
            self.run_id = known[uri]
            client.update_run(self.run_id, status="RUNNING")
            return
        run = client.create_run(exp_id, run_name=self.run_dir.name,
                                tags={"workbench.run_id": self.run_dir.name,
                                      "workbench.dataset": params.get("dataset.dataset", ""),
                                      "mlflow.source.name": "workbench"})
        self.run_id = run.info.run_id
        _write_json(self.run_dir / STATE, {**known, uri: self.run_id})
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(self.run_id, params=items[i:i + 100])

    def log(self, points: list) -> None:
        from mlflow.entities import Metric

        rows = [Metric(k, float(v), ts, step) for metrics, step, ts in points for k, v in metrics.items()]
        for i in range(0, len(rows), 1000):
            self.client.log_batch(self.run_id, metrics=rows[i:i + 1000])

    def close(self, end: dict) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(end.get("step") or 0)
        final = [Metric(k, v, now, step) for k, v in final_metrics(end).items()]
        if final:
            self.client.log_batch(self.run_id, metrics=final)
        adapter = self.run_dir / "adapter"
        if adapter.is_dir() and end.get("status") in _END_STATUS:
            self.client.log_artifacts(self.run_id, str(adapter), "adapter")
        self.client.set_terminated(self.run_id, status=_END_STATUS.get(end.get("status"), "FAILED"))


# ---------------------------------------------------------------- small helpers

def _end_event(path: Path) -> dict:
    end: dict = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if '"end"' in line:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("type") == "end":
                    end = event
    return end


class _lock:
    """An exclusive file lock beside the project's store (POSIX; elsewhere, no lock)."""

    def __init__(self, run_dir: Path, local: bool):
        self.path = store_dir(project_root(run_dir)) / ".lock" if local else None
        self.fd = None

    def __enter__(self):
        if self.path is not None:
            try:
                import fcntl

                self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR)
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            except (ImportError, OSError):
                self.fd = None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _write_json(path: Path, value: dict) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _warn(message: str) -> None:
    print(f"warning: tracking: {message}", file=sys.stderr, flush=True)

__all__ = ["Reporter", "sinks", "check_report_to", "store_uri", "artifact_uri", "project_root", "run_params",
           "final_metrics", "LOCAL", "EXPERIMENT"]


def _main(argv: list[str]) -> int:
    """The tracking process: `python -m trainers.tracking RUN_DIR SINKS`, fed JSON lines on stdin."""
    serve(Path(argv[0]), sinks(argv[1]), sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
