"""`workbench review create|list|items|results|loop|preferences`: blind human review of evaluation runs (workbench.models.review).

Reviewers judge in the app (Review page); the command line is the owner's: set a review up, read
its results, see the recorded left/right order and where the review led."""

from __future__ import annotations

from workbench.core.errors import WorkbenchError


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise WorkbenchError(f"--evals {text!r}: expected evaluation ids separated by commas, for example 3,4 "
                             "(see `workbench evals`)") from None


def _names(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def cmd_create(args) -> int:
    from workbench.cli.common import emit, open_store
    from workbench.models import review

    with open_store(args) as store:
        r = review.create_review(store, _ids(args.evals), kind=args.kind, questions=_names(args.questions),
                                 sample_size=args.sample, overlap=args.overlap, reviewers=_names(args.reviewers),
                                 seed=args.seed, show_reference=not args.hide_reference, name=args.name,
                                 instructions=args.instructions or "")
    payload = {"review_id": r.review_id, "name": r.name, "kind": r.kind, "evals": list(r.evals),
               "questions": [q["name"] for q in r.questions], "sample_size": r.sample_size, "overlap": r.overlap,
               "seed": r.seed, "show_reference": r.show_reference,
               "reviewers": list(r.reviewers) if r.reviewers else None}
    emit(args, payload, f"review {r.review_id} ({r.name}): {r.kind} of evaluations "
                         f"{', '.join(map(str, r.evals))}, {r.sample_size:,} test items, {r.overlap} reviewer(s) "
                         f"each, seed {r.seed}; reviewers judge it on the Review page")
    return 0


def cmd_list(args) -> int:
    from workbench.cli.common import emit, open_store
    from workbench.models import review

    with open_store(args) as store:
        rows = []
        for r in review.list_reviews(store):
            prog = review.progress(store, r)
            rows.append({"review_id": r.review_id, "name": r.name, "kind": r.kind, "evals": list(r.evals),
                         "sample_size": r.sample_size, "overlap": r.overlap, "seed": r.seed,
                         "complete": prog["complete"], "total": prog["total"], "created_at": r.created_at})
    text = "\n".join(f"{r['review_id']:>4}  {r['kind']:<8} evals {','.join(map(str, r['evals'])):<10} "
                     f"{r['complete']:,}/{r['total']:,} items complete  {r['name']}" for r in rows) \
        or "no reviews yet; create one with `workbench review create --evals A,B`"
    emit(args, {"reviews": rows}, text)
    return 0


def cmd_items(args) -> int:
    from workbench.cli.common import emit, open_store
    from workbench.models import review

    with open_store(args) as store:
        r = review.get_review(store, args.review_id)
        df = review.review_items(store, r)
    rows = [{k: (None if v != v else v) for k, v in rec.items()} for rec in df.to_dict("records")]
    for rec in rows:
        rec["row"] = rec.pop("_row")
    emit(args, {"review_id": r.review_id, "seed": r.seed, "items": rows},
          f"review {r.review_id}, seed {r.seed}\n" + "\n".join(
              f"{x['item']:>5}  test item {x['eval_item']:>6}  left eval {x['left_eval']}"
              + (f"  right eval {x['right_eval']}" if x["right_eval"] is not None else "") for x in rows))
    return 0


def _results_text(res: dict) -> str:
    lines = [f"review {res['review_id']} ({res['name']}): {res['kind']}, {res['n_judgements']:,} judgements of "
             f"{res['n_items']:,} items by {res['n_reviewers']} reviewer(s); {res['progress']['complete']:,} of "
             f"{res['progress']['total']:,} items complete"]
    lines += [f"  {r['letter']} = {r['label']}" for r in res["runs"]]
    if res["kind"] == "pairwise":
        lines += [f"  {w['statement']}" for w in res["win_rates"]]
        if res.get("bradley_terry"):
            lines.append("  Bradley-Terry: " + ", ".join(f"{x['system']} {x['strength']:.2f}"
                                                         for x in res["bradley_terry"]["ranking"]))
        if res.get("position_bias"):
            lines.append(f"  position: {res['position_bias']['statement']}")
        a = res["agreement"]
        lines.append(f"  agreement: Krippendorff's alpha (nominal) "
                     f"{'-' if a['krippendorff_alpha'] is None else format(a['krippendorff_alpha'], '.3f')}: "
                     f"{a['reading']}")
    else:
        for x in res["ratings"]:
            mean = "-" if x["mean"] is None else f"{x['mean']:.2f}"
            ci = "" if x["ci_low"] is None else f" (CI {x['ci_low']:.2f}-{x['ci_high']:.2f})"
            lines.append(f"  {x['question']:<24} {x['run']:<32} {mean}{ci}  n={x['n']}")
        for q, a in res["agreement"].items():
            lines.append(f"  agreement on {q!r}: Krippendorff's alpha (ordinal) "
                         f"{'-' if a['krippendorff_alpha'] is None else format(a['krippendorff_alpha'], '.3f')}: "
                         f"{a['reading']}")
    return "\n".join(lines)


def cmd_results(args) -> int:
    from workbench.cli.common import emit, open_store
    from workbench.models import review_results

    with open_store(args) as store:
        res = review_results.results(store, args.review_id, resamples=args.resamples, seed=args.seed,
                             confidence=args.confidence)
    emit(args, res, _results_text(res))
    return 0


def cmd_loop(args) -> int:
    from workbench.cli.common import emit, open_store
    from workbench.models import review_actions

    with open_store(args) as store:
        out = review_actions.loop(store, args.review_id)
        if args.write_version:
            v = review_actions.write_edits_version(store, args.review_id)
            out["written"] = {"version": v.ref, "records": v.row_count}
    text = [f"review {out['review_id']}: {out['flags']} record(s) flagged, {out['edits']} response(s) corrected"]
    text += [f"  judged eval {j['eval_id']} ({j['model']})" + (f", trained on {j['trained_on']}" if j["trained_on"]
                                                                else "") for j in out["judged"]]
    text += [f"  -> version {v['version']} ({v['records']:,} records)" for v in out["versions"]]
    text += [f"  -> training run {t['run_id']} on {t['version']} ({t['status']})" for t in out["retrains"]]
    text += [f"  -> evaluation {e['eval_id']} ({e['model']}, {e['status']})" for e in out["evals"]]
    text += [f"  -> review {r['review_id']} ({r['name']})" for r in out["reviews"]]
    if out.get("written"):
        text.append(f"wrote {out['written']['version']}")
    emit(args, out, "\n".join(text))
    return 0


def cmd_preferences(args) -> int:
    from workbench.cli.common import emit, open_store
    from workbench.models import review_preferences

    with open_store(args) as store:
        out = review_preferences.write_preferences(store, args.review_id, rule=args.rule, out=args.out,
                                                   min_gap=args.min_gap, threshold=args.threshold,
                                                   question=args.question)
    emit(args, out, review_preferences.describe(out))
    return 0


def register(sub, common, reporting) -> None:
    from workbench.models.review import KINDS

    p = sub.add_parser("review", parents=[common], help="blind human review of evaluation runs")
    rsub = p.add_subparsers(dest="review_command", required=True, metavar="ACTION")

    a = rsub.add_parser("create", parents=[common, reporting], help="set up a blind review of evaluation runs",
                        description="Reviewers see a sample of test items with the runs' answers and no run names: "
                                    "pairwise (which of two answers is better, or a tie) or rating (1-5 on each "
                                    "question). The left/right order and the queue order come from --seed and are "
                                    "stored.")
    a.add_argument("--evals", required=True, metavar="A,B", help="evaluation ids, the baseline (A) first")
    a.add_argument("--kind", default="pairwise", choices=KINDS, help="pairwise A/B (default) or rating")
    a.add_argument("--questions", metavar="LIST",
                   help="rating questions, comma-separated (default: follows policy, tone, resolves the issue)")
    a.add_argument("--sample", type=int, metavar="N", help="test items to review (default: all)")
    a.add_argument("--overlap", type=int, default=2, help="reviewers per item (default: 2)")
    a.add_argument("--reviewers", metavar="NAMES", help="who may rate, comma-separated (default: every reviewer)")
    a.add_argument("--seed", type=int, help="seed of the sample and the left/right order (default: random, stored)")
    a.add_argument("--hide-reference", action="store_true", help="do not show reviewers the reference answer")
    a.add_argument("--name", help="name reviewers see (do not name the models in it)")
    a.add_argument("--instructions", help="what reviewers should look for (markdown)")
    a.set_defaults(func=cmd_create)

    a = rsub.add_parser("list", parents=[common, reporting], help="reviews and how far they are")
    a.set_defaults(func=cmd_list)

    a = rsub.add_parser("items", parents=[common, reporting],
                        help="the recorded sample, left/right order and queue order of a review")
    a.add_argument("review_id", type=int)
    a.set_defaults(func=cmd_items)

    a = rsub.add_parser("results", parents=[common, reporting],
                        help="win rates, ratings, Bradley-Terry, agreement and position bias of a review")
    a.add_argument("review_id", type=int)
    a.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the alpha interval")
    a.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    a.add_argument("--confidence", type=float, default=0.95, help="interval level (default: 0.95)")
    a.set_defaults(func=cmd_results)

    a = rsub.add_parser("loop", parents=[common, reporting],
                        help="flags, corrected responses, versions, retrains and reviews that came from a review")
    a.add_argument("review_id", type=int)
    a.add_argument("--write-version", action="store_true",
                   help="write the review's corrected responses into a new dataset version")
    a.set_defaults(func=cmd_loop)

    a = rsub.add_parser("preferences", parents=[common, reporting],
                        help="turn a review's judgements into a preference dataset (DPO pairs or KTO examples)",
                        description="majority: from a pairwise review, one pair per item where most judgements "
                                    "prefer the same answer (ties and split votes left out, counted). gap: from a "
                                    "rating review, pairs of answers whose mean ratings differ by --min-gap or more. "
                                    "kto: from a rating review, answers rated above --threshold (desirable) or "
                                    "below it (undesirable). Written as a new version of --out.")
    a.add_argument("review_id", type=int)
    a.add_argument("--rule", required=True, choices=("majority", "gap", "kto"), help="how judgements become data")
    a.add_argument("--min-gap", type=float, default=2.0, help="gap: least difference of mean ratings (default: 2)")
    a.add_argument("--threshold", type=float, default=3.0,
                   help="kto: mean ratings above it are desirable, below it undesirable (default: 3)")
    a.add_argument("--question", help="gap/kto: the rating question to read (default: the review's first)")
    a.add_argument("--out", required=True, metavar="NAME", help="dataset to write the pairs or examples to")
    a.set_defaults(func=cmd_preferences)
