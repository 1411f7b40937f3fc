"""Evaluation commands: `workbench score` (two text files)."""

from __future__ import annotations

import sys

from workbench.cli.common import ProgressBar, emit
from workbench.core.errors import WorkbenchError


def cmd_score(args) -> int:
    from workbench.models.scoring import format_scores, score_files

    result = score_files(args.predictions, args.references, metrics=args.metrics, progress=ProgressBar(not args.json))
    emit(args, result, format_scores(result))
    return 0


# ---------------------------------------------------------------- eval, evals, compare (workbench.models: evaluation runs)

def _eval_text(run) -> str:
    m = run.metrics or {}
    lines = [f"evaluation {run.eval_id}: {run.model_label} on {run.ref} split {run.split}, {run.items:,} items "
             f"({run.status}); outputs in {run.folder}"]
    if (run.settings or {}).get("max_new_tokens_rule"):
        lines.append(f"  answers up to {run.settings['max_new_tokens_rule']}")
    if run.task == "classification":
        lines += [f"  {k:<16}{m[k]:8.4f}" for k in ("accuracy", "macro_f1", "micro_f1") if k in m]
        if m.get("unparsed"):
            lines.append(f"  {m['unparsed']:,} answers named no known label")
    elif m:
        lines.append(f"  {'BLEU':<16}{m['bleu']:8.2f}   {m['signature']}")
        lines += [f"  {k:<16}{m[k]:8.4f}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")]
        lines.append(f"  {'chrF':<16}{m['chrf']:8.2f}   {m['chrf_signature']}")
        lines += [f"  {'exact match':<16}{m['exact_match']:8.4f}", f"  {'length ratio':<16}{m['length_ratio']:8.3f}"]
    return "\n".join(lines)


def cmd_eval(args) -> int:
    from workbench.cli.main import open_store
    from workbench.models import eval_scores, eval_setup, evaluation, generator

    bar = ProgressBar(not args.json)
    with open_store(args) as store:
        if args.resume is not None:
            run = generator.restart(store, args.resume)
        else:
            if not args.dataset:
                raise WorkbenchError("say which dataset to evaluate on: --dataset NAME[@VERSION] (or --resume ID)")
            model = eval_setup.resolve_model(store, run_id=args.run, base_model=args.base_model, adapter=args.adapter)
            settings = eval_setup.GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                                   top_p=args.top_p, batch_size=args.batch_size, seed=args.seed)
            run = evaluation.create_eval(store, args.dataset, model=model, split=args.split, settings=settings)
            run = generator.launch(store, run.eval_id)
        ahead = eval_scores.answers_ahead(store, run) if run.status != "finished" else None
    if run.status != "finished":
        # The database is closed while the generator runs, so the app can open the project meanwhile.
        try:
            generator.follow_job(run, progress=bar, ahead=ahead)  # scores each batch of answers as it lands
        except KeyboardInterrupt:
            print(f"\nstopped evaluation {run.eval_id}; what it generated is kept: "
                  f"`workbench eval --resume {run.eval_id}`", file=sys.stderr)
            with open_store(args) as store:
                generator.stop(store, run.eval_id)
            return 130
        try:
            store = open_store(args, wait_s=30.0)  # a page's or a script's moment
        except WorkbenchError as exc:
            raise WorkbenchError(f"evaluation {run.eval_id} has generated its answers, but the project is now "
                                 f"open elsewhere ({exc}); the Evaluate page scores it when you open the run there, "
                                 f"or run `workbench eval --resume {run.eval_id}` once it is closed") from None
        with store:
            run = generator.wait(store, run.eval_id, progress=bar, ahead=ahead)  # the last answers in, then the scores
        if run.status != "finished":
            detail = f": {run.error.splitlines()[-1]}" if run.error else ""
            raise WorkbenchError(f"evaluation {run.eval_id} {run.status} after {run.generated:,} of {run.items:,} "
                                 f"answers{detail}; see {run.folder}/generate.log, then "
                                 f"`workbench eval --resume {run.eval_id}`")
    emit(args, run.summary(), _eval_text(run))
    return 0


def cmd_evals(args) -> int:
    from workbench.cli.main import open_store
    from workbench.models import evaluation, slices

    with open_store(args) as store:
        if args.eval_id is not None:
            run = evaluation.get_eval(store, args.eval_id)
            payload = run.summary()
            text = _eval_text(run)
            if args.by:
                payload["slices"] = slices.slices(store, run.eval_id, args.by)
                metric = slices.primary_metric(run.task)
                text += f"\nby {args.by}:\n" + "\n".join(
                    f"  {str(r['value']):<24}{r['n']:>7,}  {metric} {r[metric]:.4f}" for r in payload["slices"])
            emit(args, payload, text)
            return 0
        runs = evaluation.list_evals(store)
        if args.dataset:
            from workbench.core.versions import get_version

            version = get_version(store, args.dataset)
            runs = [r for r in runs if r.version_id == version.version_id]
        rows = [{k: v for k, v in r.summary().items()
                 if k in ("eval_id", "run_id", "dataset", "version", "split", "model", "status", "items", "generated",
                          *slices.TEXT_METRICS, *slices.CLASS_METRICS)} for r in runs]
    text = "\n".join(f"{r['eval_id']:>5}  {r['status']:<9} {r['dataset']}@{r['version']} {r['split']:<6} "
                     f"{r['model'][:40]:<40} " + (f"BLEU {r['bleu']:6.2f}" if r.get("bleu") is not None else
                                                  f"accuracy {r['accuracy']:.3f}" if r.get("accuracy") is not None
                                                  else f"{r['generated']:,}/{r['items']:,} answers")
                     for r in rows) or "no evaluations yet; run one with `workbench eval`"
    emit(args, {"evals": rows}, text)
    return 0


def cmd_compare(args) -> int:
    from workbench.cli.main import open_store
    from workbench.models import compare

    with open_store(args) as store:
        rows = compare.compare(store, args.a, args.b, n_resamples=args.resamples, seed=args.seed)
    emit(args, {"a": args.a, "b": args.b, "n_resamples": args.resamples, "seed": args.seed, "comparisons": rows},
          "\n".join(r["statement"] for r in rows))
    return 0


def register(sub, common, reporting) -> None:
    p = sub.add_parser("score", parents=[common, reporting],
                       help="BLEU, ROUGE, chrF of a predictions file against a references file",
                       description="Score two aligned files, one item per line (a .jsonl file: one JSON string "
                                   "per line, so items may hold newlines). BLEU and chrF as sacreBLEU computes "
                                   "them (0-100), ROUGE F-measures as rouge-score with stemming (0-1, mean "
                                   "over items). No project is needed.")
    p.add_argument("--predictions", required=True, metavar="FILE", help="the system's outputs, one per line")
    p.add_argument("--references", required=True, metavar="FILE", help="the expected outputs, one per line")
    p.add_argument("--metrics", default=None, metavar="LIST",
                   help="comma-separated, from bleu,rouge,chrf,exact_match,length_ratio (default: all)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("eval", parents=[common, reporting], help="generate answers on a test split and score them",
                       description="Generate an answer for every record of a dataset version's split with a model "
                                   "(a finished training run, or a base model with an optional adapter), then "
                                   "score them: BLEU, ROUGE, chrF, exact match (accuracy and F1 for classification "
                                   "data). Answers are kept as they come; Ctrl-C stops and --resume continues.")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--run", metavar="RUN_ID", help="a finished training run (its base model and adapter)")
    model.add_argument("--base-model", metavar="M", help="'tiny', a local model folder or a cached Hugging Face id")
    p.add_argument("--adapter", metavar="DIR", help="an adapter folder to apply on --base-model")
    p.add_argument("--resume", type=int, metavar="EVAL_ID", help="continue a stopped or crashed evaluation")
    p.add_argument("--dataset", metavar="NAME[@VERSION]", help="the dataset version whose records are answered")
    p.add_argument("--split", default="test", help="value of the split column to answer (default: test), or 'all'")
    p.add_argument("--max-new-tokens", type=int, default=0,
                   help="longest answer in tokens (default 0: the references' 99th percentile in tokens, plus 8, "
                        "capped at 1024; the choice is printed and saved with the run)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 for greedy decoding (default); above 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold when sampling (default: 1)")
    p.add_argument("--batch-size", type=int, default=0, help="prompts generated together (default 0: sized from the device)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling (default: 0)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("evals", parents=[common, reporting], help="list evaluations, or show one (with slices)")
    p.add_argument("eval_id", nargs="?", type=int, metavar="EVAL_ID", help="show this evaluation")
    p.add_argument("--dataset", metavar="NAME[@VERSION]", help="only evaluations of this dataset version")
    p.add_argument("--by", metavar="COLUMN", help="with EVAL_ID: every metric per value of this column")
    p.set_defaults(func=cmd_evals)

    p = sub.add_parser("compare", parents=[common, reporting], help="paired bootstrap comparison of two evaluations",
                       description="Compare evaluation B with evaluation A on the same test items: the difference "
                                   "of every metric with a paired bootstrap confidence interval and whether it is "
                                   "significant.")
    p.add_argument("a", type=int, metavar="EVAL_A", help="the baseline evaluation")
    p.add_argument("b", type=int, metavar="EVAL_B", help="the evaluation compared with it")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: 0)")
    p.set_defaults(func=cmd_compare)
