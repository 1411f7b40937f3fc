"""Label load: N annotators submitting at once against one store, as `workbench serve` runs them.

    python bench/label_load_bench.py [--sessions 20] [--seconds 60] [--records 20000] [--overlap 2] [--json]

Streamlit runs every browser session's script in its own thread of one server process, all sharing
the app's one `Store` (pages/wb_ui.get_store). Each simulated session here is such a thread doing,
without pause, what the Label page does for one annotator: after a click, `submit` the answer, then
rerun the annotate fragment, which calls `next_item` (claims the next record), `progress`, `record`,
`my_answer` and `my_answers` (the go-back list), in that order (see pages/page_label.py `annotate`).

Reported: answers acknowledged, answers per second, and the latency from the click (submit starts) to
the next record being ready (the fragment's calls done): p50 / p95 / p99 / max. Then the store is
checked against what the sessions were told: every acknowledged answer is stored exactly once
(lost = 0, duplicated = 0), nothing unacknowledged is stored, and no record got more than `overlap`
annotators nor any annotator one record twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from workbench.core.auth import User  # noqa: E402
from workbench.core.store import Store  # noqa: E402
from workbench.data.demo import write_jsonl  # noqa: E402
from workbench.data.importer import import_file  # noqa: E402
from workbench.labels import annotations as A  # noqa: E402
from workbench.labels import questions as Q  # noqa: E402

CHOICES = ["account_access", "billing", "cancellation", "data_privacy", "gift_card", "order_change",
           "product_defect", "refund", "shipping", "warranty"]


def fragment_rerun(store: Store, question, user: User) -> str | None:
    """The Label page's annotate fragment for one user: the next record and what is shown with it."""
    item = A.next_item(store, question, user)
    A.progress(store, question, user)
    if item is not None:
        Q.record(store, question, item)
        A.my_answer(store, question, item, user)
    A.my_answers(store, question, user, limit=200)
    return item


def session(store: Store, question, user: User, deadline: float, seed: int, out: dict, think: float = 0.0) -> None:
    rng = np.random.default_rng(seed)
    acked, latencies, errors = [], [], []
    try:
        item = fragment_rerun(store, question, user)
        while item is not None and time.monotonic() < deadline:
            if think:  # reading the ticket: between half and one and a half times `think` seconds
                time.sleep(think * rng.uniform(0.5, 1.5))
            value = CHOICES[int(rng.integers(len(CHOICES)))]
            start = time.perf_counter()
            stored = A.submit(store, question, item, value, user=user)
            acked.append((item, user.name, stored))  # the page shows "Saved" only after submit returned
            item = fragment_rerun(store, question, user)
            latencies.append(time.perf_counter() - start)
    except Exception as exc:  # a session that dies is a finding, not a crash of the bench
        errors.append(f"{user.name}: {type(exc).__name__}: {exc}")
    out[user.name] = {"acked": acked, "latencies": latencies, "errors": errors}


def make_project(folder: Path, records: int, overlap: int) -> None:
    tickets = folder / "tickets.jsonl"
    write_jsonl(tickets, records, seed=7)
    with Store.open(folder / "project") as store:
        version = import_file(store, tickets, "tickets").version
        Q.add_question(store, version, "category", "single-choice", choices=CHOICES, overlap=overlap)


def run_load(project, *, sessions: int = 20, seconds: float = 60, think: float = 0.0, seed: int = 0) -> dict:
    """Drive `sessions` annotators for `seconds` against the project's question `tickets/category`;
    each reads a record for about `think` seconds before answering (0: flat out)."""
    results: dict = {}
    with Store.open(project) as store:
        question = Q.get_question(store, "tickets", "category")
        before = store.cursor().execute("SELECT coalesce(max(annotation_id), 0) FROM wb_annotations").fetchall()[0][0]
        users = [User(f"annotator{i:02d}", "annotator") for i in range(sessions)]
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=session, args=(store, question, u, deadline, seed + i, results, think))
                   for i, u in enumerate(users)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        every = store.cursor().execute(
            "SELECT item, annotator, value, annotation_id > ? FROM wb_annotations WHERE question_id = ?",
            [before, question.question_id]).fetchall()
    stored = [(i, a, v) for i, a, v, new in every if new]  # this run's answers
    everything = [(i, a, v) for i, a, v, _ in every]  # with earlier runs', for the overlap checks
    acked = [a for r in results.values() for a in r["acked"]]
    latencies = np.array([x for r in results.values() for x in r["latencies"]]) * 1000
    stored_counts, acked_counts = Counter(stored), Counter(acked)
    per_item = Counter(item for item, _ in {(i, a) for i, a, _ in everything})
    per_pair = Counter((i, a) for i, a, _ in everything)
    q = (lambda p: float(np.percentile(latencies, p))) if len(latencies) else (lambda p: None)
    return {
        "sessions": sessions, "seconds": round(elapsed, 1), "think_seconds": think, "answers": len(acked),
        "answers_per_second": round(len(acked) / elapsed, 1),
        "latency_ms": {"p50": q(50), "p95": q(95), "p99": q(99), "max": float(latencies.max()) if len(latencies)
                       else None},
        "per_session_answers": {"min": min(len(r["acked"]) for r in results.values()),
                                "max": max(len(r["acked"]) for r in results.values())},
        "lost": sum(1 for a in acked_counts if stored_counts[a] == 0),
        "duplicated": sum(n - 1 for n in stored_counts.values() if n > 1),
        "unacknowledged_stored": sum(1 for s in stored_counts if s not in acked_counts),
        "records_over_overlap": sum(1 for n in per_item.values() if n > question.overlap),
        "answered_twice_by_one_annotator": sum(1 for n in per_pair.values() if n > 1),
        "session_errors": [e for r in results.values() for e in r["errors"]],
    }


def report(out: dict, records: int, overlap: int) -> str:
    lat = out["latency_ms"]
    pace = f"reading ~{out['think_seconds']:g} s per record" if out["think_seconds"] else "flat out, no reading time"
    lines = [
        f"{out['sessions']} sessions, {pace}, {out['seconds']} s on {records:,} records (overlap {overlap}): "
        f"{out['answers']:,} answers, {out['answers_per_second']} answers/s "
        f"({out['per_session_answers']['min']}-{out['per_session_answers']['max']} per session)",
        f"  submit to next record: p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, "
        f"max {lat['max']:.0f} ms",
        f"  lost {out['lost']}, duplicated {out['duplicated']}, stored but not acknowledged "
        f"{out['unacknowledged_stored']}, records over overlap {out['records_over_overlap']}, answered twice "
        f"by one annotator {out['answered_twice_by_one_annotator']}, session errors {len(out['session_errors'])}"]
    return "\n".join(lines + ["    " + e for e in out["session_errors"][:5]])


def clean(out: dict) -> bool:
    return not (out["lost"] or out["duplicated"] or out["unacknowledged_stored"] or out["records_over_overlap"]
                or out["answered_twice_by_one_annotator"] or out["session_errors"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60, help="length of each phase")
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--think", type=float, nargs="+", default=[2.0, 0.0],
                    help="phases: seconds each annotator reads a record before answering (0: flat out)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    outs = []
    with tempfile.TemporaryDirectory() as tmp:
        make_project(Path(tmp), args.records, args.overlap)
        for think in args.think:  # phases run one after the other on the same question
            outs.append(run_load(Path(tmp) / "project", sessions=args.sessions, seconds=args.seconds, think=think))
            if not args.json:
                print(report(outs[-1], args.records, args.overlap), flush=True)
    if args.json:
        print(json.dumps({"phases": outs}))
    return 0 if all(clean(o) for o in outs) else 1


if __name__ == "__main__":
    sys.exit(main())
