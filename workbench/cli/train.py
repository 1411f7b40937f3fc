"""`workbench train` and `workbench runs`: start, follow, resume and cancel LoRA training runs."""

from __future__ import annotations

import sys

from trainers.config import METHODS, ConfigError, field_help, parse_assignment
from workbench.cli.common import ProgressBar, emit, open_store
from workbench.core.errors import WorkbenchError


def _config(store, args):
    from workbench.models import runs

    overrides = {}
    for item in args.set or []:
        try:
            key, value = parse_assignment(item)
        except ConfigError as exc:
            raise WorkbenchError(str(exc)) from None
        overrides[key] = value
    overrides["base_model"] = args.base_model
    overrides["method"] = args.method
    overrides["max_steps"] = args.max_steps
    overrides["fsdp"] = "on" if args.fsdp else None
    if args.config:
        return runs.config_from_file(store, args.config, **overrides)
    return runs.default_config(store, **overrides)


def cmd_train(args) -> int:
    from workbench.models import runs

    with open_store(args) as store:
        if args.resume:
            run_id = args.resume
            runs.start_run(store, run_id, nproc_per_node=args.nproc_per_node)
        else:
            if not args.dataset:
                raise WorkbenchError("name the dataset to train on: --dataset NAME[@VERSION] (or --resume RUN_ID)")
            cfg = _config(store, args)
            if args.preflight:
                out = runs.preflight(store, args.dataset, cfg)
                emit(args, out, _preflight_text(out))
                return 0
            run_id = runs.launch(store, args.dataset, cfg, nproc_per_node=args.nproc_per_node)
        runs_dir = store.project.runs_dir
    if args.detach:
        emit(args, {"run_id": run_id, "status": "running", "run_dir": str(runs_dir / run_id)},
              f"run {run_id} started; follow it with `workbench runs` or on the Train page")
        return 0
    # The database is closed while the run trains, so the app can open the project meanwhile.
    bar = ProgressBar(not args.json)
    try:
        status = runs.wait_run(runs_dir, run_id, progress=bar)
    except KeyboardInterrupt:
        (runs_dir / run_id / "cancel").write_text("cancelled from the command line", encoding="utf-8")
        print(f"\ncancelling {run_id}: it saves a checkpoint and its adapter; resume with "
              f"`workbench train --resume {run_id}`", file=sys.stderr)
        status = runs.wait_run(runs_dir, run_id)
    bar(1.0, status["status"])
    with open_store(args) as store:
        runs.sync_runs(store)
    payload = {"run_id": run_id, "status": status["status"], "train_loss": status["train_loss"],
               "eval_loss": status["eval_loss"], "steps": status["step"], "adapter": status["adapter"],
               "run_dir": str(runs_dir / run_id), "message": status["message"]}
    if status["status"] in ("failed", "interrupted"):
        if args.json:
            print(__import__("json").dumps(payload))
        raise WorkbenchError(f"run {run_id} {status['status']}: {status['message']} (log: {runs_dir / run_id}/"
                             "trainer.log)")
    text = (f"run {run_id} {status['status']} after {status['step']} steps: train loss {_num(status['train_loss'])}, "
            f"validation loss {_num(status['eval_loss'])}\nadapter: {status['adapter']}")
    emit(args, payload, text)
    return 0


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _preflight_text(out: dict) -> str:
    lines = [f"split: {out['split']}: {out['train_records']:,} train, {out['val_records']:,} validation records",
             f"tokens per example: mean {out['tokens_mean']}, median {out['tokens_median']}, p95 {out['tokens_p95']}, "
             f"max {out['tokens_max']}",
             f"truncated at max_seq_len {out['max_seq_len']}: {out['truncated']:,} examples"
             + (f" ({out['dropped']:,} dropped: no trained token left)" if out["dropped"] else ""),
             f"supervised tokens per epoch: {out['supervised_tokens_per_epoch']:,} "
             f"(of {out['tokens_per_epoch']:,})",
             f"steps per epoch: {out['steps_per_epoch']:,}; planned steps: {out['planned_steps']:,}",
             f"measured: {out['seconds_per_step']:.2f} s per step on {out['device']}: about "
             f"{out['seconds_per_epoch'] / 60:.1f} min per epoch, {out['seconds_planned'] / 60:.1f} min planned",
             *out["notes"], "", "example (trained text between >>> and <<<):",
             "".join(f">>>{s['text']}<<<" if s["trained"] else s["text"] for s in out["example"])]
    return "\n".join(lines)


def cmd_runs(args) -> int:
    from workbench.models import runs

    with open_store(args) as store:
        if args.cancel:
            runs.cancel_run(store, args.cancel)
            emit(args, {"run_id": args.cancel, "status": "cancelling"},
                  f"asked {args.cancel} to stop; it saves a checkpoint and its adapter first")
            return 0
        rows = runs.list_runs(store)
    lines = [f"{'run':<44} {'status':<14} {'step':>6} {'train':>8} {'valid':>8}"]
    lines += [f"{r['run_id']:<44} {r['status']:<14} {r['step'] or 0:>6} {_num(r['train_loss']):>8} "
              f"{_num(r['eval_loss']):>8}" for r in rows]
    if not rows:
        lines = ["no runs yet; start one with `workbench train --dataset NAME`"]
    emit(args, {"runs": rows}, "\n".join(lines))
    return 0


def register(sub, common, reporting) -> None:
    helps = field_help()
    p = sub.add_parser("train", parents=[common, reporting], help="train a LoRA adapter on a dataset version",
                       description="Train a LoRA adapter on a dataset version. Settings come from --config (YAML, "
                                   "JSON or TOML; keys: " + ", ".join(helps) + ") and --set KEY=VALUE.")
    p.add_argument("--dataset", metavar="NAME[@VERSION]", help="the dataset version to train on (its train and "
                   "validation splits, or a seeded holdout)")
    p.add_argument("--base-model", metavar="tiny|PATH|HF_ID", help=helps["base_model"])
    p.add_argument("--config", metavar="FILE", help="a YAML, JSON or TOML file of training settings")
    p.add_argument("--max-steps", type=int, metavar="N", help=helps["max_steps"])
    p.add_argument("--method", choices=list(METHODS), help=helps["method"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="one setting, e.g. --set lora_rank=8 "
                   "(repeatable; overrides --config)")
    p.add_argument("--preflight", action="store_true", help="only show what the run would do (template, token counts,"
                   " truncation, time per epoch) and exit")
    p.add_argument("--detach", action="store_true", help="start the run and return; it keeps training in the "
                   "background")
    p.add_argument("--resume", metavar="RUN_ID", help="continue a cancelled or interrupted run from its last "
                   "checkpoint")
    p.add_argument("--nproc-per-node", type=int, default=None, metavar="N", help="GPUs to train on under torchrun "
                   "(DDP, or FSDP2 with --fsdp); default 1, and with --resume as many as the run had")
    p.add_argument("--fsdp", action="store_true", help="with --nproc-per-node: shard the model across the GPUs "
                   "(FSDP2, for a model too big for one GPU) instead of a copy on each (sets fsdp=on; default auto)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", parents=[common, reporting], help="list training runs, or cancel one")
    p.add_argument("--cancel", metavar="RUN_ID", help="ask a running run to stop after saving a checkpoint")
    p.set_defaults(func=cmd_runs)
