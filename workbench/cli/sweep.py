"""`workbench sweep` (Optuna over training settings, each trial a run) and `workbench tracking --ui`."""

from __future__ import annotations

import shlex
import subprocess
import sys

from trainers.config import ConfigError, parse_assignment
from workbench.cli.common import emit, open_store
from workbench.core.errors import WorkbenchError


def _fixed(args) -> dict:
    out = {}
    for item in args.set or []:
        try:
            key, value = parse_assignment(item)
        except ConfigError as exc:
            raise WorkbenchError(str(exc)) from None
        out[key] = value
    return out


def cmd_sweep(args) -> int:
    from workbench.core.project import project_dir
    from workbench.models import sweeps

    root = project_dir(args.project)
    if args.cancel:
        if not args.name:
            raise WorkbenchError("name the sweep to cancel: --cancel --name NAME")
        sweeps.cancel_sweep(root, args.name)
        emit(args, {"sweep": args.name, "status": "cancelling"}, f"asked sweep {args.name} to stop")
        return 0
    settings = None
    if not args.resume:
        if not args.dataset:
            raise WorkbenchError("name the dataset to sweep over: --dataset NAME[@VERSION] (or --resume --name NAME)")
        with open_store(args) as store:
            from workbench.core.versions import get_version

            get_version(store, args.dataset)  # a wrong name fails now, not in the first trial
            sweeps.check_metric(store, args.dataset, args.metric)
            root = store.project.root
        settings = sweeps.new_settings(dataset=args.dataset, base_model=args.base_model, trials=args.trials,
                                       space=sweeps.load_space(args.space), fixed=_fixed(args), metric=args.metric,
                                       pruner=args.pruner, seed=args.seed, parallel=args.parallel,
                                       eval_settings={"max_new_tokens": args.eval_max_new_tokens})
    elif args.set or args.space or args.dataset:
        raise WorkbenchError("--resume continues a sweep with its stored settings; leave out --dataset, --space "
                             "and --set")

    def progress(number: int, status: dict) -> None:
        if not args.json and sys.stderr.isatty():
            loss = status.get("eval_loss")
            print(f"\rtrial {number}: {status['status']} step {status['step']}/{status.get('total_steps') or '?'}"
                  f" val {loss if loss is not None else 'n/a'}   ", end="", file=sys.stderr, flush=True)

    out = sweeps.run_sweep(lambda: open_store(args), root, name=args.name, settings=settings, progress=progress)
    emit(args, out, _text(out))
    return 0


def _text(out: dict) -> str:
    lines = [f"sweep {out['sweep']} ({out['metric']}, {out['direction']}): {len(out['trials'])} trials",
             f"{'trial':>5} {'state':<9} {'value':>9}  settings"]
    for t in out["trials"]:
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        lines.append(f"{t['number']:>5} {t['state']:<9} {value:>9}  {params}")
    best = out["best"]
    lines.append(f"best: trial {best['number']} ({best['value']:.4f}), run {best['run_id']}" if best else
                 "no trial completed")
    return "\n".join(lines)


def cmd_tracking(args) -> int:
    """The MLflow UI command on this project's store; started when --ui and mlflow's server is installed."""
    from trainers import tracking
    from workbench.core.project import project_dir

    root = project_dir(args.project)
    uri, artifacts = tracking.store_uri(root), tracking.artifact_uri(root)
    cmd = ["mlflow", "ui", "--backend-store-uri", uri, "--default-artifact-root", artifacts,
           "--host", "127.0.0.1", "--port", str(args.port)]
    tb = ["tensorboard", "--logdir", str(root / "runs"), "--host", "127.0.0.1"]
    payload = {"store": uri, "artifacts": artifacts, "mlflow_ui": shlex.join(cmd), "tensorboard": shlex.join(tb),
               "ui_available": _ui_available()}
    if not args.ui or args.json:
        emit(args, payload, f"MLflow store: {uri}\nMLflow UI:   {payload['mlflow_ui']}\n"
                            f"TensorBoard: {payload['tensorboard']}")
        return 0
    if not payload["ui_available"]:
        raise WorkbenchError("the MLflow UI needs the full mlflow package (mlflow-skinny has no UI): "
                             f"pip install mlflow, then run: {payload['mlflow_ui']}   (or use TensorBoard: "
                             f"{payload['tensorboard']})")
    print(f"starting: {payload['mlflow_ui']}  (Ctrl-C stops it)", file=sys.stderr)
    return subprocess.call([sys.executable, "-m", "mlflow", *cmd[1:]])


def _ui_available() -> bool:
    """mlflow-skinny installs the `mlflow` command but not the UI's server and pages."""
    import importlib.util

    return importlib.util.find_spec("flask") is not None and _has_ui_files()


def _has_ui_files() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return False
    from pathlib import Path

    return (Path(spec.submodule_search_locations[0]) / "server" / "js" / "build" / "index.html").exists()


def register(sub, common, reporting) -> None:
    p = sub.add_parser("sweep", parents=[common, reporting], help="search training settings with Optuna; each "
                       "trial is a run", description="Search LoRA settings with Optuna (TPE, seeded). Each trial is "
                       "an ordinary training run; bad trials are pruned from their validation loss; the study is "
                       "stored in <project>/sweeps/NAME.db and can be resumed.")
    p.add_argument("--dataset", metavar="NAME[@VERSION]", help="the dataset version every trial trains on")
    p.add_argument("--base-model", metavar="tiny|PATH|HF_ID", help="the base model of every trial")
    p.add_argument("--trials", type=int, default=20, metavar="N", help="how many trials to finish (default 20)")
    p.add_argument("--space", metavar="FILE", help="a YAML search space: SETTING: {low: A, high: B, log: true} or "
                   "SETTING: [choices]; default: learning rate, rank, alpha multiple, dropout, epochs, warmup")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="fix one setting for every trial, e.g. "
                   "--set max_steps=200 (repeatable; a fixed setting is not searched)")
    p.add_argument("--metric", default="val_loss",
                   help="what to optimise: val_loss (default) or train_loss; or a generation metric (rougeL, rouge1, "
                        "rouge2, bleu, chrf, exact_match), scored on the validation split's answers after each trial")
    p.add_argument("--eval-max-new-tokens", type=int, default=0, metavar="N",
                   help="with a generation metric: the longest answer (default 0: what the references need)")
    p.add_argument("--pruner", default="median", help="stop bad trials early: median (default), halving or none")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (same seed, same settings tried)")
    p.add_argument("--parallel", type=int, default=1, metavar="K",
                   help="trials that train at once (default 1); on a machine with GPUs each trial gets its own GPU, "
                        "K up to the GPU count")
    p.add_argument("--name", metavar="NAME", help="the sweep's name (default: dataset and time); --resume takes it")
    p.add_argument("--resume", action="store_true", help="continue a stopped or crashed sweep (--name, or the "
                   "latest)")
    p.add_argument("--cancel", action="store_true", help="ask the running sweep --name to stop")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("tracking", parents=[common, reporting], help="where runs are tracked (MLflow, TensorBoard)")
    p.add_argument("--ui", action="store_true", help="start the MLflow UI on the project's store at 127.0.0.1")
    p.add_argument("--port", type=int, default=5000, help="the MLflow UI's port (default 5000)")
    p.set_defaults(func=cmd_tracking)
