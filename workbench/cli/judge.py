"""`workbench judge create|show|list`: a model answers a review's questions (or judges a whole comparison
of evaluation runs), and its agreement with the people is reported (workbench.models.judge,
workbench.models.judge_results)."""

from __future__ import annotations

from pathlib import Path

from workbench.cli.common import ProgressBar, emit, open_store
from workbench.core.errors import WorkbenchError


def _ids(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise WorkbenchError(f"--evals {text!r}: expected evaluation ids separated by commas, for example 3,4") from None


def cmd_create(args) -> int:
    from workbench.models import judge as J
    from workbench.models import judge_results

    template = None
    if args.template:
        path = Path(args.template)
        if not path.is_file():
            raise WorkbenchError(f"no template file {path}; give a text file with {{answer_a}} and {{answer_b}} "
                                 "(pairwise) or {answer} (rating)")
        template = path.read_text(encoding="utf-8")
    questions = [q.strip() for q in args.questions.split(",") if q.strip()] if args.questions else None
    with open_store(args) as store:
        run = J.create_judge(store, review_id=args.review, evals=_ids(args.evals), kind=args.kind,
                             questions=questions, judge=args.judge, endpoint=args.endpoint, model=args.model,
                             api_key_env=args.api_key_env, template=template, max_new_tokens=args.max_new_tokens,
                             sample_size=args.sample, progress=ProgressBar(not args.json))
        res = judge_results.results(store, run, resamples=args.resamples)
    emit(args, res, _text(res))
    return 0


def cmd_show(args) -> int:
    from workbench.models import judge_results

    with open_store(args) as store:
        res = judge_results.results(store, args.judge_id, resamples=args.resamples)
    emit(args, res, _text(res))
    return 0


def cmd_list(args) -> int:
    from workbench.models import judge as J

    with open_store(args) as store:
        runs = J.list_judges(store, args.review)
    rows = [{"judge_id": r.judge_id, "review_id": r.review_id, "evals": list(r.evals), "kind": r.kind,
             "judge": r.label, "status": r.status, "n_units": r.n_units, "created_at": r.created_at} for r in runs]
    lines = [f"{'judge':>5}  {'review':>6}  {'kind':<8} {'items':>6}  {'status':<8} model"]
    lines += [f"{r['judge_id']:>5}  {r['review_id'] or '-':>6}  {r['kind']:<8} {r['n_units']:>6}  {r['status']:<8} "
              f"{r['judge']}" for r in rows]
    emit(args, {"judges": rows}, "\n".join(lines) if rows else "no judge runs yet; `workbench judge create`")
    return 0


def _fmt(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _text(res: dict) -> str:
    lines = [f"judge run {res['judge_id']} ({res['judge']['label']}, {res['kind']}): {res['n_items']} items, "
             f"{res['unparseable']} unparseable" + (f"; compared with review {res['compared_with_review']}"
                                                     if res["compared_with_review"] else "; no review to compare with")]
    if res["kind"] == "pairwise":
        lines.append(f"position bias (first answer wins): {_fmt(res.get('position_bias'), '.0%')}; "
                     f"position-inconsistent: {res['inconsistent']} of {res['judged_both_orders']} items")
        if res.get("length_bias"):
            lines.append(f"length: {res['length_bias']['statement']}")
    for q, a in res["agreement"].items():
        k, al = a.get("cohen_kappa") or {}, a.get("krippendorff_alpha") or {}
        lines.append(f"{q}: kappa {_fmt(k.get('value'))} ({_fmt(k.get('ci_low'))}-{_fmt(k.get('ci_high'))}), "
                     f"alpha {_fmt(al.get('value'))} with the people's majority on {a.get('n_majority', 0)} items"
                     + (f"; Spearman {_fmt(a['spearman']['rho'])}" if a.get("spearman") else ""))
        lines.append(f"  {a['reading']}")
    for w in res.get("win_rates", []):
        lines.append(f"judge: {w['judge']['statement']}")
        if w["people"]:
            lines.append(f"people: {w['people']['statement']}")
        if w["flagged"]:
            lines.append(f"  flagged: {w['flag']}")
    return "\n".join(lines)


def register(sub, common, reporting) -> None:
    p = sub.add_parser("judge", parents=[common], help="a model as judge, held to the people's review")
    verbs = p.add_subparsers(dest="judge_command", metavar="VERB", required=True)
    c = verbs.add_parser("create", parents=[common, reporting], help="judge a review's items (or evaluation runs)",
                         description="The judge answers the review's own questions for every item (pairwise: in "
                                     "both orders), and its agreement with the people is reported.")
    c.add_argument("--review", type=int, metavar="REVIEW_ID", help="the review whose items and questions to judge")
    c.add_argument("--evals", metavar="A,B", help="judge every test item these evaluation runs answered instead")
    c.add_argument("--kind", choices=("pairwise", "rating"), default="pairwise", help="with --evals (default pairwise)")
    c.add_argument("--questions", metavar="Q1,Q2", help="with --evals --kind rating: the questions to rate")
    c.add_argument("--sample", type=int, metavar="N", help="with --evals: judge only the first N test items")
    c.add_argument("--judge", metavar="MODEL", help="'tiny', a finished run id, or a local model or adapter folder")
    c.add_argument("--endpoint", metavar="URL", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    c.add_argument("--model", metavar="NAME", help="the model name to ask the endpoint for")
    c.add_argument("--api-key-env", metavar="NAME", default="OPENAI_API_KEY",
                   help="environment variable holding the endpoint's API key (read, never stored)")
    c.add_argument("--template", metavar="FILE", help="a prompt template file (default: the built-in one)")
    c.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="longest judge answer (default 128)")
    c.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the intervals")
    c.set_defaults(func=cmd_create)
    s = verbs.add_parser("show", parents=[common, reporting], help="a judge run's verdicts, biases and agreement")
    s.add_argument("judge_id", type=int, metavar="JUDGE_ID")
    s.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the intervals")
    s.set_defaults(func=cmd_show)
    a = verbs.add_parser("list", parents=[common, reporting], help="judge runs, newest first")
    a.add_argument("--review", type=int, metavar="REVIEW_ID", help="only the judge runs of this review")
    a.set_defaults(func=cmd_list)
