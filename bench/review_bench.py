"""Blind review at scale: create a review over a large test split, judge it through the queue, read results.

    python bench/review_bench.py [--test-items 20000] [--sample 1000] [--overlap 3] [--queue-claims 200]

Builds a project with a synthetic prompt-completion version whose every record is a test item and two
evaluation runs whose answers are written as the generator writes them (no model), then times:
create_review (sample + sides + stored plan), claiming the next item from the queue (next_item),
showing it (blind_item), submitting a judgement, and results() with 1000 bootstrap resamples.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from workbench.core.auth import User
from workbench.core.store import Store
from workbench.core.versions import write_version
from workbench.models import eval_setup, evaluation, review_results
from workbench.models import review as R


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--test-items", type=int, default=20_000)
    ap.add_argument("--sample", type=int, default=1_000)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--queue-claims", type=int, default=200, help="items judged through the queue (timed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "p")
        n = args.test_items
        table = pa.table({"prompt": [f"ticket {i}: my order {i % 977} has not arrived" for i in range(n)],
                          "completion": [f"Sorry about order {i % 977}; here is what we do." for i in range(n)],
                          "system": pa.nulls(n, pa.string()), "messages": pa.nulls(n, pa.string()),
                          "category": [("billing", "refund", "shipping")[i % 3] for i in range(n)],
                          "split": ["test"] * n})
        write_version(store, "big", [table], kind="import", fmt="prompt-completion", recipe={})
        evals = []
        for label in ("a", "b"):
            run = evaluation.create_eval(store, "big", model=eval_setup.ModelSpec("m", label=label))
            with open(Path(run.folder) / evaluation.OUTPUTS_FILE, "w", encoding="utf-8") as f:
                for i in range(run.items):
                    f.write(json.dumps({"item": i, "output": f"{label} answer {i}"}) + "\n")
            evaluation.ingest(store, run.eval_id)
            evals.append(run.eval_id)
        t = time.perf_counter()
        rv = R.create_review(store, evals, sample_size=args.sample, overlap=args.overlap, seed=1)
        create_s = time.perf_counter() - t
        who = User("timed", "reviewer")
        claim, show, submit = [], [], []
        for _ in range(args.queue_claims):
            t0 = time.perf_counter()
            item = R.next_item(store, rv, who)
            t1 = time.perf_counter()
            R.blind_item(store, rv, item, who)
            t2 = time.perf_counter()
            R.submit(store, rv, item, choice="left", user=who)
            claim.append(t1 - t0), show.append(t2 - t1), submit.append(time.perf_counter() - t2)
        plan = R.review_items(store, rv)
        for k in range(args.overlap):  # the rest straight through submit
            u = User(f"r{k}", "reviewer")
            for item in plan["item"]:
                R.submit(store, rv, item, choice=("left", "right", "tie")[hash((item, k)) % 3], user=u)
        t = time.perf_counter()
        res = review_results.results(store, rv, resamples=1000)
        results_s = time.perf_counter() - t
        store.close()

    def ms(xs):
        return f"median {statistics.median(xs) * 1000:.1f} ms, p95 {sorted(xs)[int(0.95 * len(xs))] * 1000:.1f} ms"

    print(f"test items {n:,}, sample {args.sample:,}, overlap {args.overlap}")
    print(f"create_review: {create_s:.2f} s")
    print(f"next_item (queue claim): {ms(claim)}")
    print(f"blind_item: {ms(show)}")
    print(f"submit: {ms(submit)}")
    print(f"results ({res['n_judgements']:,} judgements, 1000 bootstrap resamples of alpha): {results_s:.2f} s")


if __name__ == "__main__":
    main()
